/**
 * Peer message lines: every message type survives a round trip byte for
 * byte; anything malformed is a CodecError (never another exception, never
 * a half-valid message).
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { CodecError, decodeMessage, encodeMessage, MAX_KEY_BYTES, MESSAGE_PREFIX } from "../../src/replication/codec.ts";
import type { LogEntry, PeerMessage } from "../../src/replication/types.ts";
import { Prng } from "../simulation/prng.ts";

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

function entries(count: number, epoch = 3, first = 1): LogEntry[] {
  return Array.from({ length: count }, (_, i) => ({
    epoch,
    index: first + i,
    op: i % 3 === 2 ? "delete" : "put",
    key: `key:${i}`,
    value: i % 3 === 2 ? Buffer.alloc(0) : Buffer.from(`value ${i}`),
  }));
}

const SAMPLES: PeerMessage[] = [
  { type: "promise", partition: "block-1", from: "n1", to: "n2", epoch: 7 },
  {
    type: "promise_reply",
    partition: "block-1",
    from: "n2",
    to: "n1",
    epoch: 7,
    ok: true,
    promisedEpoch: 7,
    lastEpoch: 5,
    lastIndex: 120,
    commitIndex: 100,
    firstIndex: 51,
  },
  { type: "fetch", partition: "block-1", from: "n1", to: "n2", epoch: 7, fromIndex: 101, maxEntries: 256 },
  {
    type: "fetch_reply",
    partition: "block-1",
    from: "n2",
    to: "n1",
    epoch: 7,
    fromIndex: 101,
    ok: true,
    entries: [
      { epoch: 5, index: 101, op: "put", key: "ключ ✓", value: ALL_BYTES },
      { epoch: 5, index: 102, op: "put", key: "nl", value: Buffer.from("line one\nline two\r\n") },
      { epoch: 6, index: 103, op: "noop", key: "", value: Buffer.alloc(0) },
    ],
    lastIndex: 120,
    snapshotNeeded: false,
    promisedEpoch: 7,
  },
  {
    type: "replicate",
    partition: "block-1",
    from: "n1",
    to: "n3",
    epoch: 7,
    prevEpoch: 6,
    prevIndex: 103,
    entries: entries(5, 7, 104),
    commitIndex: 103,
    readSeq: 42,
  },
  {
    type: "replicate_reply",
    partition: "block-1",
    from: "n3",
    to: "n1",
    epoch: 7,
    ok: false,
    matchIndex: 0,
    lastIndex: 99,
    promisedEpoch: 9,
    readSeq: 0,
  },
];

function roundTrip(message: PeerMessage): PeerMessage {
  const line = encodeMessage(message);
  assert.ok(line.startsWith(MESSAGE_PREFIX));
  assert.not.ok(line.includes("\n"), "one line");
  assert.not.ok(line.includes("\r"), "no carriage return either");
  return decodeMessage(line.slice(MESSAGE_PREFIX.length));
}

function rejects(rest: string, pattern: RegExp): void {
  assert.throws(
    () => decodeMessage(rest),
    (error: unknown) => error instanceof CodecError && pattern.test((error as Error).message),
    `expected CodecError ${pattern} for ${rest.slice(0, 80)}`,
  );
}

function json(message: PeerMessage): Record<string, unknown> {
  return JSON.parse(encodeMessage(message).slice(MESSAGE_PREFIX.length));
}

test("every message type survives a round trip, values byte for byte", () => {
  for (const message of SAMPLES) assert.equal(roundTrip(message), message);
});

test("an empty replicate (a heartbeat) round-trips", () => {
  const heartbeat: PeerMessage = {
    type: "replicate",
    partition: "p",
    from: "a",
    to: "b",
    epoch: 1,
    prevEpoch: 0,
    prevIndex: 0,
    entries: [],
    commitIndex: 0,
    readSeq: 0,
  };
  assert.equal(roundTrip(heartbeat), heartbeat);
});

test("garbage that is not a JSON object is refused", () => {
  rejects("", /not JSON/);
  rejects("{", /not JSON/);
  rejects("[1,2]", /not a JSON object/);
  rejects("null", /not a JSON object/);
  rejects('"promise"', /not a JSON object/);
  rejects('{"type":"vote","partition":"p","from":"a","to":"b","epoch":1}', /unknown peer message type/);
  rejects("{}", /unknown peer message type/);
});

test("missing, extra and mistyped fields are refused", () => {
  const promise = json(SAMPLES[0]);
  const { epoch: _, ...missing } = promise;
  rejects(JSON.stringify(missing), /expected 5 fields/);
  rejects(JSON.stringify({ ...promise, extra: 1 }), /expected 5 fields/);
  rejects(JSON.stringify({ ...missing, epoch2: 7 }), /promise\.epoch/);
  rejects(JSON.stringify({ ...promise, epoch: "7" }), /promise\.epoch: expected an integer/);
  rejects(JSON.stringify({ ...promise, epoch: -1 }), /promise\.epoch/);
  rejects(JSON.stringify({ ...promise, epoch: 1.5 }), /promise\.epoch/);
  rejects(JSON.stringify({ ...promise, epoch: 2 ** 60 }), /promise\.epoch/);
  rejects(JSON.stringify({ ...promise, from: "" }), /promise\.from/);
  rejects(JSON.stringify({ ...promise, to: "x".repeat(257) }), /promise\.to/);
  rejects(JSON.stringify({ ...promise, partition: 5 }), /promise\.partition/);
  const reply = json(SAMPLES[1]);
  rejects(JSON.stringify({ ...reply, ok: "true" }), /promise_reply\.ok: expected true or false/);
  rejects(JSON.stringify({ ...reply, firstIndex: 0 }), /promise_reply\.firstIndex: expected an integer >= 1/);
  rejects(JSON.stringify({ ...json(SAMPLES[2]), fromIndex: 0 }), /fetch\.fromIndex/);
  rejects(JSON.stringify({ ...json(SAMPLES[2]), maxEntries: 0 }), /fetch\.maxEntries/);
});

test("malformed entries are refused: shape, op, key, value, index", () => {
  const base = json(SAMPLES[4]);
  const withEntries = (list: unknown) => JSON.stringify({ ...base, entries: list });
  rejects(withEntries("[]"), /entries: expected an array/);
  rejects(withEntries([[7, 1, "put", "k"]]), /entries\[0\]: expected \[epoch, index, op, key, value\]/);
  rejects(withEntries([{ epoch: 7 }]), /entries\[0\]: expected/);
  rejects(withEntries([[7, 0, "put", "k", ""]]), /entries\[0\]\.index/);
  rejects(withEntries([[-1, 1, "put", "k", ""]]), /entries\[0\]\.epoch/);
  rejects(withEntries([[7, 1, "set", "k", ""]]), /entries\[0\]\.op/);
  rejects(withEntries([[7, 1, "toString", "k", ""]]), /entries\[0\]\.op/);
  rejects(withEntries([[7, 1, "put", "", ""]]), /entries\[0\]\.key/);
  rejects(withEntries([[7, 1, "put", "é".repeat(MAX_KEY_BYTES / 2 + 1), ""]]), /entries\[0\]\.key: expected 1 to 1024 bytes/);
  rejects(withEntries([[7, 1, "put", 5, ""]]), /entries\[0\]\.key/);
  rejects(withEntries([[7, 1, "noop", "k", ""]]), /a noop has no key/);
  rejects(withEntries([[7, 1, "delete", "k", "AAAA"]]), /a delete has no value/);
  rejects(withEntries([[7, 1, "put", "k", "not base64!"]]), /invalid base64/);
  rejects(withEntries([[7, 1, "put", "k", "AAA"]]), /invalid base64/);
  rejects(withEntries([[7, 1, "put", "k", null]]), /expected a base64 string/);
  // The largest key is fine.
  const key = "é".repeat(MAX_KEY_BYTES / 2);
  const decoded = decodeMessage(withEntries([[7, 1, "put", key, "dg=="]]));
  assert.equal(decoded.type === "replicate" && decoded.entries[0], { epoch: 7, index: 1, op: "put", key, value: Buffer.from("v") });
});

test("random mutations of valid lines give a valid message or a CodecError, nothing else", () => {
  const rng = new Prng(20240611);
  const alphabet = '{}[]":,0123456789-.eE truefalsn\\u00"abcxyz=+/';
  const lines = SAMPLES.map((m) => encodeMessage(m).slice(MESSAGE_PREFIX.length));
  let decoded = 0;
  let refused = 0;
  for (let i = 0; i < 20_000; i++) {
    let line = rng.pick(lines);
    const edits = rng.range(1, 4);
    for (let e = 0; e < edits; e++) {
      const at = rng.int(line.length + 1);
      const roll = rng.int(3);
      const char = alphabet[rng.int(alphabet.length)];
      if (roll === 0) line = line.slice(0, at) + char + line.slice(at + 1);
      else if (roll === 1) line = line.slice(0, at) + line.slice(at + 1);
      else line = line.slice(0, at) + char + line.slice(at);
    }
    try {
      const message = decodeMessage(line);
      decoded++;
      // Whatever decodes is a well-formed message: it round-trips.
      assert.equal(roundTrip(message), message);
    } catch (error) {
      if (!(error instanceof CodecError)) throw new Error(`non-codec error for ${line}: ${error}`);
      refused++;
    }
  }
  assert.ok(refused > 10_000, `${refused} refused`);
  assert.ok(decoded > 0, "some mutations (e.g. of digits) stay valid");
});

test("a batch of 256 small entries encodes and decodes fast", () => {
  const message: PeerMessage = {
    type: "replicate",
    partition: "block-1",
    from: "n1",
    to: "n2",
    epoch: 12,
    prevEpoch: 12,
    prevIndex: 1000,
    entries: entries(256, 12, 1001),
    commitIndex: 999,
    readSeq: 7,
  };
  const rounds = 300;
  const started = performance.now();
  let bytes = 0;
  for (let i = 0; i < rounds; i++) {
    const line = encodeMessage(message);
    bytes += line.length;
    decodeMessage(line.slice(MESSAGE_PREFIX.length));
  }
  const perRound = (performance.now() - started) / rounds;
  console.log(`  codec: 256-entry replicate encode+decode ${perRound.toFixed(3)} ms (${Math.round(bytes / rounds)} bytes)`);
  // Generous bound for a shared machine: the real figure is far below it.
  assert.ok(perRound < 10, `${perRound} ms per 256-entry round trip`);
});

test.run();
