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
 * | 26     | 6     | logStartSegment (u48): log segments numbered below it are void (set by an installed snapshot; 0 otherwise) |
 * | 32     | 4     | keyCount (u32)                                 |
 * | 36     | ...   | keyCount × [keyLength u16][valueLength u32][key UTF-8][value] |
 * | end-4  | 4     | crc32 (zlib) of every byte before it           |
 *
 * A snapshot is written to `<name>.tmp`, fsync'd, renamed, and the directory
 * fsync'd, so a crash leaves either the old or the new file, never half of one.
 * logStartSegment makes an installed snapshot void the old log by itself, so
 * there is no crash window between "snapshot durable" and "old log void".
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
export const SNAPSHOT_HEADER_BYTES = 36;
const LOG_START_SEGMENT_OFFSET = 26;
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

/** A snapshot serialized in memory, ready to be written by {@linkcode writeSnapshotFile}. */
export interface SerializedSnapshot extends SnapshotHeader {
  /** The file's bytes before the CRC trailer, in order; the header is in the first chunk. */
  chunks: Buffer[];
  /** File size, trailer included. */
  bytes: number;
  keys: number;
}

/** A snapshot read back from disk. */
export interface LoadedSnapshot extends SnapshotHeader {
  /** Log segments numbered below this are void (0: none). */
  logStartSegment: number;
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

/** Entries encoded per slice by {@linkcode serializeSnapshotInSlices}: a few ms of work each. */
export const SNAPSHOT_SLICE_ENTRIES = 8192;

/**
 * Serializes `state` synchronously (the caller's Map may change as soon as
 * this returns). Throws on a key or value over its limit.
 */
export function serializeSnapshot(state: ReadonlyMap<string, Buffer>, header: SnapshotHeader): SerializedSnapshot {
  const encoder = new SnapshotEncoder(header, state.size);
  // forEach: several times faster than for-of over 1M keys.
  state.forEach((value, key) => encoder.add(key, value));
  return encoder.finish();
}

/** The state of a Map at one moment, by reference: values are never changed in place, only replaced. */
export interface CapturedState {
  keys: string[];
  values: Buffer[];
}

/**
 * Takes the entries of `state` as they are now (references, not copies: a
 * fraction of the cost of serializing), so that the Map may change while
 * {@linkcode serializeSnapshotInSlices} encodes them.
 */
export function captureState(state: ReadonlyMap<string, Buffer>): CapturedState {
  const keys = new Array<string>(state.size);
  const values = new Array<Buffer>(state.size);
  let i = 0;
  state.forEach((value, key) => {
    keys[i] = key;
    values[i] = value;
    i++;
  });
  return { keys, values };
}

/**
 * Serializes captured entries a slice at a time, yielding to the event loop
 * between slices: a snapshot of a million keys takes a few hundred ms of CPU,
 * which must not stall every request for that long. Same bytes as
 * {@linkcode serializeSnapshot}.
 */
export async function serializeSnapshotInSlices(captured: CapturedState, header: SnapshotHeader): Promise<SerializedSnapshot> {
  const { keys, values } = captured;
  const encoder = new SnapshotEncoder(header, keys.length);
  for (let i = 0; i < keys.length; i++) {
    encoder.add(keys[i], values[i]);
    if ((i + 1) % SNAPSHOT_SLICE_ENTRIES === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  return encoder.finish();
}

/** Builds a snapshot's bytes entry by entry, in chunks of {@linkcode SNAPSHOT_CHUNK_BYTES}. */
class SnapshotEncoder {
  readonly #header: SnapshotHeader;
  readonly #keys: number;
  readonly #chunks: Buffer[] = [];
  #bytes = 0;
  #chunk: Buffer;
  #off = SNAPSHOT_HEADER_BYTES;

  constructor(header: SnapshotHeader, keys: number) {
    for (const [what, n] of [["index", header.index], ["epoch", header.epoch], ["promisedEpoch", header.promisedEpoch]] as const) {
      if (!Number.isSafeInteger(n) || n < 0 || n > MAX_U48) throw new RangeError(`snapshot ${what} out of range: ${n}`);
    }
    if (keys > MAX_SNAPSHOT_KEYS) throw new RangeError(`snapshot of ${keys} keys exceeds ${MAX_SNAPSHOT_KEYS}`);
    this.#header = header;
    this.#keys = keys;
    const chunk = Buffer.allocUnsafe(SNAPSHOT_CHUNK_BYTES);
    MAGIC.copy(chunk, 0);
    chunk.writeUIntBE(header.index, 8, 6);
    chunk.writeUIntBE(header.epoch, 14, 6);
    chunk.writeUIntBE(header.promisedEpoch, 20, 6);
    chunk.writeUIntBE(0, LOG_START_SEGMENT_OFFSET, 6);
    chunk.writeUInt32BE(keys, 32);
    this.#chunk = chunk;
  }

  add(key: string, value: Buffer): void {
    const valueLength = value.length;
    if (valueLength > MAX_VALUE_BYTES) {
      throw new RangeError(`value of key ${JSON.stringify(key.slice(0, 64))} exceeds ${MAX_VALUE_BYTES} bytes`);
    }
    const need = ENTRY_HEADER_BYTES + key.length * 3 + valueLength;
    if (this.#chunk.length - this.#off < need) this.#nextChunk(Math.max(SNAPSHOT_CHUNK_BYTES, need));
    const chunk = this.#chunk;
    const off = this.#off;
    const keyBytes = key.length === 0 ? 0 : chunk.write(key, off + ENTRY_HEADER_BYTES, "utf8");
    if (keyBytes > MAX_KEY_BYTES) throw new RangeError(`key of ${keyBytes} bytes exceeds ${MAX_KEY_BYTES}`);
    // Byte stores: faster than writeUInt*BE in this loop.
    chunk[off] = keyBytes >>> 8;
    chunk[off + 1] = keyBytes & 0xff;
    chunk[off + 2] = valueLength >>> 24;
    chunk[off + 3] = (valueLength >>> 16) & 0xff;
    chunk[off + 4] = (valueLength >>> 8) & 0xff;
    chunk[off + 5] = valueLength & 0xff;
    const valueAt = off + ENTRY_HEADER_BYTES + keyBytes;
    if (valueLength > 0) chunk.set(value, valueAt);
    this.#off = valueAt + valueLength;
  }

  finish(): SerializedSnapshot {
    this.#chunks.push(this.#chunk.subarray(0, this.#off));
    const bytes = this.#bytes + this.#off + TRAILER_BYTES;
    return { ...this.#header, chunks: this.#chunks, bytes, keys: this.#keys };
  }

  #nextChunk(size: number): void {
    this.#chunks.push(this.#chunk.subarray(0, this.#off));
    this.#bytes += this.#off;
    this.#chunk = Buffer.allocUnsafe(size);
    this.#off = 0;
  }
}

/** Options for {@linkcode writeSnapshotFile}. */
export interface WriteSnapshotFileOptions {
  /** Void every log segment numbered below this (an installed snapshot). Default 0: none. */
  logStartSegment?: number;
  /** Called once per fsync (file and directory), for the log's stats. */
  onFsync?: () => void;
}

/**
 * Writes a serialized snapshot durably as `<dir>/snap-<index>.snap`: temp
 * file, fsync, rename, directory fsync. Sets logStartSegment in the header
 * and computes the CRC here, chunk by chunk between writes. Returns the file
 * name.
 */
export async function writeSnapshotFile(
  dir: string,
  snapshot: SerializedSnapshot,
  options: WriteSnapshotFileOptions = {},
): Promise<string> {
  const logStartSegment = options.logStartSegment ?? 0;
  if (!Number.isSafeInteger(logStartSegment) || logStartSegment < 0 || logStartSegment > MAX_U48) {
    throw new RangeError(`logStartSegment out of range: ${logStartSegment}`);
  }
  snapshot.chunks[0].writeUIntBE(logStartSegment, LOG_START_SEGMENT_OFFSET, 6);
  const name = snapshotFileName(snapshot.index);
  const tmp = join(dir, name + ".tmp");
  const fh = await open(tmp, "w");
  try {
    let crc = 0;
    for (const chunk of snapshot.chunks) {
      crc = crc32(chunk, crc);
      await writeAll(fh, chunk);
    }
    const trailer = Buffer.allocUnsafe(TRAILER_BYTES);
    trailer.writeUInt32BE(crc, 0);
    await writeAll(fh, trailer);
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
 * Reads and verifies the snapshot at `path`, streaming in
 * {@linkcode SNAPSHOT_CHUNK_BYTES} chunks. Throws {@linkcode CorruptionError}
 * if it is truncated, malformed or fails its CRC; the state is only returned
 * after the CRC checks.
 *
 * Values are views into the read chunks, not copies (half the load time for
 * 1M small values): a value that lives on keeps its chunk (at most
 * {@linkcode SNAPSHOT_CHUNK_BYTES}) in memory; the state never holds more
 * than the file's size that way.
 */
export async function loadSnapshot(path: string): Promise<LoadedSnapshot> {
  const fh = await open(path, "r");
  try {
    const size = (await fh.stat()).size;
    const corrupt = (why: string, offset: number) => new CorruptionError(why, { file: path, offset, what: "snapshot" });
    if (size < SNAPSHOT_HEADER_BYTES + TRAILER_BYTES) throw corrupt(`file of ${size} bytes is shorter than a snapshot`, 0);
    const reader = new ChunkReader(fh, size);
    await reader.fill(SNAPSHOT_HEADER_BYTES);
    const head = reader.buf.subarray(0, SNAPSHOT_HEADER_BYTES);
    if (!head.subarray(0, 8).equals(MAGIC)) throw corrupt("bad magic", 0);
    const index = head.readUIntBE(8, 6);
    const epoch = head.readUIntBE(14, 6);
    const promisedEpoch = head.readUIntBE(20, 6);
    const logStartSegment = head.readUIntBE(LOG_START_SEGMENT_OFFSET, 6);
    const count = head.readUInt32BE(32);
    reader.pos = SNAPSHOT_HEADER_BYTES;
    const state = new Map<string, Buffer>();
    const bodyEnd = size - TRAILER_BYTES;
    let parsed = 0;
    while (parsed < count) {
      // Parse every entry complete in the current chunk without awaiting.
      const buf = reader.buf;
      const filled = reader.filled;
      const bufStart = reader.bufStart;
      let pos = reader.pos;
      let need = ENTRY_HEADER_BYTES;
      while (parsed < count) {
        if (bufStart + pos + ENTRY_HEADER_BYTES > bodyEnd) throw corrupt(`entry ${parsed} of ${count} runs past the end`, bufStart + pos);
        if (filled - pos < ENTRY_HEADER_BYTES) {
          need = ENTRY_HEADER_BYTES;
          break;
        }
        const keyLength = (buf[pos] << 8) | buf[pos + 1];
        const valueLength = buf.readUInt32BE(pos + 2);
        if (keyLength > MAX_KEY_BYTES) throw corrupt(`key length ${keyLength} exceeds ${MAX_KEY_BYTES}`, bufStart + pos);
        if (valueLength > MAX_VALUE_BYTES) throw corrupt(`value length ${valueLength} exceeds ${MAX_VALUE_BYTES}`, bufStart + pos);
        const total = ENTRY_HEADER_BYTES + keyLength + valueLength;
        if (bufStart + pos + total > bodyEnd) throw corrupt(`entry ${parsed} of ${count} runs past the end`, bufStart + pos);
        if (filled - pos < total) {
          need = total;
          break;
        }
        const keyStart = pos + ENTRY_HEADER_BYTES;
        const valueStart = keyStart + keyLength;
        const key = keyLength === 0 ? "" : buf.toString("utf8", keyStart, valueStart);
        state.set(key, valueLength === 0 ? EMPTY : buf.subarray(valueStart, valueStart + valueLength));
        pos += total;
        parsed++;
      }
      reader.pos = pos;
      if (parsed < count) await reader.fill(need);
    }
    const at = reader.bufStart + reader.pos;
    if (at !== bodyEnd) throw corrupt(`${bodyEnd - at} unexpected bytes after ${count} entries`, at);
    await reader.fill(TRAILER_BYTES);
    const stored = reader.buf.readUInt32BE(reader.pos);
    if (stored !== reader.crc) throw corrupt(`crc mismatch (stored ${stored}, computed ${reader.crc})`, bodyEnd);
    if (state.size !== count) throw corrupt(`${count - state.size} duplicate keys`, SNAPSHOT_HEADER_BYTES);
    return { index, epoch, promisedEpoch, logStartSegment, state, bytes: size };
  } finally {
    await fh.close();
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * Sequential reader over a file in bounded chunks; keeps a running CRC of
 * every byte before the trailer. Chunks are never reused, so views into
 * them stay valid.
 */
class ChunkReader {
  buf: Buffer = Buffer.alloc(0);
  /** Parse position in `buf`. */
  pos = 0;
  /** File offset of `buf[0]`. */
  bufStart = 0;
  /** Bytes of `buf` holding file data. */
  filled = 0;
  crc = 0;

  constructor(
    private readonly fh: FileHandle,
    private readonly size: number,
  ) {}

  /** Makes `n` bytes available at `pos`, moving the unparsed rest into a fresh chunk; the caller has checked they exist. */
  async fill(n: number): Promise<void> {
    if (this.filled - this.pos >= n) return;
    const keep = this.filled - this.pos;
    const next = Buffer.allocUnsafe(Math.max(SNAPSHOT_CHUNK_BYTES, n));
    this.buf.copy(next, 0, this.pos, this.filled);
    this.bufStart += this.pos;
    this.buf = next;
    this.pos = 0;
    this.filled = keep;
    const crcEnd = this.size - TRAILER_BYTES;
    while (this.filled < next.length) {
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
