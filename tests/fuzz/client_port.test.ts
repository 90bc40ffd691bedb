/**
 * The client port under hostile input, against one real node process:
 * seeded random and mutated bytes in all three dialects over many
 * connections, slowloris clients, thousands of idle connections, and clients
 * that pipeline without ever reading. The node must stay up, keep serving,
 * change nothing it was not asked to, and keep its memory bounded.
 *
 * Replay a run with RINGKV_FUZZ_SEED=<seed> (printed at the start).
 */
import fs from "node:fs";
import net from "node:net";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { type NodeHandle, startNode } from "../support/node_process.ts";
import { encodeResp, LineClient } from "../support/tcp.ts";
import { seeded } from "../simulation/prng.ts";

/** Fuzz connections open at once... */
const FUZZ_CONNECTIONS = 60;
/** ...in this many rounds (the giant lines go with the first). */
const FUZZ_ROUNDS = 4;
/** Fragments (requests, garbage, frames) per fuzz connection: up to this many. */
const MAX_FRAGMENTS = 150;
/** Connections that send lines far past the 1 MiB limit. */
const GIANT_LINE_CONNECTIONS = 3;
/** RSS growth allowed over the node's size at the start, in bytes. */
const MAX_RSS_GROWTH = 200 * 1_048_576;
/** Idle connections held open at once (the default cap is 10,000). */
const IDLE_CONNECTIONS = 2000;
/** Clients that pipeline without reading, and how many GETs each sends. */
const STUCK_CLIENTS = 4;
const STUCK_GETS = 50_000;
/** A fuzz connection is done after this long without a reply byte. */
const QUIET_MS = 1_500;
/** Most a served request may take while the node is under abuse. */
const MAX_SERVED_LATENCY_MS = 2_000;
/**
 * ...and while 60 fuzz connections flood it: each gets a turn of the event
 * loop per chunk, so a request waits behind all of theirs (about 1 s seen).
 */
const MAX_FUZZ_LATENCY_MS = 5_000;

const SEED = Number(process.env.RINGKV_FUZZ_SEED || Date.now() % 1_000_000_000);
console.log(`client port fuzz seed ${SEED} (replay: RINGKV_FUZZ_SEED=${SEED})`);


const random = seeded(SEED);

function int(n: number): number {
  return Math.floor(random() * n);
}

function pick<T>(items: readonly T[]): T {
  return items[int(items.length)];
}

function randomBytes(n: number): Buffer {
  const out = Buffer.allocUnsafe(n + 3);
  for (let i = 0; i < n; i += 4) out.writeUInt32LE(Math.floor(random() * 4294967296), i);
  return out.subarray(0, n);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resident memory of a process, in bytes (/proc/<pid>/status VmRSS). */
function rss(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = /VmRSS:\s+(\d+)\s+kB/.exec(status);
  assert.ok(kb !== null, "VmRSS in /proc status");
  return Number(kb[1]) * 1024;
}

function mib(bytes: number): string {
  return `${(bytes / 1_048_576).toFixed(1)} MiB`;
}

// ------------------------------------------------------------------ generators

/**
 * Words that could make a request write: a command (PUT, SET, DELETE, DEL),
 * the JSON implicit PUT (a "value" member) and JSON escapes that could spell
 * them. Fuzz input never contains them, so it provably writes nothing.
 */
const WRITE_WORDS = ["put", "set", "del", "value", "\\u"];

/** Overwrites one byte of every occurrence of a write word (case-insensitive) with 'x'. */
function sanitize(input: Buffer): Buffer {
  const out = Buffer.from(input);
  const lower = Buffer.from(out.toString("latin1").toLowerCase(), "latin1");
  assert.is(lower.length, out.length);
  for (const word of WRITE_WORDS) {
    let at = lower.indexOf(word, 0, "latin1");
    while (at !== -1) {
      out[at] = 0x78;
      lower[at] = 0x78;
      at = lower.indexOf(word, at + 1, "latin1");
    }
  }
  return out;
}

/** Keys the fuzz reads (written before the fuzz starts, or never). */
const KEYS = ["fz-plain", "fz-binary", "fz-big", "fz-missing", "ключ", "🙂", "a", "k".repeat(1024)];

function token(): Buffer {
  switch (int(10)) {
    case 0:
      return randomBytes(1 + int(12));
    case 1:
      // Invalid UTF-8: stray bytes, an overlong form, a surrogate, past U+10FFFF, a NUL.
      return Buffer.from(pick([[0xff], [0xfe, 0x41], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0]]));
    case 2:
      return Buffer.from("k".repeat(1000 + int(100)));
    case 3:
      return Buffer.from(pick(["\t", "\0", "\r", " ", "  ", "\u00a0", "\u2028", "\x7f", "\x1b[31m"]));
    case 4:
      return Buffer.from(String(int(1e9) - 5e8));
    default:
      return Buffer.from(pick(KEYS));
  }
}

const PLAIN_WORDS = ["GET", "get", "GeT", "EXISTS", "PING", "INFO", "RING", "HELP", "READONLY", "READWRITE", "AUTH", "AUTH HELLO n2", "AUTH PROOF", "REPLICATE", "FWD", "SNAPSHOT", "FROB", "", " ", "\t", "*", "{"];

function plainLine(): Buffer {
  const parts: Buffer[] = [Buffer.from(pick(PLAIN_WORDS))];
  const args = int(5);
  for (let i = 0; i < args; i++) parts.push(Buffer.from(pick([" ", " ", "  ", "\t"])), token());
  parts.push(Buffer.from(pick(["\n", "\r\n", "\n\n", "\r\r\n"])));
  return Buffer.concat(parts);
}

function jsonLine(): Buffer {
  const key = JSON.stringify(pick(KEYS));
  switch (int(12)) {
    case 0:
      return Buffer.from(`{"op":"GET","key":${key}}\n`);
    case 1:
      return Buffer.from(`{"key":${key}}\n`);
    case 2: {
      const depth = 1 + int(20_000);
      return Buffer.from(`{"op":${"[".repeat(depth)}${"]".repeat(depth)}}\n`);
    }
    case 3: {
      const depth = 1 + int(20_000);
      return Buffer.from(`${'{"a":'.repeat(depth)}1${"}".repeat(depth)}\n`);
    }
    case 4:
      return Buffer.from(`{"op":"EXISTS","keys":[${Array.from({ length: int(3000) }, () => key).join(",")}]}\n`);
    case 5:
      return Buffer.from(`{"op":"GET","key":${key}\n`); // truncated
    case 6:
      return Buffer.concat([Buffer.from('{"op":"GET","key":"'), randomBytes(1 + int(40)), Buffer.from('"}\n')]);
    case 7:
      return Buffer.from(`{"op":${pick(["1e400", "-0", "null", "true", "{}", "[]", '"PING"', '"ping"', '"INFO"', '"QUIT"', '"REPLICATE"'])},"key":${key}}\n`);
    case 8:
      return Buffer.from(`{"op":"GET","key":${key},"key":${key},"__proto__":{"op":"x"}}\n`);
    case 9:
      return Buffer.from(`{"op":"GET","key":${JSON.stringify("k".repeat(1025))}}\n`);
    case 10:
      return Buffer.from(`{${"\0".repeat(int(5))}}\n`);
    default:
      return Buffer.concat([Buffer.from("{"), randomBytes(int(200)), Buffer.from("\n")]);
  }
}

function respFrame(): Buffer {
  switch (int(16)) {
    case 0:
      return encodeResp(["GET", pick(KEYS)]);
    case 1:
      return encodeResp(["EXISTS", ...Array.from({ length: 1 + int(5) }, () => pick(KEYS))]);
    case 2:
      return encodeResp([pick(["PING", "INFO", "RING", "HELP", "CONFIG", "COMMAND", "FLUSHALL"])]);
    case 3:
      return Buffer.from(`*2\r\n$3\r\nGET\r\n$${5 + int(20)}\r\nabc\r\n`); // bulk shorter than declared
    case 4:
      return Buffer.from(`*2\r\n$3\r\nGET\r\n$1\r\nabcdef\r\n`); // bulk longer than declared
    case 5:
      return Buffer.from(`*-${1 + int(100)}\r\n`);
    case 6:
      return Buffer.from("*2\r\n*1\r\n$4\r\nPING\r\n$1\r\na\r\n"); // nested array
    case 7:
      return Buffer.from(`*${pick(["99999999", "123456789012345678901234567890", "x", "", "1a", " 1", "0"])}\r\n`);
    case 8:
      return Buffer.from(`*1\r\n$${pick(["-1", "-5", "abc", "123456789012345678901234567890", "", "2 "])}\r\n`);
    case 9:
      return Buffer.from("*1\n$4\nPING\n"); // LF without CR
    case 10:
      return Buffer.from(`*3\r\n+GET\r\n:1\r\n$1\r\na\r\n`); // wrong element types
    case 11:
      return Buffer.from(`*${1 + int(3)}\r\n$4\r\nPING\r\n`); // fewer elements than declared
    case 12:
      return encodeResp(["GET", randomBytes(1 + int(30))]);
    case 13:
      return Buffer.from(`*2000\r\n${"$1\r\na\r\n".repeat(2000)}`); // more arguments than allowed
    case 14:
      return Buffer.from(`*1\r\n$${1_048_577 + int(1000)}\r\n`); // bulk past the limit, then whatever follows
    default:
      return Buffer.concat([Buffer.from("*"), randomBytes(int(64))]);
  }
}

/** Applies a few random edits: flip, insert, delete, duplicate, truncate. */
function mutate(input: Buffer): Buffer {
  let out = Buffer.from(input);
  const edits = 1 + int(5);
  for (let e = 0; e < edits && out.length > 0; e++) {
    const at = int(out.length);
    switch (int(5)) {
      case 0:
        out[at] ^= 1 << int(8);
        break;
      case 1:
        out = Buffer.concat([out.subarray(0, at), randomBytes(1 + int(4)), out.subarray(at)]);
        break;
      case 2:
        out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1)]);
        break;
      case 3:
        out = Buffer.concat([out.subarray(0, at), out.subarray(at), out.subarray(at)]);
        break;
      default:
        out = out.subarray(0, at);
    }
  }
  return out;
}

function fragment(): Buffer {
  switch (int(10)) {
    case 0:
    case 1:
      return plainLine();
    case 2:
    case 3:
      return jsonLine();
    case 4:
    case 5:
      return respFrame();
    case 6:
    case 7:
      return mutate(pick([plainLine, jsonLine, respFrame])());
    case 8:
      return randomBytes(1 + int(4096));
    default:
      return Buffer.from(pick(["\n", "\r\n", "\r", "\0", "*", "$", "{", "}"]));
  }
}

// ------------------------------------------------------------------ the node

let node: NodeHandle;
let startRss = 0;

test.before(async () => {
  node = await startNode();
  const c = await LineClient.connect(node.port);
  assert.is(await c.request("PUT fz-plain plain value"), "OK");
  assert.equal(await c.command(["SET", "fz-binary", Buffer.from([0, 10, 13, 255, 10])]), { type: "simple", value: "OK" });
  assert.is(await c.request(`PUT fz-big ${"b".repeat(4096)}`), "OK");
  c.destroy();
  startRss = rss(node.pid);
});

test.after(async () => {
  if (node !== undefined) assert.is(await node.stop(), 0, "SIGTERM ends the node with exit code 0 after all that");
});

interface Info {
  keys: number;
  commitIndex: Record<string, number>;
  connections: number;
}

async function info(): Promise<Info> {
  const c = await LineClient.connect(node.port);
  const parsed = JSON.parse(await c.request("INFO")) as Info;
  c.destroy();
  return parsed;
}

/** Connections open now, not counting the one INFO itself came on. */
async function openConnections(): Promise<number> {
  return (await info()).connections - 1;
}

/** Waits until INFO reports at most `max` connections (its own included). */
async function waitForConnections(max: number, timeoutMs = 15_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { connections } = await info();
    if (connections <= max) return connections;
    if (Date.now() > deadline) throw new Error(`still ${connections} connections after ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** What a {@linkcode worker} saw. */
interface WorkerReport {
  requests: number;
  worstMs: number;
  /** Wrong replies or timeouts (empty when all went well). */
  failures: string[];
}

/**
 * A well-behaved client doing one request after another until `done()`;
 * records its worst latency. With `writes` it PUTs and GETs its own keys,
 * else it only reads. It never throws: failures are reported.
 */
async function worker(done: () => boolean, options: { writes: boolean; timeoutMs?: number }): Promise<WorkerReport> {
  const report: WorkerReport = { requests: 0, worstMs: 0, failures: [] };
  let c: LineClient | undefined;
  try {
    c = await LineClient.connect(node.port);
    let i = 0;
    while ((!done() || report.requests === 0) && report.failures.length === 0) {
      const started = Date.now();
      i++;
      const key = `fz-worker-${i % 50}`;
      const steps: [string, string][] = options.writes
        ? [[`PUT ${key} ${i}`, "OK"], [`GET ${key}`, `VALUE ${i}`]]
        : [["GET fz-plain", "VALUE plain value"], ["PING", "PONG"]];
      for (const [request, expected] of steps) {
        const reply = await c.request(request, options.timeoutMs ?? MAX_SERVED_LATENCY_MS);
        if (reply !== expected) report.failures.push(`${request}: ${reply}`);
        report.requests++;
      }
      report.worstMs = Math.max(report.worstMs, Date.now() - started);
    }
  } catch (error) {
    report.failures.push((error as Error).message);
  } finally {
    c?.destroy();
  }
  return report;
}

/** Options for {@linkcode fuzzConnection}. */
interface FuzzConnectionOptions {
  /** Destroy the connection once this many bytes were written (a client vanishing mid-request). */
  abortAt?: number;
  /** Keep reading until the output matches (bounded), not just until quiet. */
  until?: RegExp;
  /** The connection's own PRNG (chunk sizes and pauses), so concurrency does not change them. */
  random: () => number;
}

/** Sends `payload` in random chunks and collects what comes back until quiet or closed. */
async function fuzzConnection(payload: Buffer, options: FuzzConnectionOptions): Promise<Buffer> {
  const socket = net.connect({ port: node.port, host: "127.0.0.1" });
  const received: Buffer[] = [];
  let receivedBytes = 0;
  let lastData = Date.now();
  let closed = false;
  socket.on("data", (chunk: Buffer) => {
    if (receivedBytes < 16 * 1_048_576) received.push(chunk);
    receivedBytes += chunk.length;
    lastData = Date.now();
  });
  socket.on("error", () => {}); // the server may close on QUIT; writes then fail
  socket.on("close", () => (closed = true));
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  let at = 0;
  while (at < payload.length && !closed) {
    if (options.abortAt !== undefined && at >= options.abortAt) {
      socket.destroy(); // a client vanishing mid-request
      return Buffer.concat(received);
    }
    const size = 1 + Math.floor(options.random() * (options.random() < 0.2 ? 16 : 8192));
    const flushed = socket.write(payload.subarray(at, at + size));
    at += size;
    if (!flushed || options.random() < 0.1) await new Promise((resolve) => setImmediate(resolve));
    if (!flushed) {
      await Promise.race([new Promise((resolve) => socket.once("drain", resolve)), sleep(2_000)]);
    }
  }
  // Replies may still be coming: wait until everything was handed to the
  // kernel, then for QUIET_MS without data (or the close, or `until`), bounded.
  const deadline = Date.now() + 15_000;
  while (!closed && socket.writableLength > 0 && Date.now() < deadline) await sleep(20);
  const sentAt = Date.now();
  const done = (): boolean => {
    if (options.until !== undefined) return options.until.test(Buffer.concat(received).toString("latin1"));
    return Date.now() - Math.max(lastData, sentAt) >= QUIET_MS;
  };
  while (!closed && !done() && Date.now() < deadline) await sleep(50);
  socket.destroy();
  return Buffer.concat(received);
}

test("seeded random and mutated input in all three dialects: the node survives, writes nothing, and stays bounded", async () => {
  const before = await info();
  let peakRss = rss(node.pid);
  const sampler = setInterval(() => {
    if (node.alive()) peakRss = Math.max(peakRss, rss(node.pid));
  }, 100);
  // Every round's input is made up front: the test's own CPU work must not
  // stall the well-behaved client whose latency is measured below.
  const rounds: Buffer[][] = [];
  for (let round = 0; round < FUZZ_ROUNDS; round++) {
    rounds.push(Array.from({ length: FUZZ_CONNECTIONS }, () => sanitize(Buffer.concat(Array.from({ length: 1 + int(MAX_FRAGMENTS) }, fragment)))));
  }
  const payloads: Buffer[] = [...rounds[0]];
  // Requests far past the 1 MiB limit in each dialect, then a request that must still be served.
  const giantSize = 3 * 1_048_576 + int(1000);
  const giantBody = Buffer.alloc(giantSize, 0x61);
  const giants = [
    { payload: Buffer.concat([Buffer.from("G"), giantBody, Buffer.from("\nPING\n")]), refusal: /^ERR TOO_LARGE /m },
    { payload: Buffer.concat([Buffer.from("{"), giantBody, Buffer.from("\nPING\n")]), refusal: /"code":"TOO_LARGE"/ },
    {
      payload: Buffer.concat([Buffer.from(`*2\r\n$3\r\nGET\r\n$${giantSize}\r\n`), giantBody, Buffer.from("\r\nPING\n")]),
      refusal: /^-ERR TOO_LARGE /m,
    },
  ];
  assert.is(giants.length, GIANT_LINE_CONNECTIONS);
  for (const giant of giants) payloads.push(giant.payload);
  let sent = 0;
  let fuzzing = true;
  const busy = worker(() => !fuzzing, { writes: false, timeoutMs: MAX_FUZZ_LATENCY_MS });
  /** Options of the c-th connection of a round. */
  function connectionOptions(round: number, c: number, payload: Buffer): FuzzConnectionOptions {
    const own = seeded(SEED + 7919 * (round * 1000 + c + 1));
    return { random: own, abortAt: c % 7 === 3 ? Math.floor(own() * payload.length) : undefined };
  }
  const outputs = await Promise.all(payloads.map((payload, c) => {
    sent += payload.length;
    if (c >= FUZZ_CONNECTIONS) return fuzzConnection(payload, { until: /PONG\r?\n$/, random: seeded(SEED + c) });
    return fuzzConnection(payload, connectionOptions(0, c, payload));
  }));
  for (let round = 1; round < FUZZ_ROUNDS && node.alive(); round++) {
    const more = rounds[round];
    for (const payload of more) sent += payload.length;
    outputs.push(...await Promise.all(more.map((payload, c) => fuzzConnection(payload, connectionOptions(round, c, payload)))));
    payloads.push(...more);
  }
  clearInterval(sampler);
  fuzzing = false;
  const served = await busy;

  assert.ok(node.alive(), `the node is alive after ${mib(sent)} of fuzz (seed ${SEED})`);
  console.log(`fuzz: a well-behaved client meanwhile: ${served.requests} requests, worst ${served.worstMs} ms`);
  assert.equal(served.failures, [], "a well-behaved client is served correctly during the fuzz");
  assert.ok(served.worstMs < MAX_FUZZ_LATENCY_MS, `a well-behaved client waited ${served.worstMs} ms during the fuzz`);
  const c = await LineClient.connect(node.port);
  assert.is(await c.request("PING"), "PONG", "a fresh connection is served");
  assert.is(await c.request("GET fz-plain"), "VALUE plain value", "data intact");
  c.destroy();
  for (const [i, output] of outputs.entries()) {
    assert.not.ok(output.includes("INTERNAL"), `connection ${i} got an internal error (seed ${SEED}): ${output.toString("latin1").slice(output.indexOf("INTERNAL") - 100, output.indexOf("INTERNAL") + 100)}`);
  }
  for (const [i, giant] of giants.entries()) {
    const output = outputs[FUZZ_CONNECTIONS + i].toString("latin1");
    assert.match(output, giant.refusal, `a request far past the limit is refused: ${JSON.stringify(output.slice(0, 300))}`);
    assert.match(output, /PONG\r?\n$/, "and the request after it is served");
  }
  // The fuzz reached the parser: replies came back, with every kind of refusal.
  const answered = outputs.filter((o) => o.length > 0).length;
  assert.ok(answered > outputs.length * 0.7, `${answered} of ${outputs.length} connections got replies`);
  const codes = new Set<string>();
  for (const output of outputs) {
    for (const m of output.toString("latin1").matchAll(/ERR ([A-Z_]+) |"code":"([A-Z_]+)"/g)) codes.add(m[1] ?? m[2]);
  }
  for (const code of ["BAD_REQUEST", "UNKNOWN_COMMAND", "TOO_LARGE", "FORBIDDEN"]) {
    assert.ok(codes.has(code), `the fuzz provoked ${code} (seen: ${[...codes]})`);
  }
  const after = await info();
  assert.is(after.keys, before.keys, `no key was created (seed ${SEED})`);
  assert.equal(after.commitIndex, before.commitIndex, `nothing was written (seed ${SEED})`);
  const errors = node.events().filter((e) => e.level === "error");
  assert.equal(errors, [], "no error in the node's log (a broken invariant or a failed handler)");

  // The server must forget every fuzz connection once its client is gone.
  const leaked = await waitForConnections(1).then(() => undefined, (error: Error) => error.message);
  const endRss = rss(node.pid);
  console.log(`fuzz: ${payloads.length} connections (${answered} answered), ${mib(sent)} sent, codes ${[...codes].join(",")}; node RSS start ${mib(startRss)}, peak ${mib(peakRss)}, after ${mib(endRss)}`);
  assert.ok(peakRss - startRss < MAX_RSS_GROWTH, `peak RSS ${mib(peakRss)} vs start ${mib(startRss)}`);
  assert.ok(endRss - startRss < MAX_RSS_GROWTH, `RSS after closing ${mib(endRss)} vs start ${mib(startRss)}`);
  assert.is(leaked, undefined, `every closed fuzz connection is closed on the server too (seed ${SEED})`);
});

test("slowloris: a request sent one byte every 50 ms gets the right reply, and others are served meanwhile", async () => {
  const slow = await LineClient.connect(node.port);
  let finished = false;
  const busy = worker(() => finished, { writes: true });
  async function trickle(bytes: Buffer): Promise<void> {
    for (const byte of bytes) {
      slow.write(Buffer.from([byte]));
      await sleep(50);
    }
  }
  await trickle(Buffer.from("PUT slow-key a slow value\n"));
  assert.is(await slow.readLine(), "OK");
  await trickle(encodeResp(["GET", "slow-key"]));
  assert.equal(await slow.readResp(), { type: "bulk", value: Buffer.from("a slow value") });
  finished = true;
  const { requests, worstMs, failures } = await busy;
  slow.destroy();
  assert.equal(failures, []);
  assert.ok(requests >= 20, `others were served meanwhile: ${requests} requests`);
  assert.ok(worstMs < MAX_SERVED_LATENCY_MS, `worst latency meanwhile ${worstMs} ms`);
});

test(`${IDLE_CONNECTIONS} idle connections at once while another client works`, async () => {
  const idle: net.Socket[] = [];
  const baseRss = rss(node.pid);
  const already = await openConnections(); // left over by an earlier test's failure, if any
  try {
    for (let batch = 0; batch < IDLE_CONNECTIONS / 200; batch++) {
      idle.push(...await Promise.all(Array.from({ length: 200 }, () =>
        new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect({ port: node.port, host: "127.0.0.1" });
          s.on("error", () => {});
          s.once("connect", () => resolve(s));
          s.once("error", reject);
          setTimeout(() => reject(new Error("connect timeout")), 5_000).unref();
        })
      )));
    }
    const deadline = Date.now() + 10_000;
    let open = 0;
    while (Date.now() < deadline && (open = await openConnections() - already) < IDLE_CONNECTIONS) await sleep(50);
    assert.is(open, IDLE_CONNECTIONS, "the node holds them all");

    const c = await LineClient.connect(node.port);
    const lines = Array.from({ length: 2000 }, (_, i) => (i % 2 === 0 ? `PUT fz-idle-${i} ${i}` : "GET fz-plain"));
    const replies = await c.requestMany(lines, 10_000);
    assert.is(replies.length, 2000);
    assert.ok(replies.every((r, i) => r === (i % 2 === 0 ? "OK" : "VALUE plain value")), "2,000 pipelined requests served in order");
    let finished = false;
    const busy = worker(() => finished, { writes: true });
    await sleep(500);
    finished = true;
    const { worstMs, failures } = await busy;
    assert.equal(failures, []);
    assert.ok(worstMs < MAX_SERVED_LATENCY_MS, `worst latency with ${IDLE_CONNECTIONS} idle connections: ${worstMs} ms`);
    c.destroy();
    assert.ok(idle.every((s) => !s.destroyed), "no idle connection was dropped (default idle timeout is 300 s)");
    console.log(`${IDLE_CONNECTIONS} idle connections: node RSS ${mib(baseRss)} -> ${mib(rss(node.pid))}`);
  } finally {
    for (const s of idle) s.destroy();
  }
  await waitForConnections(already + 1);
});

test("clients that pipeline 50k GETs and never read: the node keeps serving others with bounded memory", async () => {
  const stuck: net.Socket[] = [];
  const baseRss = rss(node.pid);
  const already = await openConnections();
  let peakRss = baseRss;
  const sampler = setInterval(() => {
    if (node.alive()) peakRss = Math.max(peakRss, rss(node.pid));
  }, 100);
  try {
    // Each GET answers 4 KiB: 50k of them are ~200 MiB per client if nothing pushed back.
    const requests = Buffer.from("GET fz-big\n".repeat(STUCK_GETS));
    for (let i = 0; i < STUCK_CLIENTS; i++) {
      const s = net.connect({ port: node.port, host: "127.0.0.1" });
      s.on("error", () => {});
      s.pause(); // never read a reply
      s.write(requests);
      stuck.push(s);
    }
    // Wait until the node has taken what it will take: its memory stops growing.
    const deadline = Date.now() + 10_000;
    let previous = rss(node.pid);
    for (;;) {
      await sleep(300);
      const now = rss(node.pid);
      if (Math.abs(now - previous) < 1_048_576 || Date.now() > deadline) break;
      previous = now;
    }

    let finished = false;
    const busy = worker(() => finished, { writes: true });
    await sleep(1_000);
    finished = true;
    const { requests: served, worstMs, failures } = await busy;
    assert.equal(failures, []);
    assert.ok(served >= 20, `others were served: ${served} requests`);
    assert.ok(worstMs < MAX_SERVED_LATENCY_MS, `worst latency meanwhile ${worstMs} ms`);
    assert.ok(node.alive());
    const held = rss(node.pid);
    // Unread replies total STUCK_CLIENTS × 50k × 4 KiB (~800 MiB): only pushing back keeps this small.
    assert.ok(peakRss - baseRss < MAX_RSS_GROWTH, `peak RSS ${mib(peakRss)} vs ${mib(baseRss)} before`);
    console.log(`stuck pipeliners: node RSS before ${mib(baseRss)}, peak ${mib(peakRss)}, while stuck ${mib(held)}`);
  } finally {
    clearInterval(sampler);
    for (const s of stuck) s.destroy();
  }
  await waitForConnections(already + 1);
  const after = rss(node.pid);
  assert.ok(after - baseRss < MAX_RSS_GROWTH, `RSS after the stuck clients are gone: ${mib(after)} vs ${mib(baseRss)} before`);
  const c = await LineClient.connect(node.port);
  assert.is(await c.request("PING"), "PONG");
  c.destroy();
});

test("one small write of GETs for a big value, never read: the node holds no more than its output limit", async () => {
  // 1,000 × "GET fz-huge\n" is 12 KiB of requests asking for 1,000 × 512 KiB = 500 MiB of replies.
  const c = await LineClient.connect(node.port);
  assert.is(await c.request(`PUT fz-huge ${"h".repeat(512 * 1024)}`), "OK");
  const baseRss = rss(node.pid);
  let peakRss = baseRss;
  const sampler = setInterval(() => {
    if (node.alive()) peakRss = Math.max(peakRss, rss(node.pid));
  }, 20);
  const s = net.connect({ port: node.port, host: "127.0.0.1" });
  s.on("error", () => {});
  s.pause();
  s.write("GET fz-huge\n".repeat(1000));
  try {
    await sleep(2_000);
    assert.ok(node.alive());
    assert.is(await c.request("PING"), "PONG", "others are still served");
  } finally {
    clearInterval(sampler);
    s.destroy();
    assert.is(await c.request("DELETE fz-huge"), "DELETED");
    c.destroy();
  }
  console.log(`unread big values: node RSS before ${mib(baseRss)}, peak ${mib(peakRss)}`);
  assert.ok(peakRss - baseRss < MAX_RSS_GROWTH, `peak RSS ${mib(peakRss)} vs ${mib(baseRss)} before: the output limit held`);
});

test.run();
