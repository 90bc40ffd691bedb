/**
 * The watchdog of a process's children (see owned.ts): a small detached
 * process that reads `+<pid>`, `+<pid> last` and `-<pid>` lines on its
 * stdin, a pipe from its owner. When the pipe ends — the owner exited,
 * however it died, SIGKILL included — it stops every pid still on its list:
 * SIGTERM, and SIGKILL for those still running {@linkcode GRACE_MS} later;
 * first the others, then those marked `last` (ZooKeeper, which the nodes
 * need to stop cleanly). Then it exits.
 *
 * Run as `node watchdog.js`; not a user command.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { pathToFileURL } from "node:url";

/** How long the children get to stop on SIGTERM before SIGKILL. */
export const GRACE_MS = 5_000;
/** How long a SIGKILLed child may take to exit (one stuck in the kernel can take longer: then we go on). */
const KILL_WAIT_MS = 5_000;
/** Between checks whether the children have exited. */
const POLL_MS = 50;

/** What one stdin line asks: watch a pid (`last`: stop it after the others), or stop watching it. */
export type WatchdogLine = { add: number; last: boolean } | { remove: number } | undefined;

/** Parses one stdin line; undefined for anything that is not `+<pid>`, `+<pid> last` or `-<pid>`. */
export function parseWatchdogLine(line: string): WatchdogLine {
  const match = /^([+-])([1-9][0-9]{0,9})( last)?$/.exec(line.trim());
  if (match === null) return undefined;
  const pid = Number(match[2]);
  if (match[1] === "-") return match[3] === undefined ? { remove: pid } : undefined;
  return { add: pid, last: match[3] !== undefined };
}

/**
 * Is process `pid` still running? A child that has exited but whose parent
 * (our owner, now dead) has not reaped it is a zombie: it answers signals,
 * yet it is gone.
 */
export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces and parentheses.
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true; // no /proc: trust the signal
  }
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // Gone already.
  }
}

/** Waits until none of `pids` runs, or `ms` have passed. */
async function waitForExit(pids: readonly number[], ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (pids.some(isRunning) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
}

/**
 * SIGTERM to each of `pids`; SIGKILL to those still running after
 * {@linkcode GRACE_MS}. Resolves once they are gone: SIGKILL is delivered
 * asynchronously, and a process in its exit path still runs for a while,
 * so those stopped `last` would otherwise not really come last.
 */
async function stop(pids: readonly number[]): Promise<void> {
  for (const pid of pids) {
    signal(pid, "SIGTERM");
    signal(pid, "SIGCONT"); // a paused process handles SIGTERM only once it runs
  }
  await waitForExit(pids, GRACE_MS);
  for (const pid of pids) if (isRunning(pid)) signal(pid, "SIGKILL");
  await waitForExit(pids, KILL_WAIT_MS);
}

function main(): void {
  const watched = new Map<number, boolean>();
  let pending = "";
  // Our own group already (detached), but a stray SIGINT/SIGHUP must not
  // end the watch early: only the end of the pipe does.
  process.on("SIGINT", () => {});
  process.on("SIGHUP", () => {});
  process.stdin.setEncoding("latin1");
  process.stdin.on("data", (chunk: string) => {
    pending += chunk;
    for (let nl = pending.indexOf("\n"); nl !== -1; nl = pending.indexOf("\n")) {
      const line = parseWatchdogLine(pending.slice(0, nl));
      pending = pending.slice(nl + 1);
      if (line === undefined) continue;
      if ("add" in line) watched.set(line.add, line.last);
      else watched.delete(line.remove);
    }
  });
  process.stdin.on("end", async () => {
    const pids = [...watched.keys()];
    await stop(pids.filter((pid) => !watched.get(pid)));
    await stop(pids.filter((pid) => watched.get(pid)));
    process.exit(0);
  });
}

// Node's spelling of Deno's `import.meta.main`: run only as the entry point.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) main();
