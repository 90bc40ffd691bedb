/**
 * A rolling restart of all 5 nodes of a local cluster (the layout of
 * `npm start`: 5 partitions × 3 replicas) under steady load, each node
 * stopped with SIGTERM: every partition it leads is handed over, no request
 * fails, no acknowledged write is lost, and every restarted node catches up.
 * The handover timings are measured by `npm run bench` (docs/performance.md),
 * not asserted here.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { type LocalStack, startLocalStack } from "../../src/node/local_cluster.ts";
import { freePortRun } from "../../src/net/ports.ts";
import { formatRolling, ROLLING_NODES, runRolling } from "../../src/cli/rolling.ts";
import { printLogs } from "../support/cluster.ts";

let stack: LocalStack | undefined;
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "ringkv-rolling-test-"));

test.after(async () => {
  await stack?.close();
  if (process.env.RINGKV_KEEP_TEST_DATA === undefined) fs.rmSync(dataDir, { recursive: true, force: true });
});

test("rolling restart under load: no request fails, nothing is lost, every leadership is handed over", async () => {
  stack = await startLocalStack({ nodes: ROLLING_NODES, basePort: await freePortRun(ROLLING_NODES), dataDir, secret: "test-secret" });
  const result = await runRolling(stack.cluster, { clients: 8, rounds: 1, log: () => {} });
  console.log(formatRolling(result));
  if (result.failures.length > 0 || result.lost.length > 0) printLogs(path.join(dataDir, "nodes"));
  assert.equal(result.failures.slice(0, 5), [], "no request may fail");
  assert.equal(result.lost.slice(0, 5), [], "every acknowledged write must be on every node");
  assert.is(result.restarts.length, ROLLING_NODES);
  assert.ok(result.writes > 500 && result.reads > 500, `steady load ran (${result.writes} writes, ${result.reads} reads)`);
  const handedOver = result.restarts.filter((r) => r.led.length > 0);
  assert.ok(handedOver.length > 0, "at least one restarted node was leading");
  for (const r of result.restarts) {
    // One `handover` log line per partition it led: none was left to an election by timeout.
    assert.is(r.handoverLogMs.length, r.led.length, `${r.node} led ${r.led.join(",")} and logged handovers ${r.handoverLogMs.join(",")}`);
  }
});

test.run();
