/**
 * The framer: bytes in, frames out, whatever the chunking, with bounded memory.
 */

import { test } from "uvu";
import * as assert from "uvu/assert";
import { DEFAULT_MAX_LINE, Framer, MAX_RESP_ARGS } from "../../src/protocol/framer.ts";
import type { Frame } from "../../src/protocol/framer.ts";
import { parseFrame } from "../../src/protocol/parse.ts";
import { seeded as prng } from "../simulation/prng.ts";

/** A frame with its buffers as strings (latin1 keeps every byte), for deep comparison. */
type Shown =
  | { kind: "line"; bytes: string }
  | { kind: "resp"; args: string[] }
  | { kind: "too_large"; dialect: string }
  | { kind: "resp_error" };

function show(frames: Frame[]): Shown[] {
  return frames.map((frame): Shown => {
    switch (frame.kind) {
      case "line":
        return { kind: "line", bytes: frame.bytes.toString("latin1") };
      case "resp":
        return { kind: "resp", args: frame.args.map((arg) => arg.toString("latin1")) };
      case "too_large":
        return { kind: "too_large", dialect: frame.dialect };
      case "resp_error":
        return { kind: "resp_error" };
    }
  });
}

/** All frames of `input` pushed as one chunk. */
function frame(input: string | Buffer, maxLine?: number): Shown[] {
  const framer = new Framer({ maxLine });
  return show(framer.push(typeof input === "string" ? Buffer.from(input, "latin1") : input));
}

/** All frames of `chunks`, pushed in order. */
function frameChunks(chunks: Buffer[], maxLine?: number): Shown[] {
  const framer = new Framer({ maxLine });
  const out: Frame[] = [];
  for (const chunk of chunks) out.push(...framer.push(chunk));
  return show(out);
}

/** RESP array of bulk strings. */
function resp(...args: (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = typeof arg === "string" ? Buffer.from(arg, "utf8") : arg;
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from("\r\n"));
  }
  return Buffer.concat(parts);
}


/** `bytes` cut at random places (chunk sizes 1..maxChunk). */
function randomSplit(bytes: Buffer, random: () => number, maxChunk: number): Buffer[] {
  const chunks: Buffer[] = [];
  let at = 0;
  while (at < bytes.length) {
    const size = 1 + Math.floor(random() * maxChunk);
    chunks.push(bytes.subarray(at, at + size));
    at += size;
  }
  return chunks;
}

function eachByte(bytes: Buffer): Buffer[] {
  return Array.from(bytes, (b) => Buffer.from([b]));
}

// ------------------------------------------------------------------ lines

test("a line ends at \\n; one \\r before it is dropped (LF and CRLF)", () => {
  assert.equal(frame("GET a\nGET b\r\n"), [
    { kind: "line", bytes: "GET a" },
    { kind: "line", bytes: "GET b" },
  ]);
});

test("only one trailing \\r is dropped; inner \\r stays", () => {
  assert.equal(frame("PUT k a\rb\r\r\n"), [{ kind: "line", bytes: "PUT k a\rb\r" }]);
});

test("empty lines, CRLF-only lines and a lone \\r line give no frame", () => {
  assert.equal(frame("\n\r\n\n\r\nPING\n\n"), [{ kind: "line", bytes: "PING" }]);
});

test("a line without its \\n yet gives no frame until the \\n arrives", () => {
  const framer = new Framer();
  assert.equal(framer.push(Buffer.from("GET ab")), []);
  assert.is(framer.buffered, 6);
  assert.equal(show(framer.push(Buffer.from("c\r"))), []);
  assert.equal(show(framer.push(Buffer.from("\n"))), [{ kind: "line", bytes: "GET abc" }]);
  assert.is(framer.buffered, 0);
});

test("pipelined requests in one chunk come out as many frames, in order", () => {
  const lines = Array.from({ length: 1000 }, (_, i) => `PUT key${i} value ${i}`);
  const frames = frame(lines.join("\r\n") + "\r\n");
  assert.equal(frames, lines.map((bytes) => ({ kind: "line", bytes })));
});

test("JSON lines are lines (parse.ts tells them apart)", () => {
  assert.equal(frame('{"op":"GET","key":"a"}\n'), [{ kind: "line", bytes: '{"op":"GET","key":"a"}' }]);
});

test("line frames own their bytes: changing the chunk afterwards does not change them", () => {
  const chunk = Buffer.from("PUT k v\n");
  const [first] = new Framer().push(chunk);
  chunk.fill(0x78);
  assert.equal(show([first]), [{ kind: "line", bytes: "PUT k v" }]);
});

test("the framer copies what it keeps: a chunk reused after push does not change pending requests", () => {
  const framer = new Framer();
  const reused = Buffer.alloc(8);
  const frames: Frame[] = [];
  const input = Buffer.concat([Buffer.from("GET abc\n"), resp("SET", "k", "value")]);
  for (let at = 0; at < input.length; at += 5) {
    const size = input.copy(reused, 0, at, at + 5);
    frames.push(...framer.push(reused.subarray(0, size)));
    reused.fill(0x21); // Scribble over it, as a pooled reader would.
  }
  assert.equal(show(frames), [{ kind: "line", bytes: "GET abc" }, { kind: "resp", args: ["SET", "k", "value"] }]);
});

// ------------------------------------------------------------------ line limits

test("a line of exactly maxLine bytes passes, with or without \\r", () => {
  const line = "x".repeat(100);
  assert.equal(frame(`${line}\n${line}\r\n`, 100), [
    { kind: "line", bytes: line },
    { kind: "line", bytes: line },
  ]);
});

test("a line one byte past maxLine in one chunk: one too_large, then the next request parses", () => {
  assert.equal(frame(`${"x".repeat(101)}\r\nPING\n`, 100), [
    { kind: "too_large", dialect: "line" },
    { kind: "line", bytes: "PING" },
  ]);
});

test("an over-limit JSON line is too_large in the json dialect", () => {
  assert.equal(frame(`{"op":"PUT","key":"k","value":"${"v".repeat(200)}"}\nPING\n`, 100), [
    { kind: "too_large", dialect: "json" },
    { kind: "line", bytes: "PING" },
  ]);
});

test("an over-limit line across many chunks gives exactly one too_large, then the next request parses", () => {
  const input = Buffer.from(`GET a\n${"y".repeat(5000)}\nGET b\n`);
  const expected = [
    { kind: "line", bytes: "GET a" },
    { kind: "too_large", dialect: "line" },
    { kind: "line", bytes: "GET b" },
  ];
  assert.equal(frameChunks(eachByte(input), 1000), expected);
  assert.equal(frameChunks(randomSplit(input, prng(7), 300), 1000), expected);
});

test("too_large is emitted as soon as the limit is crossed, before the line ends", () => {
  const framer = new Framer({ maxLine: 10 });
  assert.equal(show(framer.push(Buffer.from("x".repeat(11)))), []); // 11 may still end in "\r".
  assert.equal(show(framer.push(Buffer.from("x"))), [{ kind: "too_large", dialect: "line" }]);
  assert.equal(show(framer.push(Buffer.from("x".repeat(50)))), []);
  assert.equal(show(framer.push(Buffer.from("xx\nPING\n"))), [{ kind: "line", bytes: "PING" }]);
});

test("bounded buffering: 10 MiB without a newline holds at most maxLine + 1 bytes", () => {
  const framer = new Framer();
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const frames: Frame[] = [];
  let most = 0;
  for (let sent = 0; sent < 10 * 1024 * 1024; sent += chunk.length) {
    frames.push(...framer.push(chunk));
    most = Math.max(most, framer.buffered);
  }
  assert.ok(most <= DEFAULT_MAX_LINE + 1, `held ${most} bytes`);
  assert.is(framer.buffered, 0); // Discarding now: nothing held.
  frames.push(...framer.push(Buffer.from("\nPING\n")));
  assert.equal(show(frames), [{ kind: "too_large", dialect: "line" }, { kind: "line", bytes: "PING" }]);
});

test("a 512 KiB line fed one byte per chunk frames correctly (no per-chunk growth)", () => {
  const framer = new Framer();
  const one = Buffer.from("z");
  framer.push(Buffer.from("PUT k "));
  for (let i = 0; i < 512 * 1024; i++) framer.push(one);
  assert.is(framer.buffered, 6 + 512 * 1024);
  const frames = framer.push(Buffer.from("\n"));
  assert.is(frames.length, 1);
  assert.is(frames[0].kind === "line" && frames[0].bytes.length, 6 + 512 * 1024);
});

// ------------------------------------------------------------------ RESP

test("a RESP array of bulk strings is one frame", () => {
  assert.equal(frame(resp("SET", "a", "b")), [{ kind: "resp", args: ["SET", "a", "b"] }]);
});

test("RESP bulk strings are binary: \\n, \\r\\n, \\0 and any byte survive", () => {
  const value = Buffer.from([0x00, 0x0a, 0x0d, 0x0a, 0xff, 0x80, 0x2a, 0x24, 0x00]);
  const frames = new Framer().push(resp("SET", "bin", value));
  assert.is(frames.length, 1);
  const only = frames[0];
  assert.ok(only.kind === "resp");
  if (only.kind === "resp") assert.ok(only.args[2].equals(value));
});

test("empty bulk strings are allowed", () => {
  assert.equal(frame("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"), [{ kind: "resp", args: ["SET", "k", ""] }]);
});

test("*0 and *-1 give no frame (Redis ignores them)", () => {
  assert.equal(frame(Buffer.concat([Buffer.from("*0\r\n*-1\r\n"), resp("PING")])), [
    { kind: "resp", args: ["PING"] },
  ]);
});

test("RESP, lines and JSON mix on one stream, request by request", () => {
  const input = Buffer.concat([resp("GET", "a"), Buffer.from("GET b\n"), Buffer.from('{"key":"c"}\r\n'), resp("PING")]);
  assert.equal(frame(input), [
    { kind: "resp", args: ["GET", "a"] },
    { kind: "line", bytes: "GET b" },
    { kind: "line", bytes: '{"key":"c"}' },
    { kind: "resp", args: ["PING"] },
  ]);
});

test("many pipelined RESP requests in one chunk", () => {
  const requests = Array.from({ length: 500 }, (_, i) => resp("SET", `key:${i}`, `v${i}`));
  const frames = frame(Buffer.concat(requests));
  assert.is(frames.length, 500);
  assert.equal(frames[499], { kind: "resp", args: ["SET", "key:499", "v499"] });
});

test("RESP bulk split across chunks is reassembled", () => {
  const value = Buffer.alloc(300_000, 0x41);
  const input = resp("SET", "big", value);
  const frames = frameChunks(randomSplit(input, prng(3), 5000));
  assert.equal(frames, [{ kind: "resp", args: ["SET", "big", value.toString("latin1")] }]);
});

// ------------------------------------------------------------------ RESP limits

test("a RESP array with more than MAX_RESP_ARGS elements is skipped exactly and gives too_large", () => {
  const many = Array.from({ length: MAX_RESP_ARGS + 1 }, () => "k");
  const input = Buffer.concat([resp("EXISTS", ...many), resp("PING")]);
  assert.equal(frame(input), [{ kind: "too_large", dialect: "resp" }, { kind: "resp", args: ["PING"] }]);
});

test("a RESP array with exactly MAX_RESP_ARGS elements passes", () => {
  const args = ["EXISTS", ...Array.from({ length: MAX_RESP_ARGS - 1 }, (_, i) => `k${i}`)];
  const frames = frame(resp(...args));
  assert.is(frames.length, 1);
  assert.is(frames[0].kind === "resp" && frames[0].args.length, MAX_RESP_ARGS);
});

test("a bulk string longer than maxLine is skipped exactly, holding nothing, then sync holds", () => {
  const value = Buffer.alloc(5000, 0x0a); // Newlines inside must not resync early.
  const input = Buffer.concat([resp("SET", "k", value), resp("GET", "k")]);
  const framer = new Framer({ maxLine: 1000 });
  const frames: Frame[] = [];
  for (const chunk of randomSplit(input, prng(11), 700)) {
    frames.push(...framer.push(chunk));
    assert.ok(framer.buffered <= 1001);
  }
  assert.equal(show(frames), [{ kind: "too_large", dialect: "resp" }, { kind: "resp", args: ["GET", "k"] }]);
});

test("bulk strings totalling more than maxLine make the array too_large", () => {
  const input = Buffer.concat([resp("SET", "k".repeat(60), "v".repeat(60)), resp("PING")]);
  assert.equal(frame(input, 100), [{ kind: "too_large", dialect: "resp" }, { kind: "resp", args: ["PING"] }]);
  // At the limit exactly, it passes: 3 + 47 + 50 = 100.
  assert.equal(frame(resp("SET", "k".repeat(47), "v".repeat(50)), 100).length, 1);
  assert.equal(frame(resp("SET", "k".repeat(47), "v".repeat(50)), 100)[0].kind, "resp");
});

test("bounded buffering: a declared 10 MiB bulk fed in chunks holds nothing", () => {
  const framer = new Framer();
  const size = 10 * 1024 * 1024;
  framer.push(Buffer.from(`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$${size}\r\n`));
  const chunk = Buffer.alloc(64 * 1024, 0x62);
  let most = 0;
  const frames: Frame[] = [];
  for (let sent = 0; sent < size; sent += chunk.length) {
    frames.push(...framer.push(chunk));
    most = Math.max(most, framer.buffered);
  }
  assert.ok(most <= DEFAULT_MAX_LINE + 1, `held ${most} bytes`);
  frames.push(...framer.push(Buffer.concat([Buffer.from("\r\n"), resp("PING")])));
  assert.equal(show(frames), [{ kind: "too_large", dialect: "resp" }, { kind: "resp", args: ["PING"] }]);
});

// ------------------------------------------------------------------ malformed RESP

/**
 * Each malformed request, and the lines left over after resyncing at the next
 * "\n" (they become requests of their own); a good request after it must parse.
 */
const MALFORMED: [string, string, string[]][] = [
  ["non-digit count", "*x\r\n", []],
  ["count without \\r", "*1\n", []],
  ["empty count", "*\r\n", []],
  ["negative count other than -1", "*-2\r\n", []],
  ["non-digit bulk length", "*2\r\n$abc\r\n", []],
  ["bulk length with junk after \\r", "*1\r\n$3\rx\n", []],
  ["nested array", "*2\r\n*1\r\n$1\r\na\r\n", ["$1", "a"]],
  ["null bulk string inside a request", "*2\r\n$3\r\nGET\r\n$-1\r\n", []],
  ["an element that is not a bulk string", "*2\r\n$3\r\nGET\r\n:1\r\n", []],
  ["bulk longer than its declared length", "*1\r\n$3\r\nPINGX\r\n", []],
  ["bulk shorter than declared (its \\r is taken as data)", "*1\r\n$5\r\nPING\r\nX\n", ["X"]],
  ["missing \\r\\n after the bulk", "*1\r\n$4\r\nPINGxy\n", []],
  ["a header longer than any real one", `*${"1".repeat(40)}\r\n`, []],
  ["count past 16 digits", "*12345678901234567\r\n", []],
];

for (const [name, bad, leftovers] of MALFORMED) {
  test(`malformed RESP (${name}) gives one resp_error, then a good frame parses`, () => {
    const input = Buffer.concat([Buffer.from(bad, "latin1"), resp("GET", "k")]);
    const expected = [
      { kind: "resp_error" },
      ...leftovers.map((bytes) => ({ kind: "line", bytes })),
      { kind: "resp", args: ["GET", "k"] },
    ];
    assert.equal(frame(input), expected);
    assert.equal(frameChunks(eachByte(input)), expected);
  });
}

test("a resp_error frame carries a message", () => {
  const [error] = new Framer().push(Buffer.from("*2\r\n*1\r\n"));
  assert.is(error.kind, "resp_error");
  assert.match(error.kind === "resp_error" ? error.message : "", /Protocol error: expected '\$', got '\*'/);
});

test("after a RESP error mid-array the rest of the array is read as new requests (resync at \\n)", () => {
  // Redis closes the connection here; we keep it and resync, so the leftovers get their own replies.
  assert.equal(frame("*2\r\n$-1\r\n$4\r\nPING\r\n"), [
    { kind: "resp_error" },
    { kind: "line", bytes: "$4" },
    { kind: "line", bytes: "PING" },
  ]);
});

// ------------------------------------------------------------------ chunking equivalence

/** A stream with every kind of request, well-formed and not. */
function corpus(): Buffer {
  const parts: Buffer[] = [];
  for (let round = 0; round < 20; round++) {
    parts.push(
      Buffer.from(`PUT key${round} a value with  spaces and ünïcödé ${round}\r\n`),
      Buffer.from("\n\r\n"),
      Buffer.from(`GET key${round}\n`),
      Buffer.from(`{"op":"PUT","key":"j${round}","value":"line\\nbreak"}\n`),
      resp("SET", `bin${round}`, Buffer.from([0, 10, 13, 10, 255, round])),
      Buffer.from("*0\r\n"),
      Buffer.from(`${"L".repeat(150)}\n`), // Over the 100-byte limit used below.
      resp("SET", "k", "v".repeat(120)), // Over the limit too.
      Buffer.from("*2\r\n$3\r\nGET\r\n$x\r\n"), // Malformed.
      Buffer.from("*1\r\n$4\r\nPINGxx\r\n"), // Malformed.
      resp("DEL", `key${round}`),
      Buffer.from(`x`.repeat(100) + "\r\n"), // Exactly at the limit.
    );
  }
  return Buffer.concat(parts);
}

test("any chunking gives the same frames as one chunk (seeded random splits, and byte by byte)", () => {
  const input = corpus();
  const whole = frame(input, 100);
  assert.is(whole.filter((f) => f.kind === "too_large").length, 40);
  assert.is(whole.filter((f) => f.kind === "resp_error").length, 40);
  assert.equal(frameChunks(eachByte(input), 100), whole);
  for (let seed = 1; seed <= 200; seed++) {
    const random = prng(seed);
    const chunks = randomSplit(input, random, 1 + Math.floor(random() * 200));
    assert.equal(frameChunks(chunks, 100), whole, `seed ${seed}`);
  }
});

test("random garbage: any chunking gives the same frames, and every frame parses without throwing", () => {
  // Bytes drawn mostly from the protocol's own alphabet, so headers, bulks and lines all occur.
  const alphabet = Buffer.from("*$\r\n\r\n0123-{}\" PUTGETSETDEL\x00\xff");
  for (let seed = 1; seed <= 100; seed++) {
    const random = prng(1000 + seed);
    const input = Buffer.alloc(2000);
    for (let k = 0; k < input.length; k++) input[k] = alphabet[Math.floor(random() * alphabet.length)];
    const framer = new Framer({ maxLine: 64 });
    const frames = framer.push(input);
    for (const f of frames) parseFrame(f, { maxLine: 64 });
    assert.equal(frameChunks(randomSplit(input, random, 50), 64), show(frames), `seed ${seed}`);
    assert.ok(framer.buffered <= 65);
  }
});

test.run();
