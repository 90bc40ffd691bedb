/**
 * A process that owns children the way `ringkv cluster` owns ZooKeeper and
 * its nodes (detached, registered with killOnExit), for the watchdog test.
 * It starts an idle child, one that ignores SIGTERM, one registered `last`
 * that writes to the file named by argv[2], on SIGTERM, whether the deaf
 * one was still running, and one it forgets; prints
 * `{"owned":[idle,deaf,last],"forgotten":pid}` and waits to be killed.
 *
 * @module
 */
import { spawn } from "node:child_process";
import process from "node:process";
import { forget, killOnExit } from "../../src/process/owned.ts";

const IDLE = "console.log('ready'); setInterval(() => {}, 1000);";
const DEAF = "process.on('SIGTERM', () => {}); console.log('ready'); setInterval(() => {}, 1000);";

/** `last`: on SIGTERM, records whether process `deaf` still ran (a zombie has stopped), then exits. */
function lastSource(deaf: number, marker: string): string {
  return `process.on('SIGTERM', () => {
    let running = true;
    try {
      const stat = require('fs').readFileSync('/proc/${deaf}/stat', 'latin1');
      running = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
    } catch { running = false; }
    require('fs').writeFileSync(${JSON.stringify(marker)}, running ? 'deaf running' : 'deaf stopped');
    process.exit(0);
  });
  console.log('ready'); setInterval(() => {}, 1000);`;
}

/** Starts a child running `source`; resolves with its pid once it says it is ready. */
function child(source: string, options: { last?: boolean } = {}): Promise<number> {
  const started = spawn(process.execPath, ["-e", source], { stdio: ["ignore", "pipe", "ignore"], detached: true });
  const pid = started.pid;
  if (pid === undefined) throw new Error("spawn failed");
  killOnExit(pid, { last: options.last });
  return new Promise((resolve) => {
    started.stdout.once("data", () => {
      started.stdout.destroy();
      started.unref();
      resolve(pid);
    });
  });
}

const idle = await child(IDLE);
const deaf = await child(DEAF);
const last = await child(lastSource(deaf, process.argv[2]), { last: true });
const forgotten = await child(IDLE);
forget(forgotten);
process.stdout.write(`${JSON.stringify({ owned: [idle, deaf, last], forgotten })}\n`);
setInterval(() => {}, 1000);
