/**
 * Durability of a standalone node, from the outside: what got OK is there
 * after a clean restart, after SIGTERM in the middle of pipelined writes, and
 * after kill -9 in the middle of a stream of concurrent writes.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { type NodeHandle, startNode } from "../support/node_process.ts";
import { encodeResp, LineClient } from "../support/tcp.ts";
import { seeded } from "../simulation/prng.ts";

/** Concurrent writer connections in the kill -9 test. */
const WRITERS = 8;
/** Requests each writer pipelines before reading their replies. */
const WRITER_BATCH = 25;
/** Kill -9 rounds on the same data directory. */
const KILL_ROUNDS = 3;
/** Acknowledged writes per round before the kill: at least this many... */
const MIN_ACKED_PER_ROUND = 1500;
/** ...plus a random number below this. */
const RANDOM_ACKED_PER_ROUND = 2500;
/** How many GETs one verification write pipelines. */
const VERIFY_CHUNK = 1000;

/** Reads back every key of `expected` (pipelined) and returns the mismatches. */
async function verify(port: number, expected: Map<string, string | undefined>): Promise<string[]> {
  const c = await LineClient.connect(port);
  const wrong: string[] = [];
  const keys = [...expected.keys()];
  for (let at = 0; at < keys.length; at += VERIFY_CHUNK) {
    const chunk = keys.slice(at, at + VERIFY_CHUNK);
    const replies = await c.requestMany(chunk.map((k) => `GET ${k}`), 20_000);
    for (const [i, key] of chunk.entries()) {
      const value = expected.get(key);
      const want = value === undefined ? "NOT_FOUND" : `VALUE ${value}`;
      if (replies[i] !== want) wrong.push(`${key}: want ${JSON.stringify(want)}, got ${JSON.stringify(replies[i])}`);
    }
  }
  c.destroy();
  return wrong;
}

async function keyCount(port: number): Promise<number> {
  const c = await LineClient.connect(port);
  const info = JSON.parse(await c.request("INFO")) as { keys: number };
  c.destroy();
  return info.keys;
}

test("a clean restart (SIGTERM, start again) keeps every write, overwrite and delete", async () => {
  const node = await startNode();
  const c = await LineClient.connect(node.port);
  const model = new Map<string, string | undefined>();
  const lines: string[] = [];
  for (let i = 0; i < 300; i++) {
    lines.push(`PUT restart-${i} first value ${i}`);
    model.set(`restart-${i}`, `first value ${i}`);
  }
  for (let i = 0; i < 300; i += 3) {
    lines.push(`SET restart-${i}  second  value ✓ ${i}`);
    model.set(`restart-${i}`, ` second  value ✓ ${i}`);
  }
  for (let i = 1; i < 300; i += 5) {
    lines.push(`DELETE restart-${i}`);
    model.set(`restart-${i}`, undefined);
  }
  const replies = await c.requestMany(lines, 20_000);
  assert.ok(replies.every((r) => r === "OK" || r === "DELETED"), "every write acknowledged");
  const binary = Buffer.from([0, 10, 13, 255, 32, 0]);
  c.write(encodeResp(["SET", "restart-binary", binary]));
  assert.equal(await c.readResp(), { type: "simple", value: "OK" });
  c.destroy();

  assert.is(await node.stop(), 0, "SIGTERM: exit code 0");
  await node.restart();
  assert.equal(await verify(node.port, model), []);
  assert.is(await keyCount(node.port), [...model.values()].filter((v) => v !== undefined).length + 1);
  const again = await LineClient.connect(node.port);
  again.write(encodeResp(["GET", "restart-binary"]));
  assert.equal((await again.readResp()).value, binary, "binary value intact");
  assert.is(await again.request("PUT after-restart yes"), "OK", "and the node takes new writes");
  again.destroy();
  assert.is(await node.stop(), 0);
});

test("SIGTERM during pipelined writes: exit code 0 and every write that got OK is there after restart", async () => {
  const node = await startNode();
  const clients = await Promise.all(Array.from({ length: 4 }, () => LineClient.connect(node.port)));
  const perClient = 3000;
  const keysOf = (c: number): string[] => Array.from({ length: perClient }, (_, i) => `term-${c}-${i}`);
  for (const [c, client] of clients.entries()) {
    client.write(keysOf(c).map((k) => `PUT ${k} value of ${k}\n`).join(""));
  }
  // SIGTERM as soon as the first acknowledgement arrives: most writes are in flight.
  const firstReply = await clients[0].readLine(10_000);
  process.kill(node.pid, "SIGTERM");

  const acked = new Map<string, string>();
  const unexpected: string[] = [];
  if (firstReply === "OK") acked.set("term-0-0", "value of term-0-0");
  else unexpected.push(firstReply);
  await Promise.all(clients.map(async (client, c) => {
    const keys = keysOf(c);
    for (let i = c === 0 ? 1 : 0; i < keys.length; i++) {
      let reply: string;
      try {
        reply = await client.readLine(15_000);
      } catch {
        break; // closed by the shutdown: the rest got no reply
      }
      if (reply === "OK") acked.set(keys[i], `value of ${keys[i]}`);
      else if (!/^ERR (UNAVAILABLE|TIMEOUT) /.test(reply)) unexpected.push(reply);
    }
    client.destroy();
  }));
  const exit = await node.exited();
  assert.equal(exit, { code: 0, signal: null }, "SIGTERM ends the node cleanly");
  assert.equal(unexpected, [], "only OK, or ERR UNAVAILABLE / TIMEOUT while shutting down");
  assert.ok(acked.size > 0);

  await node.restart();
  assert.equal(await verify(node.port, acked), [], `all ${acked.size} acknowledged writes survive`);
  assert.ok((await keyCount(node.port)) >= acked.size);
  assert.is(await node.stop(), 0);
});


test("kill -9 during a stream of concurrent writes: every acknowledged write is there after restart", async () => {
  const seed = Number(process.env.RINGKV_TEST_SEED || Date.now() % 1_000_000);
  const random = seeded(seed);
  const node = await startNode();
  /** Every write that got OK, over all rounds. */
  const acked = new Map<string, string>();
  let sent = 0;
  for (let round = 0; round < KILL_ROUNDS; round++) {
    const target = acked.size + MIN_ACKED_PER_ROUND + Math.floor(random() * RANDOM_ACKED_PER_ROUND);
    const unexpected: string[] = [];
    let killed = false;
    let reachedTarget!: () => void;
    const reached = new Promise<void>((resolve) => (reachedTarget = resolve));

    async function writer(w: number): Promise<void> {
      const c = await LineClient.connect(node.port);
      let i = 0;
      try {
        while (!killed) {
          const keys = Array.from({ length: WRITER_BATCH }, () => `kill-r${round}-w${w}-${i++}`);
          c.write(keys.map((k) => `PUT ${k} v ${k} ${seed}\n`).join(""));
          sent += keys.length;
          for (const key of keys) {
            const reply = await c.readLine(10_000);
            if (reply === "OK") acked.set(key, `v ${key} ${seed}`);
            else unexpected.push(`${key}: ${reply}`);
            if (acked.size >= target) reachedTarget();
          }
        }
      } catch (error) {
        if (!killed) unexpected.push(`writer ${w}: ${(error as Error).message}`);
      } finally {
        c.destroy();
      }
    }

    const writers = Array.from({ length: WRITERS }, (_, w) => writer(w));
    const timeout = setTimeout(reachedTarget, 20_000);
    await reached;
    clearTimeout(timeout);
    // A random extra moment, so the kill lands anywhere in a batch / fsync.
    await new Promise((resolve) => setTimeout(resolve, Math.floor(random() * 20)));
    killed = true;
    process.kill(node.pid, "SIGKILL");
    await Promise.all(writers);
    const exit = await node.exited();
    assert.is(exit.signal, "SIGKILL", `seed ${seed} round ${round}`);
    assert.equal(unexpected, [], `seed ${seed} round ${round}: every reply before the kill is OK`);
    assert.ok(acked.size >= target, `seed ${seed} round ${round}: ${acked.size} acknowledged, wanted ${target}`);

    await node.restart();
    const wrong = await verify(node.port, acked);
    assert.equal(wrong.slice(0, 20), [], `seed ${seed} round ${round}: ${wrong.length} of ${acked.size} acknowledged writes lost`);
    const keys = await keyCount(node.port);
    assert.ok(keys >= acked.size && keys <= sent, `seed ${seed}: ${keys} keys, ${acked.size} acknowledged, ${sent} sent`);
    console.log(`kill -9 round ${round} (seed ${seed}): ${acked.size} acknowledged, ${sent} sent, ${keys} keys after restart`);
  }
  assert.is(await node.stop(), 0);
});

test.run();
