/**
 * A standalone node's data directory seen from the outside: torn tails are
 * cut, corruption in the middle stops the node loudly, snapshots truncate the
 * log and replay gives back the same state, and one data directory serves
 * one node only.
 */
import fs from "node:fs";
import path from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { makeTempDir, type NodeHandle, runCli, startNode } from "../support/node_process.ts";
import { LineClient } from "../support/tcp.ts";
import { seeded } from "../simulation/prng.ts";

/** The standalone partition's directory inside a data dir. */
function partitionDir(dataDir: string): string {
  return path.join(dataDir, "p0");
}

/** Log segment files, oldest first. */
function segments(dataDir: string): string[] {
  return fs.readdirSync(partitionDir(dataDir)).filter((n) => /^log-.*\.seg$/.test(n)).sort();
}

function snapshots(dataDir: string): string[] {
  return fs.readdirSync(partitionDir(dataDir)).filter((n) => /^snap-.*\.snap$/.test(n)).sort();
}

/** Writes `count` keys one request at a time (many small log batches) and stops the node cleanly. */
async function writeKeysAndStop(node: NodeHandle, count: number, prefix: string): Promise<void> {
  const c = await LineClient.connect(node.port);
  for (let i = 0; i < count; i++) assert.is(await c.request(`PUT ${prefix}-${i} value ${i}`), "OK");
  c.destroy();
  assert.is(await node.stop(), 0);
}

async function assertKeys(port: number, count: number, prefix: string): Promise<void> {
  const c = await LineClient.connect(port);
  const replies = await c.requestMany(Array.from({ length: count }, (_, i) => `GET ${prefix}-${i}`), 10_000);
  for (let i = 0; i < count; i++) assert.is(replies[i], `VALUE value ${i}`, `${prefix}-${i}`);
  c.destroy();
}


test("a torn tail (garbage after the last record) is cut at start: the node starts and the data before it is intact", async () => {
  const node = await startNode();
  await writeKeysAndStop(node, 100, "torn");
  const last = path.join(partitionDir(node.dataDir), segments(node.dataDir).at(-1)!);
  const validBytes = fs.statSync(last).size;
  assert.ok(validBytes > 0);
  const random = seeded(7);
  const garbage = Buffer.from(Array.from({ length: 53 }, () => Math.floor(random() * 256)));
  fs.appendFileSync(last, garbage);

  await node.restart();
  const torn = await node.waitForEvent((e) => e.event === "torn_tail" || /torn/i.test(String(e.event)), 2_000);
  assert.ok(String(torn.file ?? "").endsWith(path.basename(last)), `the torn-tail line names the file: ${JSON.stringify(torn)}`);
  await assertKeys(node.port, 100, "torn");
  const c = await LineClient.connect(node.port);
  assert.is(await c.request("PUT torn-after new"), "OK", "writes continue after the cut");
  c.destroy();
  assert.is(await node.stop(), 0);
  await node.restart();
  assert.not.ok(node.events().some((e) => e.event === "torn_tail"), "the tail was cut for good: a clean start now");
  await assertKeys(node.port, 100, "torn");
  const d = await LineClient.connect(node.port);
  assert.is(await d.request("GET torn-after"), "VALUE new");
  d.destroy();
  assert.is(await node.stop(), 0);
});

test("a torn tail that is the start of a real record (a crash mid-append) is cut too", async () => {
  const node = await startNode();
  await writeKeysAndStop(node, 30, "half");
  const last = path.join(partitionDir(node.dataDir), segments(node.dataDir).at(-1)!);
  const bytes = fs.readFileSync(last);
  // The first 20 bytes of a real record: its length field says more follows.
  fs.appendFileSync(last, bytes.subarray(0, 20));
  await node.restart();
  await node.waitForEvent((e) => e.event === "torn_tail", 2_000);
  await assertKeys(node.port, 30, "half");
  assert.is(fs.statSync(last).size, bytes.length, "the file is cut back to its last whole record");
  assert.is(await node.stop(), 0);
});

test("corruption in the middle (a flipped byte in an early record) stops the node: non-zero exit, file and offset named", async () => {
  const node = await startNode();
  await writeKeysAndStop(node, 50, "flip");
  const name = segments(node.dataDir)[0];
  const file = path.join(partitionDir(node.dataDir), name);
  const bytes = fs.readFileSync(file);
  const size = bytes.length;
  // Records are [u32 body length][u32 crc][body]; find the first one with a key
  // (body > 15 bytes) and flip its last byte: valid records follow it.
  let record = 0;
  while (bytes.readUInt32BE(record) <= 15) record += 8 + bytes.readUInt32BE(record);
  const recordEnd = record + 8 + bytes.readUInt32BE(record);
  assert.ok(recordEnd < size / 2, "an early record");
  bytes[recordEnd - 1] ^= 0x40;
  fs.writeFileSync(file, bytes);

  const result = await runCli(["node", "--id", "n1", "--host", "127.0.0.1", "--port", "0", "--data-dir", node.dataDir]);
  assert.ok(result.exitCode !== 0 && result.exitCode !== null, `exit code ${result.exitCode}, signal ${result.signal}`);
  assert.not.match(result.stderr, /"event":"listening"/, "it never served");
  assert.ok(result.stderr.includes(name), `the error names the file ${name}:\n${result.stderr}`);
  assert.match(result.stderr, new RegExp(`offset ${record}\\b`), `the error names the offset ${record} of the bad record:\n${result.stderr}`);
  assert.is(fs.statSync(file).size, size, "the evidence is left as it was: nothing truncated");
});

test("snapshot + truncation + replay (--snapshot-every 100): old segments go, and a restart gives back the same state", async () => {
  const node = await startNode({ args: ["--snapshot-every", "100"] });
  const firstSegment = segments(node.dataDir)[0];
  const random = seeded(42);
  const model = new Map<string, string | undefined>();
  const c = await LineClient.connect(node.port);
  let ops = 0;
  while (ops < 1000) {
    const lines: string[] = [];
    for (let j = 0; j < 20; j++, ops++) {
      const key = `snap-${Math.floor(random() * 300)}`;
      if (random() < 0.2) {
        lines.push(`DELETE ${key}`);
        model.set(key, undefined);
      } else {
        const value = `v${ops} ${"x".repeat(Math.floor(random() * 40))} ü`;
        lines.push(`PUT ${key} ${value}`);
        model.set(key, value);
      }
    }
    const replies = await c.requestMany(lines, 10_000);
    for (const reply of replies) assert.ok(reply === "OK" || reply === "DELETED" || reply === "NOT_FOUND", reply);
  }
  c.destroy();

  // Snapshots are written in the background: wait for the files to settle.
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline && (snapshots(node.dataDir).length === 0 || segments(node.dataDir).includes(firstSegment))) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.ok(snapshots(node.dataDir).length >= 1, `a snap-*.snap file exists: ${fs.readdirSync(partitionDir(node.dataDir))}`);
  assert.not.ok(segments(node.dataDir).includes(firstSegment), "the first segment was deleted after a snapshot covered it");
  assert.ok(segments(node.dataDir).length <= 3, `old segments deleted: ${segments(node.dataDir)}`);
  assert.is(await node.stop(), 0);

  await node.restart();
  const recovered = await node.waitForEvent((e) => e.event === "partition_recovered", 2_000);
  assert.ok(Number(recovered.snapshotIndex) > 0, `recovery started from a snapshot: ${JSON.stringify(recovered)}`);
  assert.ok(Number(recovered.entries) < 1000, "only the log after the snapshot was replayed");
  const check = await LineClient.connect(node.port);
  const keys = [...model.keys()];
  const replies = await check.requestMany(keys.map((k) => `GET ${k}`), 10_000);
  for (const [i, key] of keys.entries()) {
    const value = model.get(key);
    assert.is(replies[i], value === undefined ? "NOT_FOUND" : `VALUE ${value}`, key);
  }
  const info = JSON.parse(await check.request("INFO")) as { keys: number };
  assert.is(info.keys, [...model.values()].filter((v) => v !== undefined).length, "no key more, no key less");
  check.destroy();
  assert.is(await node.stop(), 0);
});

test("a second node on the same data directory refuses to start; the first keeps serving", async () => {
  const node = await startNode();
  const c = await LineClient.connect(node.port);
  assert.is(await c.request("PUT owner first"), "OK");
  const second = await runCli(["node", "--id", "n2", "--host", "127.0.0.1", "--port", "0", "--data-dir", node.dataDir]);
  assert.ok(second.exitCode !== 0 && second.exitCode !== null, `exit code ${second.exitCode}`);
  assert.not.match(second.stderr, /"event":"listening"/);
  assert.match(second.stderr, /in use|lock/i, `it says why:\n${second.stderr}`);
  assert.is(await c.request("GET owner"), "VALUE first");
  assert.is(await c.request("PUT owner still-mine"), "OK");
  c.destroy();
  assert.is(await node.stop(), 0);
  await node.restart();
  const d = await LineClient.connect(node.port);
  assert.is(await d.request("GET owner"), "VALUE still-mine");
  d.destroy();
  assert.is(await node.stop(), 0);
});

test("a node restarted after kill -9 takes over its stale lock", async () => {
  const dataDir = makeTempDir();
  const node = await startNode({ dataDir });
  const c = await LineClient.connect(node.port);
  assert.is(await c.request("PUT stale-lock v"), "OK");
  c.destroy();
  await node.kill("SIGKILL");
  await node.restart();
  const d = await LineClient.connect(node.port);
  assert.is(await d.request("GET stale-lock"), "VALUE v");
  d.destroy();
  assert.is(await node.stop(), 0);
});

test.run();
