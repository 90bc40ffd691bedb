/**
 * Snapshot files: the key-value state at one log index.
 *
 * Layout, all integers big-endian:
 *
 * | offset | bytes | field                                         |
 * |--------|-------|-----------------------------------------------|
 * | 0      | 8     | magic "RKVSNAP1"                              |
 * | 8      | 6     | index (u48): the last log entry in the state   |
 * | 14     | 6     | epoch (u48) of that entry                      |
 * | 20     | 6     | promisedEpoch (u48): the fence, so it survives the deletion of the log segments that recorded it |
 * | 26     | 4     | keyCount (u32)                                 |
 * | 30     | ...   | keyCount × [keyLength u16][valueLength u32][key UTF-8][value] |
 * | end-4  | 4     | crc32 (zlib) of every byte before it           |
 *
 * A snapshot is written to `<name>.tmp`, fsync'd, renamed, and the directory
 * fsync'd, so a crash leaves either the old or the new file, never half of one.
 *
 * @module
 */

import { open, rename, unlink } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { CorruptionError, MAX_KEY_BYTES, MAX_U48, MAX_VALUE_BYTES } from "./record.ts";

const MAGIC = Buffer.from("RKVSNAP1", "latin1");
/** Bytes of the fixed snapshot header. */
export const SNAPSHOT_HEADER_BYTES = 30;
const TRAILER_BYTES = 4;
const ENTRY_HEADER_BYTES = 6;
/** Serialization and load work in chunks of this size: no single huge buffer. */
export const SNAPSHOT_CHUNK_BYTES = 8 * 1024 * 1024;
/** Most keys a snapshot may hold (the count field is a u32). */
export const MAX_SNAPSHOT_KEYS = 2 ** 32 - 1;

/** Header fields of a snapshot. */
export interface SnapshotHeader {
  index: number;
  epoch: number;
  promisedEpoch: number;
}

/** A snapshot serialized in memory, ready to be written. */
export interface SerializedSnapshot {
  /** The file's bytes, in order (header first, CRC trailer last). */
  chunks: Buffer[];
  bytes: number;
  keys: number;
}

/** A snapshot read back from disk. */
export interface LoadedSnapshot extends SnapshotHeader {
  state: Map<string, Buffer>;
  bytes: number;
}

/** File name of the snapshot at `index`: `snap-<16-digit index>.snap`. */
export function snapshotFileName(index: number): string {
  return `snap-${String(index).padStart(16, "0")}.snap`;
}

/** Parses a snapshot file name; undefined if `name` is not one. */
export function parseSnapshotFileName(name: string): number | undefined {
  const m = /^snap-(\d{16})\.snap$/.exec(name);
  return m === null ? undefined : Number(m[1]);
}

/**
 * Serializes `state` synchronously (the caller's Map may change as soon as
 * this returns). Throws on a key or value over its limit.
 */
export function serializeSnapshot(state: ReadonlyMap<string, Buffer>, header: SnapshotHeader): SerializedSnapshot {
  for (const [what, n] of [["index", header.index], ["epoch", header.epoch], ["promisedEpoch", header.promisedEpoch]] as const) {
    if (!Number.isSafeInteger(n) || n < 0 || n > MAX_U48) throw new RangeError(`snapshot ${what} out of range: ${n}`);
  }
  if (state.size > MAX_SNAPSHOT_KEYS) throw new RangeError(`snapshot of ${state.size} keys exceeds ${MAX_SNAPSHOT_KEYS}`);
  const chunks: Buffer[] = [];
  let bytes = 0;
  let crc = 0;
  let chunk = Buffer.allocUnsafe(SNAPSHOT_CHUNK_BYTES);
  MAGIC.copy(chunk, 0);
  chunk.writeUIntBE(header.index, 8, 6);
  chunk.writeUIntBE(header.epoch, 14, 6);
  chunk.writeUIntBE(header.promisedEpoch, 20, 6);
  chunk.writeUInt32BE(state.size, 26);
  let off = SNAPSHOT_HEADER_BYTES;
  for (const [key, value] of state) {
    if (value.length > MAX_VALUE_BYTES) throw new RangeError(`value of key ${JSON.stringify(key.slice(0, 64))} exceeds ${MAX_VALUE_BYTES} bytes`);
    const need = ENTRY_HEADER_BYTES + key.length * 3 + value.length;
    if (chunk.length - off < need) {
      const done = chunk.subarray(0, off);
      crc = crc32(done, crc);
      chunks.push(done);
      bytes += off;
      chunk = Buffer.allocUnsafe(Math.max(SNAPSHOT_CHUNK_BYTES, need));
      off = 0;
    }
    const keyBytes = key.length === 0 ? 0 : chunk.write(key, off + ENTRY_HEADER_BYTES, "utf8");
    if (keyBytes > MAX_KEY_BYTES) throw new RangeError(`key of ${keyBytes} bytes exceeds ${MAX_KEY_BYTES}`);
    chunk.writeUInt16BE(keyBytes, off);
    chunk.writeUInt32BE(value.length, off + 2);
    off += ENTRY_HEADER_BYTES + keyBytes;
    if (value.length > 0) off += value.copy(chunk, off);
  }
  if (chunk.length - off < TRAILER_BYTES) {
    const done = chunk.subarray(0, off);
    crc = crc32(done, crc);
    chunks.push(done);
    bytes += off;
    chunk = Buffer.allocUnsafe(TRAILER_BYTES);
    off = 0;
  }
  crc = crc32(chunk.subarray(0, off), crc);
  chunk.writeUInt32BE(crc, off);
  off += TRAILER_BYTES;
  chunks.push(chunk.subarray(0, off));
  bytes += off;
  return { chunks, bytes, keys: state.size };
}

/** Options for {@linkcode writeSnapshotFile}. */
export interface WriteSnapshotFileOptions {
  /** Called once per fsync (file and directory), for the log's stats. */
  onFsync?: () => void;
}

/**
 * Writes a serialized snapshot durably as `<dir>/snap-<index>.snap`: temp
 * file, fsync, rename, directory fsync. Returns the file name.
 */
export async function writeSnapshotFile(
  dir: string,
  snapshot: SerializedSnapshot & { index: number },
  options: WriteSnapshotFileOptions = {},
): Promise<string> {
  const name = snapshotFileName(snapshot.index);
  const tmp = join(dir, name + ".tmp");
  const fh = await open(tmp, "w");
  try {
    for (const chunk of snapshot.chunks) await writeAll(fh, chunk);
    await fh.sync();
    options.onFsync?.();
  } catch (error) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw error;
  }
  await fh.close();
  await rename(tmp, join(dir, name));
  await fsyncDirectory(dir);
  options.onFsync?.();
  return name;
}

/** Writes all of `data` at the handle's position (loops over short writes). */
export async function writeAll(fh: FileHandle, data: Buffer): Promise<void> {
  let off = 0;
  while (off < data.length) {
    const { bytesWritten } = await fh.write(data, off, data.length - off, null);
    if (bytesWritten <= 0) throw new Error(`write returned ${bytesWritten}`);
    off += bytesWritten;
  }
}

/** Fsyncs a directory, making file creations, renames and deletions in it durable. */
export async function fsyncDirectory(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Reads and verifies the snapshot at `path` (streaming, chunk by chunk).
 * Throws {@linkcode CorruptionError} if it is truncated, malformed or fails
 * its CRC; the state is only returned after the CRC checks.
 */
export async function loadSnapshot(path: string): Promise<LoadedSnapshot> {
  const fh = await open(path, "r");
  try {
    const size = (await fh.stat()).size;
    const reader = new ChunkReader(fh, size);
    const corrupt = (why: string, offset: number) => new CorruptionError(why, { file: path, offset, what: "snapshot" });
    if (size < SNAPSHOT_HEADER_BYTES + TRAILER_BYTES) throw corrupt(`file of ${size} bytes is shorter than a snapshot`, 0);
    await reader.ensure(SNAPSHOT_HEADER_BYTES);
    const head = reader.buf.subarray(reader.pos, reader.pos + SNAPSHOT_HEADER_BYTES);
    if (!head.subarray(0, 8).equals(MAGIC)) throw corrupt("bad magic", 0);
    const index = head.readUIntBE(8, 6);
    const epoch = head.readUIntBE(14, 6);
    const promisedEpoch = head.readUIntBE(20, 6);
    const count = head.readUInt32BE(26);
    reader.pos += SNAPSHOT_HEADER_BYTES;
    const state = new Map<string, Buffer>();
    const bodyEnd = size - TRAILER_BYTES;
    for (let i = 0; i < count; i++) {
      const at = reader.fileOffset();
      if (bodyEnd - at < ENTRY_HEADER_BYTES) throw corrupt(`entry ${i} of ${count} runs past the end`, at);
      await reader.ensure(ENTRY_HEADER_BYTES);
      const keyLength = reader.buf.readUInt16BE(reader.pos);
      const valueLength = reader.buf.readUInt32BE(reader.pos + 2);
      if (keyLength > MAX_KEY_BYTES) throw corrupt(`key length ${keyLength} exceeds ${MAX_KEY_BYTES}`, at);
      if (valueLength > MAX_VALUE_BYTES) throw corrupt(`value length ${valueLength} exceeds ${MAX_VALUE_BYTES}`, at);
      const total = ENTRY_HEADER_BYTES + keyLength + valueLength;
      if (bodyEnd - at < total) throw corrupt(`entry ${i} of ${count} runs past the end`, at);
      await reader.ensure(total);
      const keyStart = reader.pos + ENTRY_HEADER_BYTES;
      const key = keyLength === 0 ? "" : reader.buf.toString("utf8", keyStart, keyStart + keyLength);
      // A copy, so a long-lived value does not pin a whole read chunk.
      const value = Buffer.allocUnsafe(valueLength);
      reader.buf.copy(value, 0, keyStart + keyLength, keyStart + keyLength + valueLength);
      state.set(key, value);
      reader.pos += total;
    }
    const at = reader.fileOffset();
    if (at !== bodyEnd) throw corrupt(`${bodyEnd - at} unexpected bytes after ${count} entries`, at);
    await reader.ensure(TRAILER_BYTES);
    const stored = reader.buf.readUInt32BE(reader.pos);
    if (stored !== reader.crc) throw corrupt(`crc mismatch (stored ${stored}, computed ${reader.crc})`, bodyEnd);
    if (state.size !== count) throw corrupt(`${count - state.size} duplicate keys`, SNAPSHOT_HEADER_BYTES);
    return { index, epoch, promisedEpoch, state, bytes: size };
  } finally {
    await fh.close();
  }
}

/** Sequential reader over a file in bounded chunks; keeps a running CRC of every byte before the trailer. */
class ChunkReader {
  buf: Buffer = Buffer.alloc(0);
  /** Parse position in `buf`. */
  pos = 0;
  /** File offset of `buf[0]`. */
  private bufStart = 0;
  /** Bytes of `buf` holding file data. */
  private filled = 0;
  crc = 0;

  constructor(
    private readonly fh: FileHandle,
    private readonly size: number,
  ) {}

  fileOffset(): number {
    return this.bufStart + this.pos;
  }

  /** Makes `n` bytes available at `pos`; the caller has checked they exist in the file. */
  async ensure(n: number): Promise<void> {
    if (this.filled - this.pos >= n) return;
    const keep = this.filled - this.pos;
    const next = Buffer.allocUnsafe(Math.max(SNAPSHOT_CHUNK_BYTES, n));
    this.buf.copy(next, 0, this.pos, this.filled);
    this.bufStart += this.pos;
    this.buf = next;
    this.pos = 0;
    this.filled = keep;
    const crcEnd = this.size - TRAILER_BYTES;
    while (this.filled < n || this.filled < next.length) {
      const fileAt = this.bufStart + this.filled;
      if (fileAt >= this.size) break;
      const { bytesRead } = await this.fh.read(next, this.filled, next.length - this.filled, fileAt);
      if (bytesRead === 0) break;
      const crcUpTo = Math.min(fileAt + bytesRead, crcEnd);
      if (crcUpTo > fileAt) this.crc = crc32(next.subarray(this.filled, this.filled + (crcUpTo - fileAt)), this.crc);
      this.filled += bytesRead;
    }
    if (this.filled < n) throw new Error(`snapshot file shrank while reading (wanted ${n} bytes at ${this.bufStart})`);
  }
}
