/**
 * The Node.js ceiling server of the bench suite (bench/ceiling_server.ts), as
 * real processes: its numbers only mean something if it really answers what
 * the bench client asks, in order, and really writes every SET before `+OK`
 * (on followers too, when it keeps three copies).
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { runBench } from "../../src/cli/bench.ts";
import { freePort, ManagedProcess, waitForPort } from "../../src/cli/bench_suite.ts";
import { encodeResp, LineClient } from "../support/tcp.ts";

const SERVER_JS = fileURLToPath(new URL("../../bench/ceiling_server.js", import.meta.url));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ringkv-ceiling-"));
const started: ManagedProcess[] = [];

async function startCeiling(extra: string[] = []): Promise<{ port: number; log: string; process: ManagedProcess }> {
  const port = await freePort();
  const log = path.join(dir, `ceiling-${port}.log`);
  const managed = ManagedProcess.start(process.execPath, [SERVER_JS, "--port", String(port), "--log", log, ...extra]);
  started.push(managed);
  await waitForPort(port, managed, { timeoutMs: 10_000 });
  return { port, log, process: managed };
}

test.after(async () => {
  for (const managed of started) await managed.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test("replies in request order, a byte at a time or pipelined, and every SET is in the file first", async () => {
  const ceiling = await startCeiling();
  const client = await LineClient.connect(ceiling.port);
  const requests = Buffer.concat([
    encodeResp(["GET", "k1"]),
    encodeResp(["SET", "k1", "v one"]),
    encodeResp(["get", "k1"]),
    encodeResp(["SET", "k2", Buffer.alloc(300, 0x61)]),
    encodeResp(["GET", "k2"]),
    encodeResp(["PING"]),
  ]);
  for (const byte of requests) client.write(Buffer.from([byte]));
  assert.equal(await client.readResp(), { type: "bulk", value: null });
  assert.equal(await client.readResp(), { type: "simple", value: "OK" });
  assert.equal(await client.readResp(), { type: "bulk", value: Buffer.from("v one") });
  assert.equal(await client.readResp(), { type: "simple", value: "OK" });
  assert.equal(await client.readResp(), { type: "bulk", value: Buffer.alloc(300, 0x61) });
  assert.equal(await client.readResp(), { type: "error", value: "ERR unknown command" });
  const written = fs.readFileSync(ceiling.log);
  assert.ok(written.includes(encodeResp(["SET", "k1", "v one"])), "the first SET is in the log");
  assert.ok(written.includes(Buffer.alloc(300, 0x61)), "the second SET is in the log");
  client.socket.destroy();
});

test("the bench client's GET and PUT loads: no errors, GETs hit after the preload", async () => {
  const ceiling = await startCeiling();
  const puts = await runBench({ port: ceiling.port, connections: 4, pipeline: 16, ratio: 1, requests: 20_000, warmupS: 0, keyspace: 2_000 });
  assert.is(puts.failure, undefined);
  assert.is(puts.errors, 0);
  assert.is(puts.puts, 20_000);
  assert.ok(fs.statSync(ceiling.log).size >= 20_000 * 100, "every PUT's value reached the file");
  const gets = await runBench({ port: ceiling.port, connections: 4, pipeline: 16, ratio: 0, requests: 20_000, warmupS: 0, keyspace: 2_000, preload: true });
  assert.is(gets.failure, undefined);
  assert.is(gets.errors, 0);
  assert.is(gets.gets, 20_000);
  assert.is(gets.misses, 0);
});

test("three copies: every batch the leader wrote reaches both followers' files", async () => {
  const followers = [await startCeiling(["--follower"]), await startCeiling(["--follower"])];
  const leader = await startCeiling(["--followers", followers.map((f) => f.port).join(",")]);
  const result = await runBench({ port: leader.port, connections: 8, pipeline: 4, ratio: 1, requests: 10_000, warmupS: 0, keyspace: 1_000 });
  assert.is(result.failure, undefined);
  assert.is(result.errors, 0);
  assert.is(result.puts, 10_000);
  const size = fs.statSync(leader.log).size;
  assert.ok(size >= 10_000 * 100, `the leader's file holds every PUT (${size} bytes)`);
  // A reply waits for one follower of two; the other catches up within a deadline.
  const deadline = Date.now() + 5_000;
  while (followers.some((f) => fs.statSync(f.log).size !== size) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  for (const follower of followers) assert.is(fs.statSync(follower.log).size, size);
});

test.run();
