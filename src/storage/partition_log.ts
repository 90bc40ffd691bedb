/**
 * The durable log of one partition on one node: CRC'd records appended with
 * group commit, snapshots, and replay on open.
 *
 * On disk, in `<dir>/<partition>/`:
 * - `log-<16-digit segment number>.seg`: log segments, appended in order
 *   (records: see record.ts). A new segment starts when a snapshot is taken
 *   and when the current one passes {@linkcode SEGMENT_MAX_BYTES}, so old
 *   segments can be deleted whole.
 * - `snap-<16-digit index>.snap`: snapshots (see snapshot.ts).
 * - `*.tmp`: half-written snapshots, deleted at open.
 * - `*.snap.bad`: a newest snapshot that failed its checks and was bypassed.
 *
 * The promised epoch lives in promise records and in every snapshot header;
 * recovery takes the maximum.
 *
 * @module
 */

import { constants } from "node:fs";
import { mkdir, open, readdir, readFile, rename, unlink } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";
import type { LogEntry } from "./entry.ts";
import {
  CorruptionError,
  decodeRecord,
  encodeRecords,
  entryFromRecord,
  isEntryType,
  MAX_U48,
  RecordType,
  scanForRecord,
} from "./record.ts";
import type { DecodedRecord, EncodeRecordsOptions } from "./record.ts";
import {
  captureState,
  fsyncDirectory,
  loadSnapshot,
  parseSnapshotFileName,
  serializeSnapshot,
  serializeSnapshotInSlices,
  snapshotFileName,
  writeAll,
  writeSnapshotFile,
} from "./snapshot.ts";
import type { LoadedSnapshot, SerializedSnapshot } from "./snapshot.ts";

export { CorruptionError } from "./record.ts";

/** A segment that reaches this size is closed and the next batch starts a new one (64 MiB). */
export const SEGMENT_MAX_BYTES = 64 * 1024 * 1024;
/** Largest allowed segmentMaxBytes option (1 GiB). */
const SEGMENT_MAX_BYTES_LIMIT = 1024 * 1024 * 1024;
/** A batch stops taking further append() calls once it holds this many bytes (16 MiB); it always takes at least one call. */
export const BATCH_MAX_BYTES = 16 * 1024 * 1024;
/** Encoded size limit of one append() call (128 MiB). */
export const APPEND_MAX_BYTES = 128 * 1024 * 1024;
/** A torn tail lies inside the last batch, so it can never be longer than this. */
const TORN_TAIL_MAX_BYTES = APPEND_MAX_BYTES + BATCH_MAX_BYTES;
/** CRC work allowed while proving a tail torn (bounds adversarial garbage). */
const TORN_SCAN_MAX_CRC_BYTES = 1024 * 1024 * 1024;
/** Partition names become directory names. */
const PARTITION_NAME = /^[A-Za-z0-9_.-]{1,128}$/;
const SEGMENT_NAME = /^log-(\d{16})\.seg$/;

/** Options for {@linkcode openPartitionLog}. */
export interface PartitionLogOptions {
  /** "always" (default): fsync every batch before resolving. "never": skip the batch fsync (UNSAFE; benchmarks only). */
  fsync?: "always" | "never";
  /** Called for notable events (torn tail cut, segment deleted, snapshot written): one structured object. */
  log?: (level: "info" | "warn", event: string, detail: Record<string, unknown>) => void;
  /** Called after every group-commit batch that wrote bytes (for metrics). Must not throw. */
  onBatch?: (batch: BatchStats) => void;
  /** Start a new segment once the current one reaches this size. Default {@linkcode SEGMENT_MAX_BYTES}; small values are for tests. */
  segmentMaxBytes?: number;
}

/** One group-commit batch, as reported to {@linkcode PartitionLogOptions.onBatch}. */
export interface BatchStats {
  /** Log records in the batch. */
  records: number;
  bytes: number;
  /** From the start of the write to the end of its fsync (or of the write with fsync "never"). */
  ms: number;
}

/** What {@linkcode openPartitionLog} found on disk. */
export interface Recovery {
  /** 0 if never promised. */
  promisedEpoch: number;
  /** The newest valid snapshot. */
  snapshot?: { index: number; epoch: number; state: Map<string, Buffer> };
  /** Log entries after the snapshot index, in index order, truncations applied. */
  entries: LogEntry[];
  /** Bytes cut from the tail (0 if clean). */
  tornTailBytes: number;
}

/** Options of one {@linkcode PartitionLog.append} call. */
export interface AppendOptions {
  /** First drop every entry with index > truncateAfter, durably, in the same batch. */
  truncateAfter?: number;
  /** Durably record this promised epoch before the entries of this call, in the same batch. */
  promisedEpoch?: number;
}

/** Counters for tests and metrics. */
export interface PartitionLogStats {
  /** Batches written (each is one write and, with fsync "always", one fsync). */
  batches: number;
  /** fsync/fdatasync calls on log segments for batches. */
  fsyncs: number;
  /** Records written (entries plus truncate/promise/reset records). */
  records: number;
  /** Bytes written to log segments. */
  bytes: number;
  /** Snapshots written or installed. */
  snapshots: number;
}

interface SegmentInfo {
  seq: number;
  name: string;
  size: number;
  /** Highest entry index written to it (0 if none): it is deletable once a snapshot covers this. */
  maxIndex: number;
  /** Highest promise recorded in it: must be covered by a snapshot header before deletion. */
  maxPromise: number;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
}

interface AppendItem {
  kind: "append";
  bytes: Buffer;
  records: number;
  maxIndex: number;
  promisedEpoch: number;
  done: Deferred<void>;
}

interface RotateItem {
  kind: "rotate";
  /** Resolves with the new segment's number: every earlier segment is complete. */
  done: Deferred<number>;
}

interface InstallItem {
  kind: "install";
  snapshot: SerializedSnapshot;
  /** Earlier snapshot jobs, which must finish first. */
  previous: Promise<void>;
  done: Deferred<void>;
}

type QueueItem = AppendItem | RotateItem | InstallItem;

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function segmentFileName(seq: number): string {
  return `log-${String(seq).padStart(16, "0")}.seg`;
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function noop(): void {}

function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

function checkEpoch(n: number, what: string): void {
  assert(Number.isSafeInteger(n) && n >= 0 && n <= MAX_U48, `${what} must be an integer in [0, 2^48), got ${n}`);
}

/**
 * Opens (creating if needed) the log of one partition in `<dir>/<partition>/`,
 * replaying what is there. Throws {@linkcode CorruptionError} on corruption
 * that is not a torn tail: the node must not start from such a log.
 */
export async function openPartitionLog(
  dir: string,
  partition: string,
  options: PartitionLogOptions = {},
): Promise<{ log: PartitionLog; recovery: Recovery }> {
  assert(PARTITION_NAME.test(partition) && partition !== "." && partition !== "..", `unsafe partition name ${JSON.stringify(partition)}`);
  const segmentMaxBytes = options.segmentMaxBytes ?? SEGMENT_MAX_BYTES;
  // Replay reads a whole segment into memory: keep segments well below Buffer limits.
  assert(
    Number.isSafeInteger(segmentMaxBytes) && segmentMaxBytes > 0 && segmentMaxBytes <= SEGMENT_MAX_BYTES_LIMIT,
    `segmentMaxBytes must be in [1, ${SEGMENT_MAX_BYTES_LIMIT}]`,
  );
  const emit = options.log ?? noop;
  const path = join(dir, partition);
  await mkdir(dir, { recursive: true });
  try {
    await mkdir(path);
    await fsyncDirectory(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  }

  const names = (await readdir(path)).sort();
  let dirChanged = false;
  for (const name of names) {
    if (!name.endsWith(".tmp")) continue;
    await unlink(join(path, name));
    emit("warn", "tmp_deleted", { file: join(path, name) });
    dirChanged = true;
  }
  const segmentSeqs = names
    .map((name) => SEGMENT_NAME.exec(name))
    .filter((m) => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  const snapshotIndexes = names
    .map((name) => parseSnapshotFileName(name))
    .filter((n) => n !== undefined)
    .sort((a, b) => b - a);

  // Newest snapshot that passes its checks; bad newer ones are bypassed only
  // if the log still covers them (checked after replay).
  let base: LoadedSnapshot | undefined;
  const badSnapshots: { file: string; index: number; error: CorruptionError }[] = [];
  for (const index of snapshotIndexes) {
    const file = join(path, snapshotFileName(index));
    try {
      const loaded = await loadSnapshot(file);
      if (loaded.index !== index) {
        throw new CorruptionError(`header index ${loaded.index} does not match the file name`, { file, offset: 8, what: "snapshot" });
      }
      base = loaded;
      break;
    } catch (error) {
      if (!(error instanceof CorruptionError)) throw error;
      badSnapshots.push({ file, index, error });
      emit("warn", "snapshot_bad", { file, why: error.message });
    }
  }
  const baseIndex = base?.index ?? 0;

  const replay = new Replay(baseIndex, base?.promisedEpoch ?? 0);
  // Segments below an installed snapshot's logStartSegment are void: not even read.
  const logStartSegment = base?.logStartSegment ?? 0;
  const segments: SegmentInfo[] = [];
  let tornTailBytes = 0;
  try {
    for (let i = 0; i < segmentSeqs.length; i++) {
      const seq = segmentSeqs[i];
      const name = segmentFileName(seq);
      const info: SegmentInfo = { seq, name, size: 0, maxIndex: 0, maxPromise: 0 };
      if (seq < logStartSegment) {
        segments.push(info);
        continue;
      }
      const cut = await replay.segment(join(path, name), info, { last: i === segmentSeqs.length - 1 });
      if (cut > 0) {
        tornTailBytes = cut;
        emit("warn", "torn_tail", { file: join(path, name), offset: info.size, bytes: cut });
      }
      segments.push(info);
    }
  } catch (error) {
    if (error instanceof CorruptionError && badSnapshots.length > 0) {
      error.message += ` (while replaying after bypassing corrupt snapshot ${badSnapshots[0].file})`;
    }
    throw error;
  }
  if (badSnapshots.length > 0) {
    const newestBad = badSnapshots[0];
    const covered = Math.max(replay.logLast ?? 0, baseIndex);
    if (covered < newestBad.index) {
      const { error } = newestBad;
      throw new CorruptionError(
        `${error.why}; the log and older snapshots reach only index ${covered}, so the state at ${newestBad.index} is lost`,
        { file: error.file, offset: error.offset, what: "snapshot" },
      );
    }
    for (const bad of badSnapshots) {
      await rename(bad.file, bad.file + ".bad");
      emit("warn", "snapshot_bypassed", { file: bad.file, renamedTo: bad.file + ".bad", why: bad.error.message });
    }
    dirChanged = true;
  }

  // Superseded files from a crash between a snapshot and its clean-up.
  if (badSnapshots.length === 0) {
    for (const index of snapshotIndexes) {
      if (index >= baseIndex) continue;
      const file = join(path, snapshotFileName(index));
      await unlink(file);
      emit("info", "snapshot_deleted", { file });
      dirChanged = true;
    }
  }
  const promisedCovered = base?.promisedEpoch ?? 0;
  while (segments.length > 1) {
    const s = segments[0];
    const voidedByReset = s.seq < replay.lastResetSeq || s.seq < logStartSegment;
    const coveredBySnapshot = s.maxIndex <= baseIndex && s.maxPromise <= promisedCovered;
    if (!voidedByReset && !coveredBySnapshot) break;
    await unlink(join(path, s.name));
    emit("info", "segment_deleted", { file: join(path, s.name), maxIndex: s.maxIndex, snapshotIndex: baseIndex });
    segments.shift();
    dirChanged = true;
  }

  let fh: FileHandle;
  if (segments.length === 0) {
    const seq = segmentSeqs.length === 0 ? 1 : segmentSeqs[segmentSeqs.length - 1] + 1;
    const name = segmentFileName(seq);
    fh = await open(join(path, name), segmentFlags(options.fsync ?? "always", { create: true }));
    segments.push({ seq, name, size: 0, maxIndex: 0, maxPromise: 0 });
    dirChanged = true;
  } else {
    fh = await open(join(path, segments[segments.length - 1].name), segmentFlags(options.fsync ?? "always", { create: false }));
  }
  if (dirChanged) await fsyncDirectory(path);
  if (replay.logLast !== null && replay.logLast < baseIndex) {
    // The snapshot got ahead of the durable log (entries lost in a crash
    // after the snapshot was taken): record the jump, so later replays from
    // a newer snapshot still see a contiguous log.
    try {
      const bytes = encodeRecords([], { reset: { index: baseIndex, epoch: base?.epoch ?? 0 } });
      await writeAll(fh, bytes);
      await fh.datasync();
      segments[segments.length - 1].size += bytes.length;
    } catch (error) {
      await fh.close().catch(noop);
      throw error;
    }
  }

  const log = new PartitionLog({
    path,
    fsync: options.fsync ?? "always",
    segmentMaxBytes,
    emit,
    onBatch: options.onBatch,
    fh,
    segments,
    lastIndex: Math.max(replay.logLast ?? 0, baseIndex),
    snapshotIndex: baseIndex,
    promisedEpoch: replay.promisedEpoch,
    entriesSinceSnapshot: replay.entries.length,
    bytesSinceSnapshot: segments.reduce((sum, s) => sum + s.size, 0),
  });
  const recovery: Recovery = { promisedEpoch: replay.promisedEpoch, entries: replay.entries, tornTailBytes };
  if (base !== undefined) recovery.snapshot = { index: base.index, epoch: base.epoch, state: base.state };
  return { log, recovery };
}

/** Applies segment records on top of a snapshot at `baseIndex`, checking the log stays contiguous. */
class Replay {
  /** Effective last index of the log records seen so far; null until the first entry. */
  logLast: number | null = null;
  /** Entries with index > baseIndex: always baseIndex+1, baseIndex+2, ... */
  entries: LogEntry[] = [];
  /** Segment holding the latest reset record (0 if none): earlier segments are void. */
  lastResetSeq = 0;

  constructor(
    private readonly baseIndex: number,
    public promisedEpoch: number,
  ) {}

  /**
   * Replays one segment file; returns the torn-tail bytes cut (only when
   * `last`). Leaves `info.size` at the file's valid length.
   */
  async segment(file: string, info: SegmentInfo, options: { last: boolean }): Promise<number> {
    const buf = await readFile(file);
    const size = buf.length;
    let off = 0;
    while (off < size) {
      const record = decodeRecord(buf, off);
      if (!record.ok) {
        if (!options.last) throw new CorruptionError(`${record.why} (not in the last segment)`, { file, offset: off });
        const tail = size - off;
        if (tail > TORN_TAIL_MAX_BYTES) {
          throw new CorruptionError(`${record.why}; ${tail} bytes follow, more than one batch can hold`, { file, offset: off });
        }
        const found = scanForRecord(buf, off + 1, { end: size, maxCrcBytes: TORN_SCAN_MAX_CRC_BYTES });
        if (found.offset >= 0) {
          throw new CorruptionError(`${record.why}; a valid record follows at offset ${found.offset}`, { file, offset: off });
        }
        if (found.exhausted) {
          throw new CorruptionError(`${record.why}; the ${tail} bytes after it are too costly to prove torn`, { file, offset: off });
        }
        const fh = await open(file, "r+");
        try {
          await fh.truncate(off);
          await fh.sync();
        } finally {
          await fh.close();
        }
        info.size = off;
        return tail;
      }
      this.apply(buf, record, file, off, info);
      off += record.size;
    }
    info.size = size;
    return 0;
  }

  private apply(buf: Buffer, record: DecodedRecord, file: string, offset: number, info: SegmentInfo): void {
    const base = this.baseIndex;
    if (isEntryType(record.type)) {
      const index = record.index;
      const contiguous = this.logLast !== null ? index === this.logLast + 1 : index <= base + 1;
      if (!contiguous) {
        const expected = this.logLast !== null ? `${this.logLast + 1}` : `<= ${base + 1}`;
        throw new CorruptionError(`log gap: entry index ${index}, expected ${expected}`, { file, offset });
      }
      this.logLast = index;
      if (index > info.maxIndex) info.maxIndex = index;
      if (index > base) this.entries.push(entryFromRecord(buf, record));
      return;
    }
    switch (record.type) {
      case RecordType.truncate: {
        const after = record.index;
        if (this.logLast !== null && after < this.logLast) this.logLast = after;
        const keep = Math.max(0, after - base);
        if (keep < this.entries.length) this.entries.length = keep;
        return;
      }
      case RecordType.promise:
        if (record.epoch > this.promisedEpoch) this.promisedEpoch = record.epoch;
        if (record.epoch > info.maxPromise) info.maxPromise = record.epoch;
        return;
      case RecordType.reset:
        if (record.index > base) {
          throw new CorruptionError(
            `log reset to index ${record.index} by an installed snapshot, but the newest usable snapshot is at ${base}`,
            { file, offset },
          );
        }
        this.logLast = record.index;
        this.entries.length = 0;
        this.lastResetSeq = info.seq;
        return;
    }
  }
}

/**
 * Open flags of a log segment: append-only; O_DSYNC when every write must be
 * durable before it returns (each batch is one write).
 */
function segmentFlags(fsync: "always" | "never", { create }: { create: boolean }): number {
  let flags = constants.O_WRONLY | constants.O_APPEND;
  if (create) flags |= constants.O_CREAT | constants.O_EXCL;
  if (fsync === "always") flags |= constants.O_DSYNC;
  return flags;
}

interface PartitionLogInit {
  path: string;
  fsync: "always" | "never";
  segmentMaxBytes: number;
  emit: NonNullable<PartitionLogOptions["log"]>;
  onBatch: ((batch: BatchStats) => void) | undefined;
  fh: FileHandle;
  segments: SegmentInfo[];
  lastIndex: number;
  snapshotIndex: number;
  promisedEpoch: number;
  entriesSinceSnapshot: number;
  bytesSinceSnapshot: number;
}

/**
 * The open log of one partition. Create with {@linkcode openPartitionLog}.
 *
 * One writer loop owns the segment file: append() calls queue encoded
 * records, and the loop writes every queued call as one batch (one write,
 * one fsync), strictly in call order. A write or fsync error is fatal: every
 * pending and later call rejects, and the log must be reopened (after a
 * failed fsync the kernel may have dropped the data, so retrying is unsafe).
 */
export class PartitionLog {
  readonly #path: string;
  readonly #fsync: "always" | "never";
  readonly #segmentMaxBytes: number;
  readonly #emit: NonNullable<PartitionLogOptions["log"]>;
  readonly #onBatch: ((batch: BatchStats) => void) | undefined;
  #fh: FileHandle;
  readonly #segments: SegmentInfo[];
  readonly #queue: QueueItem[] = [];
  #draining: Promise<void> | undefined;
  #failed: Error | undefined;
  #closing: Promise<void> | undefined;
  /** Last index accepted by append() (queued included). */
  #lastIndex: number;
  /** Index of the latest snapshot asked for. */
  #snapshotIndex: number;
  /** Highest promise accepted by append() (queued included). */
  #requestedPromise: number;
  #durablePromise: number;
  #entriesSinceSnapshot: number;
  #bytesSinceSnapshot: number;
  /** Chain of snapshot jobs: files are written and old ones deleted in call order. */
  #snapshotTail: Promise<void> = Promise.resolve();
  readonly #stats: PartitionLogStats = { batches: 0, fsyncs: 0, records: 0, bytes: 0, snapshots: 0 };

  /** Internal: use {@linkcode openPartitionLog}. */
  constructor(init: PartitionLogInit) {
    this.#path = init.path;
    this.#fsync = init.fsync;
    this.#segmentMaxBytes = init.segmentMaxBytes;
    this.#emit = init.emit;
    this.#onBatch = init.onBatch;
    this.#fh = init.fh;
    this.#segments = init.segments;
    this.#lastIndex = init.lastIndex;
    this.#snapshotIndex = init.snapshotIndex;
    this.#requestedPromise = init.promisedEpoch;
    this.#durablePromise = init.promisedEpoch;
    this.#entriesSinceSnapshot = init.entriesSinceSnapshot;
    this.#bytesSinceSnapshot = init.bytesSinceSnapshot;
  }

  /** Entries appended since the last snapshot (at open: entries replayed after it). */
  get entriesSinceSnapshot(): number {
    return this.#entriesSinceSnapshot;
  }

  /** Bytes appended since the last snapshot (at open: bytes of the log segments on disk). */
  get bytesSinceSnapshot(): number {
    return this.#bytesSinceSnapshot;
  }

  /** Last durable promised epoch. */
  get promisedEpoch(): number {
    return this.#durablePromise;
  }

  /** Index of the last entry accepted by append(), including queued ones (or the snapshot index if higher). */
  get lastIndex(): number {
    return this.#lastIndex;
  }

  /** Index of the latest snapshot written, installed or being written. */
  get snapshotIndex(): number {
    return this.#snapshotIndex;
  }

  /** Counters: batches, fsyncs, records, bytes, snapshots. */
  stats(): PartitionLogStats {
    return { ...this.#stats };
  }

  /**
   * Appends entries durably. GROUP COMMIT: every append() call made before the
   * current batch starts writing joins that batch — one write() and one fsync
   * for all of them; calls arriving while a batch's fsync is in flight form the
   * next batch. Resolves only after the batch's fsync (with fsync "always").
   * Batches are written strictly in call order.
   *
   * Contract (violations throw at once, before anything is queued):
   * entries continue the log — the first has index lastIndex + 1 after
   * truncateAfter is applied, each next one +1; an effective truncateAfter
   * (below lastIndex) is not below snapshotIndex; promisedEpoch is not below
   * the highest one passed so far (equal is a no-op that still waits for
   * durability). Resolves once durable; rejects if the log has failed.
   */
  append(entries: readonly LogEntry[], options: AppendOptions = {}): Promise<void> {
    this.#checkUsable();
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    let last = this.#lastIndex;
    const encode: EncodeRecordsOptions = {};
    if (options.truncateAfter !== undefined) {
      const after = options.truncateAfter;
      checkEpoch(after, "truncateAfter");
      if (after < last) {
        assert(after >= this.#snapshotIndex, `truncateAfter ${after} is below the snapshot index ${this.#snapshotIndex}`);
        encode.truncateAfter = after;
        last = after;
      }
    }
    let promise = this.#requestedPromise;
    if (options.promisedEpoch !== undefined) {
      checkEpoch(options.promisedEpoch, "promisedEpoch");
      assert(options.promisedEpoch >= promise, `promisedEpoch ${options.promisedEpoch} is below the promised ${promise}`);
      if (options.promisedEpoch > promise) {
        promise = options.promisedEpoch;
        encode.promisedEpoch = promise;
      }
    }
    for (let i = 0; i < entries.length; i++) {
      const index = entries[i].index;
      if (index !== last + 1) assert(false, `entry index ${index} does not follow ${last}`);
      last = index;
    }
    const bytes = encodeRecords(entries, encode);
    assert(bytes.length <= APPEND_MAX_BYTES, `append of ${bytes.length} bytes exceeds ${APPEND_MAX_BYTES}`);
    this.#lastIndex = last;
    this.#requestedPromise = promise;
    this.#entriesSinceSnapshot += entries.length;
    this.#bytesSinceSnapshot += bytes.length;
    const records = entries.length + (encode.truncateAfter !== undefined ? 1 : 0) + (encode.promisedEpoch !== undefined ? 1 : 0);
    const item: AppendItem = {
      kind: "append",
      bytes,
      records,
      maxIndex: entries.length > 0 ? last : 0,
      promisedEpoch: promise,
      done: deferred(),
    };
    this.#enqueue(item);
    return item.done.promise;
  }

  /**
   * Writes a snapshot of `state` at (index, epoch): the state is serialized
   * synchronously inside this call before any await (the caller's Map keeps
   * changing afterwards), written to a temp file, fsync'd, renamed, directory
   * fsync'd; then log segments holding only entries ≤ index are deleted.
   * Appends made before this call stay in the old segments, later ones go to
   * a new segment; concurrent appends keep working throughout.
   */
  writeSnapshot(index: number, epoch: number, state: Map<string, Buffer>): Promise<void> {
    this.#checkUsable();
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    checkEpoch(index, "snapshot index");
    checkEpoch(epoch, "snapshot epoch");
    assert(index <= this.#lastIndex, `snapshot index ${index} is beyond the last index ${this.#lastIndex}`);
    assert(index >= this.#snapshotIndex, `snapshot index ${index} is below the previous snapshot ${this.#snapshotIndex}`);
    const promisedEpoch = this.#requestedPromise;
    const started = performance.now();
    // The state as of now, by reference; encoded a slice at a time below.
    const captured = captureState(state);
    this.#snapshotIndex = index;
    this.#entriesSinceSnapshot = 0;
    this.#bytesSinceSnapshot = 0;
    const rotate: RotateItem = { kind: "rotate", done: deferred() };
    // Awaited only after the snapshot file is written; a rejection before
    // then must not count as unhandled.
    rotate.done.promise.catch(noop);
    this.#enqueue(rotate);
    const previous = this.#snapshotTail;
    const job = (async () => {
      const serialized = await serializeSnapshotInSlices(captured, { index, epoch, promisedEpoch });
      const serializeMs = performance.now() - started;
      await previous;
      const name = await writeSnapshotFile(this.#path, serialized);
      this.#stats.snapshots++;
      this.#emit("info", "snapshot_written", {
        file: join(this.#path, name),
        index,
        epoch,
        keys: serialized.keys,
        bytes: serialized.bytes,
        serializeMs: Math.round(serializeMs),
        totalMs: Math.round(performance.now() - started),
      });
      const firstNewSegment = await rotate.done.promise;
      await this.#deleteObsolete({ index, promisedEpoch, beforeSegment: firstNewSegment, everything: false });
    })();
    this.#snapshotTail = job.then(noop, noop);
    return job;
  }

  /**
   * A follower installs a snapshot received from its leader: like
   * writeSnapshot, and additionally every log entry (at any index) is
   * discarded, durably, so replay gives exactly `state` at `index`.
   * Appends made after this call must start at index + 1; they are written
   * only once the snapshot is durable.
   */
  installSnapshot(index: number, epoch: number, state: Map<string, Buffer>): Promise<void> {
    this.#checkUsable();
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    checkEpoch(index, "snapshot index");
    checkEpoch(epoch, "snapshot epoch");
    assert(index >= this.#snapshotIndex, `installed snapshot index ${index} is below the current snapshot ${this.#snapshotIndex}`);
    const promisedEpoch = this.#requestedPromise;
    const serialized = serializeSnapshot(state, { index, epoch, promisedEpoch });
    this.#snapshotIndex = index;
    this.#lastIndex = index;
    this.#entriesSinceSnapshot = 0;
    this.#bytesSinceSnapshot = 0;
    const item: InstallItem = {
      kind: "install",
      snapshot: serialized,
      previous: this.#snapshotTail,
      done: deferred(),
    };
    this.#snapshotTail = item.done.promise.then(noop, noop);
    this.#enqueue(item);
    return item.done.promise;
  }

  /** Waits for in-flight batches and snapshots, fsyncs, closes files. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    while (this.#draining !== undefined) await this.#draining;
    await this.#snapshotTail;
    // Snapshot jobs never enqueue, but a drain may still be finishing.
    while (this.#draining !== undefined) await this.#draining;
    try {
      if (this.#failed === undefined) await this.#fh.sync();
    } finally {
      await this.#fh.close();
    }
  }

  #checkUsable(): void {
    if (this.#closing !== undefined) throw new Error(`partition log ${this.#path} is closed`);
  }

  #enqueue(item: QueueItem): void {
    this.#queue.push(item);
    if (this.#draining === undefined) this.#startDrain();
  }

  #startDrain(): void {
    this.#draining = this.#drain().catch((error: unknown) => {
      // #drain handles its own errors; this is a last line of defence.
      this.#failed ??= new Error(`partition log ${this.#path} failed: ${String(error)}`, { cause: error });
      this.#rejectAll(this.#queue.splice(0), this.#failed);
    }).finally(() => {
      this.#draining = undefined;
      if (this.#queue.length > 0) this.#startDrain();
    });
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0) {
      // Let every call of this event-loop turn (and the continuations of the
      // batch just resolved) join the next batch.
      await nextTurn();
      if (this.#failed !== undefined) {
        this.#rejectAll(this.#queue.splice(0), this.#failed);
        return;
      }
      const head = this.#queue[0];
      try {
        if (head.kind === "append") {
          let taken = 1;
          let bytes = head.bytes.length;
          while (taken < this.#queue.length) {
            const next = this.#queue[taken];
            if (next.kind !== "append" || bytes + next.bytes.length > BATCH_MAX_BYTES) break;
            bytes += next.bytes.length;
            taken++;
          }
          const batch = this.#queue.splice(0, taken) as AppendItem[];
          try {
            await this.#writeBatch(batch, bytes);
          } catch (error) {
            this.#rejectAll(batch, error);
            throw error;
          }
        } else if (head.kind === "rotate") {
          this.#queue.shift();
          try {
            head.done.resolve(await this.#rotate());
          } catch (error) {
            head.done.reject(error);
            throw error;
          }
        } else {
          this.#queue.shift();
          try {
            await this.#install(head);
          } catch (error) {
            head.done.reject(error);
            throw error;
          }
        }
      } catch (error) {
        this.#failed = new Error(`partition log ${this.#path} failed and must be reopened: ${String(error)}`, { cause: error });
        this.#emit("warn", "log_failed", { path: this.#path, error: String(error) });
        this.#rejectAll(this.#queue.splice(0), this.#failed);
        return;
      }
    }
  }

  #rejectAll(items: QueueItem[], error: unknown): void {
    for (const item of items) item.done.reject(error);
  }

  async #writeBatch(batch: AppendItem[], bytes: number): Promise<void> {
    const started = this.#onBatch === undefined ? 0 : performance.now();
    if (bytes > 0) {
      if (this.#current().size >= this.#segmentMaxBytes) await this.#rotate();
      let data: Buffer;
      if (batch.length === 1) data = batch[0].bytes;
      else data = Buffer.concat(batch.map((item) => item.bytes), bytes);
      // With --fsync always the segment is open O_DSYNC: the write returns
      // once durable, as write + fdatasync would, in one trip to the thread pool.
      await writeAll(this.#fh, data);
      if (this.#fsync === "always") this.#stats.fsyncs++;
    }
    const segment = this.#current();
    segment.size += bytes;
    let records = 0;
    let promise = this.#durablePromise;
    for (const item of batch) {
      records += item.records;
      if (item.maxIndex > segment.maxIndex) segment.maxIndex = item.maxIndex;
      if (item.promisedEpoch > promise) promise = item.promisedEpoch;
    }
    if (promise > segment.maxPromise) segment.maxPromise = promise;
    this.#durablePromise = promise;
    this.#stats.batches++;
    this.#stats.records += records;
    this.#stats.bytes += bytes;
    if (this.#onBatch !== undefined && bytes > 0) this.#onBatch({ records, bytes, ms: performance.now() - started });
    for (const item of batch) item.done.resolve();
  }

  #current(): SegmentInfo {
    return this.#segments[this.#segments.length - 1];
  }

  /** Starts a new segment; every earlier one is complete (all its batches written). */
  async #rotate(): Promise<number> {
    const seq = this.#current().seq + 1;
    const name = segmentFileName(seq);
    const fh = await open(join(this.#path, name), segmentFlags(this.#fsync, { create: true }));
    await fsyncDirectory(this.#path);
    const old = this.#fh;
    this.#fh = fh;
    this.#segments.push({ seq, name, size: 0, maxIndex: 0, maxPromise: 0 });
    await old.close();
    return seq;
  }

  async #install(item: InstallItem): Promise<void> {
    const { snapshot } = item;
    await item.previous;
    const started = performance.now();
    const firstNewSegment = await this.#rotate();
    // The header voids every older segment by itself: no crash window
    // between "snapshot durable" and "old entries discarded".
    const name = await writeSnapshotFile(this.#path, snapshot, { logStartSegment: firstNewSegment });
    this.#stats.snapshots++;
    // The reset record also marks the jump in the log itself, so that if
    // this snapshot is ever lost, replay from an older one refuses loudly
    // instead of splicing the new log onto the old one.
    const bytes = encodeRecords([], { reset: { index: snapshot.index, epoch: snapshot.epoch } });
    await writeAll(this.#fh, bytes);
    await this.#fh.datasync();
    this.#stats.fsyncs++;
    this.#stats.records++;
    this.#stats.bytes += bytes.length;
    this.#current().size += bytes.length;
    if (snapshot.promisedEpoch > this.#durablePromise) this.#durablePromise = snapshot.promisedEpoch;
    this.#emit("info", "snapshot_installed", {
      file: join(this.#path, name),
      index: snapshot.index,
      epoch: snapshot.epoch,
      keys: snapshot.keys,
      bytes: snapshot.bytes,
      totalMs: Math.round(performance.now() - started),
    });
    await this.#deleteObsolete({
      index: snapshot.index,
      promisedEpoch: snapshot.promisedEpoch,
      beforeSegment: firstNewSegment,
      everything: true,
    });
    item.done.resolve();
  }

  /**
   * Deletes older snapshots and the segments before `beforeSegment` that the
   * new snapshot makes useless: all of them after an install, else the
   * longest prefix holding only entries ≤ index. Failures are reported, not
   * thrown: the snapshot is already durable and stale files are harmless.
   */
  async #deleteObsolete(options: { index: number; promisedEpoch: number; beforeSegment: number; everything: boolean }): Promise<void> {
    let changed = false;
    try {
      for (const name of await readdir(this.#path)) {
        const index = parseSnapshotFileName(name);
        if (index === undefined || index >= options.index) continue;
        await unlink(join(this.#path, name));
        this.#emit("info", "snapshot_deleted", { file: join(this.#path, name) });
        changed = true;
      }
      while (this.#segments.length > 1) {
        const s = this.#segments[0];
        if (s.seq >= options.beforeSegment) break;
        if (!options.everything && (s.maxIndex > options.index || s.maxPromise > options.promisedEpoch)) break;
        await unlink(join(this.#path, s.name));
        this.#segments.shift();
        this.#emit("info", "segment_deleted", { file: join(this.#path, s.name), maxIndex: s.maxIndex, snapshotIndex: options.index });
        changed = true;
      }
      if (changed) await fsyncDirectory(this.#path);
    } catch (error) {
      this.#emit("warn", "cleanup_failed", { path: this.#path, error: String(error) });
    }
  }
}
