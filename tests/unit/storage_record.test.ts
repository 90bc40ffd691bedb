import { test } from "uvu";
import * as assert from "uvu/assert";
import { crc32 } from "node:zlib";
import type { LogEntry } from "../../src/storage/entry.ts";
import {
  decodeRecord,
  encodeRecords,
  entryFromRecord,
  MAX_KEY_BYTES,
  MAX_VALUE_BYTES,
  RECORD_HEADER_BYTES,
  RecordType,
  scanForRecord,
} from "../../src/storage/record.ts";
import type { DecodedRecord } from "../../src/storage/record.ts";

function entry(index: number, op: LogEntry["op"], key: string, value: string, epoch = 7): LogEntry {
  return { epoch, index, op, key, value: Buffer.from(value) };
}

function decodeAll(buf: Buffer): DecodedRecord[] {
  const out: DecodedRecord[] = [];
  let off = 0;
  while (off < buf.length) {
    const r = decodeRecord(buf, off);
    if (!r.ok) throw new Error(`bad record at ${off}: ${r.why}`);
    out.push(r);
    off += r.size;
  }
  return out;
}

test("entries round-trip: put, delete, noop, UTF-8 keys, empty and binary values", () => {
  const binary = Buffer.from([0, 255, 10, 13, 0]);
  const entries: LogEntry[] = [
    entry(1, "noop", "", "", 3),
    entry(2, "put", "k", "v"),
    entry(3, "put", "ключ-🔑", ""),
    { epoch: 2 ** 40, index: 2 ** 47, op: "put", key: "bin", value: binary },
    entry(5, "delete", "k", ""),
  ];
  const buf = encodeRecords(entries);
  const records = decodeAll(buf);
  assert.is(records.length, 5);
  const back = records.map((r) => entryFromRecord(buf, r));
  assert.equal(back, entries);
  assert.is(records[0].size, RECORD_HEADER_BYTES);
});

test("control records come first, in the order truncate, promise, then entries", () => {
  const buf = encodeRecords([entry(4, "put", "a", "b")], { truncateAfter: 3, promisedEpoch: 9 });
  const records = decodeAll(buf);
  assert.equal(records.map((r) => r.type), [RecordType.truncate, RecordType.promise, RecordType.put]);
  assert.is(records[0].index, 3);
  assert.is(records[1].epoch, 9);
  const reset = decodeAll(encodeRecords([], { reset: { index: 100, epoch: 5 } }));
  assert.is(reset.length, 1);
  assert.is(reset[0].type, RecordType.reset);
  assert.is(reset[0].index, 100);
  assert.is(reset[0].epoch, 5);
});

test("a flipped byte anywhere in a record fails its check", () => {
  const buf = encodeRecords([entry(1, "put", "key", "value")]);
  for (let i = 0; i < buf.length; i++) {
    const copy = Buffer.from(buf);
    copy[i] ^= 0x40;
    const r = decodeRecord(copy, 0);
    assert.not.ok(r.ok, `flip at byte ${i} went unnoticed`);
  }
});

test("a cut record is incomplete; an impossible length is bad and never allocated", () => {
  const buf = encodeRecords([entry(1, "put", "key", "value")]);
  for (let cut = 0; cut < buf.length; cut++) {
    const r = decodeRecord(buf.subarray(0, cut), 0);
    assert.ok(!r.ok && r.incomplete, `cut at ${cut}`);
  }
  const huge = Buffer.from(buf);
  huge.writeUInt32BE(0xffffffff, 0);
  const r = decodeRecord(huge, 0);
  assert.ok(!r.ok && !r.incomplete);
  assert.match((r as { why: string }).why, /impossible length/);
  const zeros = decodeRecord(Buffer.alloc(64), 0);
  assert.ok(!zeros.ok && !zeros.incomplete);
});

test("limits are enforced when encoding", () => {
  const okKey = "k".repeat(MAX_KEY_BYTES);
  assert.is(decodeAll(encodeRecords([entry(1, "put", okKey, "v")])).length, 1);
  assert.throws(() => encodeRecords([entry(1, "put", okKey + "k", "v")]), /key of 1025 bytes/);
  // 342 three-byte characters: 1026 bytes, though only 342 UTF-16 units.
  assert.throws(() => encodeRecords([entry(1, "put", "€".repeat(342), "v")]), /key of 1026 bytes/);
  const big: LogEntry = { epoch: 1, index: 1, op: "put", key: "k", value: Buffer.alloc(MAX_VALUE_BYTES + 1) };
  assert.throws(() => encodeRecords([big]), /exceeds/);
  assert.throws(() => encodeRecords([entry(1, "noop", "k", "")]), /noop must have an empty key/);
  assert.throws(() => encodeRecords([entry(1, "delete", "k", "v")]), /empty value/);
  assert.throws(() => encodeRecords([entry(0, "put", "k", "v")]), /index must be >= 1/);
  assert.throws(() => encodeRecords([entry(1, "put", "k", "v", -1)]), /out of range/);
  assert.throws(() => encodeRecords([entry(2 ** 48, "put", "k", "v")]), /out of range/);
  assert.throws(() => encodeRecords([], { promisedEpoch: 1.5 }), /out of range/);
});

test("a record with a valid CRC but an impossible structure is rejected", () => {
  // A delete that carries a value, with a correct CRC.
  const buf = encodeRecords([entry(1, "put", "k", "v")]);
  buf[8] = RecordType.delete;
  buf.writeUInt32BE(crc32(buf.subarray(8)), 4);
  const r = decodeRecord(buf, 0);
  assert.ok(!r.ok);
  assert.match((r as { why: string }).why, /carries a value/);
});

test("scanForRecord finds a valid record hidden after garbage, and nothing in pure garbage", () => {
  const rec = encodeRecords([entry(9, "put", "key", "value")]);
  const garbage = Buffer.alloc(1000);
  for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 131 + 17) & 0xff;
  const mixed = Buffer.concat([garbage, rec, garbage]);
  assert.equal(scanForRecord(mixed, 0, { maxCrcBytes: 1 << 20 }), { offset: 1000, exhausted: false });
  assert.equal(scanForRecord(mixed, 1001, { maxCrcBytes: 1 << 20 }), { offset: -1, exhausted: false });
  assert.equal(scanForRecord(garbage, 0, { maxCrcBytes: 1 << 20 }), { offset: -1, exhausted: false });
  assert.equal(scanForRecord(Buffer.alloc(4096), 0, { maxCrcBytes: 0 }), { offset: -1, exhausted: false });
});

test("scanForRecord stops when its CRC budget runs out", () => {
  // Many plausible headers whose CRC never matches.
  const rec = encodeRecords([entry(1, "put", "key", "x".repeat(100))]);
  rec.writeUInt32BE(0, 4);
  const many = Buffer.concat(Array.from({ length: 50 }, () => rec));
  assert.equal(scanForRecord(many, 0, { maxCrcBytes: 1000 }), { offset: -1, exhausted: true });
});

test.run();
