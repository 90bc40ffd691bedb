/**
 * Pure encoding and decoding of log records (no I/O).
 *
 * One record, all integers big-endian:
 *
 * | offset | bytes | field                                                     |
 * |--------|-------|-----------------------------------------------------------|
 * | 0      | 4     | bodyLength: bytes after the crc field (15 + k + v)        |
 * | 4      | 4     | crc32 (zlib) of the body, i.e. of bytes 8 .. 8+bodyLength |
 * | 8      | 1     | type: 1 put, 2 delete, 3 noop, 4 truncate, 5 promise, 6 reset |
 * | 9      | 6     | epoch, u48                                                |
 * | 15     | 6     | index, u48                                                |
 * | 21     | 2     | keyLength k, u16                                          |
 * | 23     | k     | key, UTF-8                                                |
 * | 23+k   | v     | value (v = bodyLength - 15 - k)                           |
 *
 * - put / delete / noop: a {@linkcode LogEntry}. delete has no value; noop has
 *   neither key nor value.
 * - truncate: `index` = truncateAfter, epoch 0; drops every earlier-written
 *   entry with a greater index.
 * - promise: `epoch` = the promised epoch (the replication fence), index 0.
 * - reset: `index`/`epoch` of a snapshot installed from a leader; every
 *   earlier-written entry is void and the log continues at index + 1.
 *
 * truncate, promise and reset carry no key and no value.
 *
 * @module
 */

import { crc32 } from "node:zlib";
import type { EntryOp, LogEntry } from "./entry.ts";

/** Bytes before the body: length and crc. */
export const RECORD_PREFIX_BYTES = 8;
/** Fixed part of the body: type, epoch, index, keyLength. */
export const RECORD_BODY_FIXED_BYTES = 15;
/** Bytes of a record with an empty key and an empty value. */
export const RECORD_HEADER_BYTES = RECORD_PREFIX_BYTES + RECORD_BODY_FIXED_BYTES;
/** Longest key, in UTF-8 bytes. */
export const MAX_KEY_BYTES = 1024;
/** Longest value, in bytes (64 MiB). */
export const MAX_VALUE_BYTES = 64 * 1024 * 1024;
/** Longest possible body; a length field above it is corruption or a torn tail, never an allocation. */
export const MAX_RECORD_BODY_BYTES = RECORD_BODY_FIXED_BYTES + MAX_KEY_BYTES + MAX_VALUE_BYTES;
/** Largest epoch or index a record can hold (u48). */
export const MAX_U48 = 2 ** 48 - 1;

/** Record type codes, as stored in the type byte. */
export const RecordType = {
  put: 1,
  delete: 2,
  noop: 3,
  truncate: 4,
  promise: 5,
  reset: 6,
} as const;

/** A record type code. */
export type RecordTypeCode = (typeof RecordType)[keyof typeof RecordType];

const OP_TO_TYPE: Record<EntryOp, RecordTypeCode> = {
  put: RecordType.put,
  delete: RecordType.delete,
  noop: RecordType.noop,
};
const TYPE_TO_OP: readonly (EntryOp | undefined)[] = [undefined, "put", "delete", "noop"];
const EMPTY = Buffer.alloc(0);

/**
 * Thrown when stored data fails its checks (bad CRC, impossible length, a gap
 * in the log). The node must refuse to start rather than serve from it.
 */
export class CorruptionError extends Error {
  /** File holding the bad bytes. */
  file: string;
  /** Byte offset of the bad record (or of the failing part of a snapshot). */
  offset: number;
  /** What is wrong, without the file and offset. */
  why: string;

  /** `message` reads `corrupt <what> in <file> at offset <offset>: <why>`. */
  constructor(why: string, options: CorruptionErrorOptions) {
    super(`corrupt ${options.what ?? "record"} in ${options.file} at offset ${options.offset}: ${why}`);
    this.name = "CorruptionError";
    this.file = options.file;
    this.offset = options.offset;
    this.why = why;
  }
}

/** Where a {@linkcode CorruptionError} was found. */
export interface CorruptionErrorOptions {
  file: string;
  offset: number;
  /** What was corrupt; defaults to "record". */
  what?: "record" | "snapshot";
}

/** Options for {@linkcode encodeRecords}: the control records written before the entries. */
export interface EncodeRecordsOptions {
  /** Write a truncate record first (drop entries with index > truncateAfter). */
  truncateAfter?: number;
  /** Write a promise record (after the truncate record, before the entries). */
  promisedEpoch?: number;
  /** Write a reset record (an installed snapshot at this index and epoch). */
  reset?: { index: number; epoch: number };
}

/**
 * Encodes `entries`, preceded by the control records `options` asks for, into
 * ONE buffer ready for a single write. Throws on a field out of range, so a
 * bad entry never reaches the disk.
 */
export function encodeRecords(entries: readonly LogEntry[], options: EncodeRecordsOptions = {}): Buffer {
  // Upper bound: a UTF-16 code unit never takes more than 3 UTF-8 bytes.
  let bound = 3 * RECORD_HEADER_BYTES;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    bound += RECORD_HEADER_BYTES + e.key.length * 3 + e.value.length;
  }
  const buf = Buffer.allocUnsafe(bound);
  let off = 0;
  if (options.reset !== undefined) {
    checkU48(options.reset.index, "reset index");
    checkU48(options.reset.epoch, "reset epoch");
    off = writeRecord(buf, off, RecordType.reset, options.reset.epoch, options.reset.index, "", EMPTY);
  }
  if (options.truncateAfter !== undefined) {
    checkU48(options.truncateAfter, "truncateAfter");
    off = writeRecord(buf, off, RecordType.truncate, 0, options.truncateAfter, "", EMPTY);
  }
  if (options.promisedEpoch !== undefined) {
    checkU48(options.promisedEpoch, "promisedEpoch");
    off = writeRecord(buf, off, RecordType.promise, options.promisedEpoch, 0, "", EMPTY);
  }
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    const type = OP_TO_TYPE[e.op];
    if (type === undefined) throw new RangeError(`entry ${e.index}: unknown op ${String(e.op)}`);
    checkU48(e.epoch, "entry epoch");
    checkU48(e.index, "entry index");
    if (e.index < 1) throw new RangeError(`entry index must be >= 1, got ${e.index}`);
    if (typeof e.key !== "string") throw new TypeError(`entry ${e.index}: key must be a string`);
    if (!Buffer.isBuffer(e.value)) throw new TypeError(`entry ${e.index}: value must be a Buffer`);
    if (e.value.length > MAX_VALUE_BYTES) {
      throw new RangeError(`entry ${e.index}: value of ${e.value.length} bytes exceeds ${MAX_VALUE_BYTES}`);
    }
    if (type !== RecordType.put && e.value.length !== 0) {
      throw new RangeError(`entry ${e.index}: ${e.op} must have an empty value`);
    }
    if (type === RecordType.noop && e.key.length !== 0) throw new RangeError(`entry ${e.index}: noop must have an empty key`);
    off = writeRecord(buf, off, type, e.epoch, e.index, e.key, e.value);
  }
  return buf.subarray(0, off);
}

function checkU48(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0 || n > MAX_U48) throw new RangeError(`${what} out of range: ${n}`);
}

function writeRecord(
  buf: Buffer,
  off: number,
  type: RecordTypeCode,
  epoch: number,
  index: number,
  key: string,
  value: Buffer,
): number {
  const keyStart = off + RECORD_HEADER_BYTES;
  const keyBytes = key.length === 0 ? 0 : buf.write(key, keyStart, "utf8");
  if (keyBytes > MAX_KEY_BYTES) throw new RangeError(`key of ${keyBytes} bytes exceeds ${MAX_KEY_BYTES}`);
  if (value.length > 0) buf.set(value, keyStart + keyBytes);
  const body = RECORD_BODY_FIXED_BYTES + keyBytes + value.length;
  buf.writeUInt32BE(body, off);
  buf[off + 8] = type;
  buf.writeUIntBE(epoch, off + 9, 6);
  buf.writeUIntBE(index, off + 15, 6);
  buf.writeUInt16BE(keyBytes, off + 21);
  const end = off + RECORD_PREFIX_BYTES + body;
  buf.writeUInt32BE(crc32(buf.subarray(off + RECORD_PREFIX_BYTES, end)), off + 4);
  return end;
}

/** A record that passed every check; offsets point into the buffer it was decoded from. */
export interface DecodedRecord {
  ok: true;
  type: RecordTypeCode;
  epoch: number;
  index: number;
  keyStart: number;
  keyLength: number;
  valueLength: number;
  /** Whole record size in bytes, prefix included. */
  size: number;
}

/** Why the bytes at an offset are not a valid record. */
export interface BadRecord {
  ok: false;
  why: string;
  /** The record would extend past the end of the data (a torn write looks like this). */
  incomplete: boolean;
}

/**
 * Checks and decodes the record at `offset` in `buf` (pass a subarray to
 * stop earlier). Reads only the header before the length is known to be
 * possible, so garbage never causes a large read or allocation.
 */
export function decodeRecord(buf: Buffer, offset: number): DecodedRecord | BadRecord {
  const left = buf.length - offset;
  if (left < RECORD_PREFIX_BYTES) return bad(`partial record header (${left} bytes)`, true);
  const body = buf.readUInt32BE(offset);
  if (body < RECORD_BODY_FIXED_BYTES || body > MAX_RECORD_BODY_BYTES) return bad(`impossible length ${body}`, false);
  if (body > left - RECORD_PREFIX_BYTES) {
    return bad(`record of ${RECORD_PREFIX_BYTES + body} bytes extends past the end (${left} bytes left)`, true);
  }
  const bodyStart = offset + RECORD_PREFIX_BYTES;
  const stored = buf.readUInt32BE(offset + 4);
  const actual = crc32(buf.subarray(bodyStart, bodyStart + body));
  if (stored !== actual) return bad(`crc mismatch (stored ${hex(stored)}, computed ${hex(actual)})`, false);
  const why = structureProblem(buf, offset, body);
  if (why !== undefined) return bad(why, false);
  const keyLength = buf.readUInt16BE(offset + 21);
  return {
    ok: true,
    type: buf[offset + 8] as RecordTypeCode,
    epoch: buf.readUIntBE(offset + 9, 6),
    index: buf.readUIntBE(offset + 15, 6),
    keyStart: offset + RECORD_HEADER_BYTES,
    keyLength,
    valueLength: body - RECORD_BODY_FIXED_BYTES - keyLength,
    size: RECORD_PREFIX_BYTES + body,
  };
}

function bad(why: string, incomplete: boolean): BadRecord {
  return { ok: false, why, incomplete };
}

function hex(n: number): string {
  return "0x" + n.toString(16).padStart(8, "0");
}

/** Checks type and key/value lengths of a body whose length is already known to fit. */
function structureProblem(buf: Buffer, offset: number, body: number): string | undefined {
  const type = buf[offset + 8];
  if (type < RecordType.put || type > RecordType.reset) return `unknown record type ${type}`;
  const keyLength = buf.readUInt16BE(offset + 21);
  if (keyLength > MAX_KEY_BYTES) return `key length ${keyLength} exceeds ${MAX_KEY_BYTES}`;
  if (RECORD_BODY_FIXED_BYTES + keyLength > body) return `key length ${keyLength} exceeds the record`;
  const valueLength = body - RECORD_BODY_FIXED_BYTES - keyLength;
  if (valueLength > MAX_VALUE_BYTES) return `value length ${valueLength} exceeds ${MAX_VALUE_BYTES}`;
  if (type === RecordType.put) return undefined;
  if (valueLength !== 0) return `record type ${type} carries a value`;
  if (type !== RecordType.delete && keyLength !== 0) return `record type ${type} carries a key`;
  if (type <= RecordType.noop && buf.readUIntBE(offset + 15, 6) === 0) return "entry index 0";
  return undefined;
}

/** Builds the {@linkcode LogEntry} of a decoded put/delete/noop record; the value is copied out of `buf`. */
export function entryFromRecord(buf: Buffer, record: DecodedRecord): LogEntry {
  const op = TYPE_TO_OP[record.type];
  if (op === undefined) throw new RangeError(`record type ${record.type} is not an entry`);
  const keyEnd = record.keyStart + record.keyLength;
  const key = record.keyLength === 0 ? "" : buf.toString("utf8", record.keyStart, keyEnd);
  let value = EMPTY;
  if (record.valueLength > 0) {
    // A copy, so a long-lived value does not pin the whole segment buffer.
    value = Buffer.allocUnsafe(record.valueLength);
    buf.copy(value, 0, keyEnd, keyEnd + record.valueLength);
  }
  return { epoch: record.epoch, index: record.index, op, key, value };
}

/** True for put, delete and noop: the record types that are log entries. */
export function isEntryType(type: RecordTypeCode): boolean {
  return type <= RecordType.noop;
}

/** Options for {@linkcode scanForRecord}. */
export interface ScanForRecordOptions {
  /** End of the data to scan (exclusive); defaults to `buf.length`. */
  end?: number;
  /** Give up after computing CRCs over this many bytes (bounds adversarial input). */
  maxCrcBytes: number;
}

/** Result of {@linkcode scanForRecord}. */
export interface ScanForRecordResult {
  /** Offset of the first valid record found, or -1. */
  offset: number;
  /** The CRC budget ran out before the scan finished: nothing can be concluded. */
  exhausted: boolean;
}

/**
 * Looks for a valid record starting at any byte offset >= `from`: a valid
 * record after a bad one proves the bad one is corruption, not a torn tail.
 * Cheap header checks run before any CRC.
 */
export function scanForRecord(buf: Buffer, from: number, options: ScanForRecordOptions): ScanForRecordResult {
  const end = options.end ?? buf.length;
  let budget = options.maxCrcBytes;
  for (let p = from; p + RECORD_HEADER_BYTES <= end; p++) {
    const body = buf.readUInt32BE(p);
    if (body < RECORD_BODY_FIXED_BYTES || body > MAX_RECORD_BODY_BYTES) continue;
    if (body > end - p - RECORD_PREFIX_BYTES) continue;
    if (structureProblem(buf, p, body) !== undefined) continue;
    budget -= body;
    if (budget < 0) return { offset: -1, exhausted: true };
    const bodyStart = p + RECORD_PREFIX_BYTES;
    if (crc32(buf.subarray(bodyStart, bodyStart + body)) === buf.readUInt32BE(p + 4)) {
      return { offset: p, exhausted: false };
    }
  }
  return { offset: -1, exhausted: false };
}
