/**
 * The load generator against real servers: redis-server (the RESP side, and
 * a memory-capped one whose OOM errors must be counted as errors) and a
 * standalone ringkv node (the line dialect).
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { runBench } from "../../src/cli/bench.ts";
import { freePort, ManagedProcess, respCommand, waitForPort } from "../../src/cli/bench_suite.ts";
import { type NodeHandle, startNode } from "../support/node_process.ts";

const started: ManagedProcess[] = [];

async function startRedis(extra: string[] = []): Promise<{ port: number; process: ManagedProcess }> {
  const port = await freePort();
  const managed = ManagedProcess.start("redis-server", [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--logfile",
    "",
    ...extra,
  ]);
  started.push(managed);
  await waitForPort(port, managed, { timeoutMs: 10_000 });
  return { port, process: managed };
}

test.after(async () => {
  for (const managed of started) await managed.stop();
});

test("PUT load: every reply counted once, the keys really are in Redis", async () => {
  const redis = await startRedis();
  const result = await runBench({ port: redis.port, connections: 2, pipeline: 8, ratio: 1, requests: 5_000, warmupS: 0, keyspace: 1_000 });
  assert.is(result.failure, undefined);
  assert.is(result.errors, 0);
  assert.is(result.ops, 5_000);
  assert.is(result.puts, 5_000);
  assert.ok(result.opsPerSec > 0);
  assert.ok(result.latencyMs.p50 > 0 && result.latencyMs.p50 <= result.latencyMs.p99);
  assert.ok(result.latencyMs.p99 <= result.latencyMs.max);
  const size = await respCommand(redis.port, ["DBSIZE"]);
  const keys = Number(size.text?.slice(1));
  assert.ok(keys > 900 && keys <= 1_000, `DBSIZE ${size.text}`);
  const one = await respCommand(redis.port, ["STRLEN", "key:000000000007"]);
  assert.ok(one.text === ":100" || one.text === ":0", `STRLEN ${one.text}`);
  await redis.process.stop();
});

test("GET after --preload: every GET hits; a duration run stops by itself", async () => {
  const redis = await startRedis();
  const began = performance.now();
  const result = await runBench({ port: redis.port, connections: 4, pipeline: 4, ratio: 0, durationS: 0.5, warmupS: 0.2, keyspace: 2_000, preload: true });
  assert.is(result.failure, undefined);
  assert.ok(result.preloadS !== undefined && result.preloadS > 0);
  assert.ok(result.gets > 0);
  assert.is(result.misses, 0);
  assert.is(result.errors, 0);
  assert.ok(Math.abs(result.windowS - 0.5) < 0.05, `window ${result.windowS}`);
  assert.ok(performance.now() - began < 5_000);
  await redis.process.stop();
});

test("ERR replies (Redis out of memory) are errors, never successes", async () => {
  const redis = await startRedis(["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
  const result = await runBench({ port: redis.port, connections: 2, pipeline: 16, ratio: 1, requests: 40_000, warmupS: 0, keyspace: 1_000_000, valueSize: 200 });
  assert.is(result.failure, undefined);
  assert.ok(result.errors > 0, "a 2 MB Redis refuses some of 8 MB of writes");
  assert.ok(result.ops < 40_000);
  assert.is(result.ops + result.errors, 40_000, "every request is either a success or an error");
  assert.match(result.errorSamples[0], /OOM/);
  await redis.process.stop();
});

test("a server that dies mid-run makes the run fail, promptly", async () => {
  const redis = await startRedis();
  const began = performance.now();
  const running = runBench({ port: redis.port, connections: 2, pipeline: 4, ratio: 1, durationS: 30, warmupS: 0 });
  setTimeout(() => redis.process.child.kill("SIGKILL"), 300);
  const result = await running;
  assert.ok(result.failure !== undefined, "failure reported");
  assert.ok(performance.now() - began < 5_000, "did not wait for the full duration");
});

test("nothing listening: the run fails with the connect error", async () => {
  const port = await freePort();
  const result = await runBench({ port, connections: 1, durationS: 1, warmupS: 0 });
  assert.match(result.failure ?? "", /ECONNREFUSED/);
});

test("line dialect against a ringkv node: mixed load, preloaded, no errors", async () => {
  let node: NodeHandle | undefined;
  try {
    node = await startNode();
    const result = await runBench({ port: node.port, dialect: "line", connections: 2, pipeline: 4, ratio: 0.5, requests: 2_000, warmupS: 0, keyspace: 500, preload: true });
    assert.is(result.failure, undefined);
    assert.is(result.errors, 0, result.errorSamples.join(" | "));
    assert.is(result.ops, 2_000);
    assert.is(result.misses, 0);
    assert.ok(result.puts > 0 && result.gets > 0);
  } finally {
    await node?.stop();
  }
});

test.run();
