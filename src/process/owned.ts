/**
 * What this process started and must not leave behind: child processes (a
 * ZooKeeper, local cluster nodes) and temp dirs. They are killed (SIGKILL,
 * which also ends a paused process) and removed when this process exits, and,
 * with signal handling on, when it gets SIGINT, SIGTERM or SIGHUP.
 *
 * The children run in their own process groups (so that a terminal's Ctrl-C
 * reaches only the process that orders their shutdown), so nothing else would
 * stop them if we died. SIGKILL of this process runs no hook at all: for
 * that, a watchdog process (watchdog.ts) holds a pipe from us and stops the
 * children still listed when the pipe ends.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** Options for {@linkcode killOnExit} and {@linkcode removeOnExit}. */
export interface OwnedOptions {
  /**
   * On SIGINT/SIGTERM/SIGHUP, kill everything owned and exit with 128 + the
   * signal number. False: the caller handles signals (and stops what it
   * started itself). The first call in a process decides. Defaults to true.
   */
  handleSignals?: boolean;
  /**
   * For {@linkcode killOnExit}: if this process dies without stopping it,
   * the watchdog stops it only after every other child (ZooKeeper: the
   * nodes need it to stop cleanly). Defaults to false.
   */
  last?: boolean;
}

/** Exit codes for the signals we intercept (128 + signal number). */
const SIGNAL_EXIT_CODES = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 } as const;

const ownedPids = new Set<number>();
const ownedDirs = new Set<string>();
let hookInstalled = false;

const WATCHDOG_JS = fileURLToPath(new URL("./watchdog.js", import.meta.url));
let watchdog: ChildProcess | undefined;

/**
 * Kills process `pid` when this process exits, unless {@linkcode forget} is
 * called first; if this process is SIGKILLed, the watchdog stops it.
 */
export function killOnExit(pid: number, options: OwnedOptions = {}): void {
  installHook(options.handleSignals ?? true);
  ownedPids.add(pid);
  tellWatchdog(`+${pid}${options.last === true ? " last" : ""}`);
}

/** Process `pid` has exited or was stopped: nothing to kill on exit. */
export function forget(pid: number): void {
  if (ownedPids.delete(pid)) tellWatchdog(`-${pid}`);
}

/** Starts the watchdog on first use; it must never keep this process alive. */
function tellWatchdog(line: string): void {
  if (watchdog === undefined) {
    watchdog = spawn(process.execPath, [WATCHDOG_JS], { stdio: ["pipe", "ignore", "ignore"], detached: true });
    watchdog.on("error", () => {}); // No watchdog: the exit hooks still cover every death but SIGKILL.
    watchdog.stdin?.on("error", () => {});
    watchdog.unref();
  }
  watchdog.stdin?.write(`${line}\n`);
}

/** Removes directory `dir` (recursively) when this process exits. */
export function removeOnExit(dir: string, options: OwnedOptions = {}): void {
  installHook(options.handleSignals ?? true);
  ownedDirs.add(dir);
}

/** Synchronous cleanup: no waiting, best effort. */
function cleanUp(): void {
  for (const pid of ownedPids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  ownedPids.clear();
  for (const dir of ownedDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // Best effort: a temp dir left behind is harmless.
    }
  }
  ownedDirs.clear();
}

function installHook(handleSignals: boolean): void {
  if (hookInstalled) return;
  hookInstalled = true;
  process.on("exit", cleanUp);
  if (!handleSignals) return;
  // A signal kills Node without 'exit': clean up, then exit with the usual code.
  for (const [signal, code] of Object.entries(SIGNAL_EXIT_CODES)) {
    process.once(signal as NodeJS.Signals, () => {
      cleanUp();
      process.exit(code);
    });
  }
}
