/**
 * `ringkv cluster` as a user runs it, killed the hard way: after a SIGKILL
 * of the process (no exit hook runs), the watchdog it started stops every
 * node it owned, and each node's log file (written by the node itself, not
 * through the dead parent) ends with its clean stop. Real processes, a real
 * ZooKeeper, real signals.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { freePortRun } from "../../src/net/ports.ts";
import { isRunning } from "../../src/process/watchdog.ts";
import { waitUntil } from "../support/wait.ts";
import { startZooKeeper, type ZooKeeperServer } from "../support/zookeeper.ts";

const MAIN = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));
const NODES = 3;
/** Start-up of three nodes with leaders everywhere, on 2 busy cores. */
const START_TIMEOUT_MS = 60_000;
/** The watchdog gives SIGTERM 5 s before SIGKILL; a clean stop takes well under 1 s. */
const STOP_TIMEOUT_MS = 15_000;

let zk: ZooKeeperServer;

test.before(async () => {
  zk = await startZooKeeper();
});

test.after(async () => {
  await zk?.stop();
});

/** The `event` of the last JSON line of a node's log file. */
function lastEvent(file: string): string | undefined {
  const lines = fs.readFileSync(file, "utf8").split("\n").filter((line) => line.startsWith("{"));
  const last = lines.at(-1);
  return last === undefined ? undefined : (JSON.parse(last) as { event?: string }).event;
}

test("ringkv cluster SIGKILLed: every node it started stops cleanly, and each node's log file ends with 'stopped'", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ringkv-cluster-cli-"));
  const basePort = await freePortRun(NODES);
  const run = execa(process.execPath, [
    MAIN, "cluster", "--zk", zk.connect, "--nodes", String(NODES), "--base-port", String(basePort), "--http-base-port", "0", "--data-dir", dir,
  ], { reject: false, detached: true, stdin: "ignore" });
  const pids = new Map<string, number>();
  let output = "";
  run.stdout!.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8");
    // One line per node once every partition has a leader: "n1   127.0.0.1:9001  pid 123  replicates ..."
    for (const match of output.matchAll(/^(n\d+)\s+\S+\s+pid (\d+)/gm)) pids.set(match[1], Number(match[2]));
  });
  try {
    assert.ok(await waitUntil(() => pids.size === NODES, START_TIMEOUT_MS), `the cluster came up:\n${output}`);
    assert.ok([...pids.values()].every(isRunning), "every node runs");
    process.kill(run.pid!, "SIGKILL");
    await run;
    const stopped = await waitUntil(() => ![...pids.values()].some(isRunning), STOP_TIMEOUT_MS);
    assert.ok(stopped, `nodes still running ${STOP_TIMEOUT_MS} ms after the SIGKILL: ${[...pids].filter(([, pid]) => isRunning(pid)).map(([id]) => id)}`);
    for (const id of pids.keys()) {
      assert.is(lastEvent(path.join(dir, `${id}.log`)), "stopped", `${id}'s log ends with its clean stop`);
    }
  } finally {
    for (const pid of [run.pid ?? 0, ...pids.values()]) {
      try {
        if (pid > 0) process.kill(pid, "SIGKILL");
      } catch {
        // Gone already.
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
