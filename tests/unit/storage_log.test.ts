import { test } from "uvu";
import * as assert from "uvu/assert";
import { appendFile, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LogEntry } from "../../src/storage/entry.ts";
import { CorruptionError, openPartitionLog } from "../../src/storage/partition_log.ts";
import type { PartitionLogOptions } from "../../src/storage/partition_log.ts";
import { encodeRecords } from "../../src/storage/record.ts";
import {
  captureState,
  serializeSnapshot,
  serializeSnapshotInSlices,
  SNAPSHOT_SLICE_ENTRIES,
  writeSnapshotFile,
} from "../../src/storage/snapshot.ts";

const P = "block-1";

/** Runs `body` with a fresh temp dir, removed afterwards whatever happens. */
async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await tempDir();
  try {
    await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Opens the log at `dir`, which must be refused with a CorruptionError; returns it. */
async function openRefused(dir: string): Promise<CorruptionError> {
  try {
    await openPartitionLog(dir, P);
  } catch (error) {
    assert.instance(error, CorruptionError);
    return error as CorruptionError;
  }
  assert.unreachable("should refuse");
  throw new Error("unreachable");
}

async function tempDir(): Promise<string> {
  return await mkdtemp(join(tmpdir(), "ringkv-storage-test-"));
}

function put(index: number, key: string, value: string, epoch = 1): LogEntry {
  return { epoch, index, op: "put", key, value: Buffer.from(value) };
}

function del(index: number, key: string, epoch = 1): LogEntry {
  return { epoch, index, op: "delete", key, value: Buffer.alloc(0) };
}

function puts(from: number, to: number, epoch = 1, prefix = "v"): LogEntry[] {
  const out: LogEntry[] = [];
  for (let i = from; i <= to; i++) out.push(put(i, `k${i % 7}`, `${prefix}${i}`, epoch));
  return out;
}

function applyAll(state: Map<string, Buffer>, entries: readonly LogEntry[]): Map<string, Buffer> {
  for (const e of entries) {
    if (e.op === "put") state.set(e.key, e.value);
    else if (e.op === "delete") state.delete(e.key);
  }
  return state;
}

function asStrings(state: Map<string, Buffer>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of [...state].sort(([a], [b]) => (a < b ? -1 : 1))) out[k] = v.toString();
  return out;
}

async function files(dir: string): Promise<string[]> {
  return (await readdir(join(dir, P))).sort();
}

async function segmentFiles(dir: string): Promise<string[]> {
  return (await files(dir)).filter((n) => n.endsWith(".seg"));
}

function events(): { log: NonNullable<PartitionLogOptions["log"]>; seen: { level: string; event: string; detail: Record<string, unknown> }[] } {
  const seen: { level: string; event: string; detail: Record<string, unknown> }[] = [];
  return { log: (level, event, detail) => seen.push({ level, event, detail }), seen };
}

test("append then reopen gives the same entries, and a fresh log is empty", async () => {
  await withTempDir(async (dir) => {
    const first = await openPartitionLog(dir, P);
    assert.equal(first.recovery, { promisedEpoch: 0, entries: [], tornTailBytes: 0 });
    const entries = [
      { epoch: 1, index: 1, op: "noop", key: "", value: Buffer.alloc(0) } as LogEntry,
      put(2, "a", "1"),
      put(3, "ключ", "∑"),
      del(4, "a"),
      { epoch: 2, index: 5, op: "put", key: "bin", value: Buffer.from([0, 1, 255]) } as LogEntry,
    ];
    await first.log.append(entries.slice(0, 2));
    await first.log.append(entries.slice(2));
    assert.is(first.log.lastIndex, 5);
    await first.log.close();
    const again = await openPartitionLog(dir, P);
    assert.equal(again.recovery.entries, entries);
    assert.is(again.recovery.tornTailBytes, 0);
    assert.is(again.log.lastIndex, 5);
    assert.is(again.log.entriesSinceSnapshot, 5);
    await again.log.append([put(6, "b", "2")]);
    await again.log.close();
    const third = await openPartitionLog(dir, P);
    assert.equal(third.recovery.entries.map((e) => e.index), [1, 2, 3, 4, 5, 6]);
    await third.log.close();
  });
});

test("group commit: 100 append() calls in one tick are one batch, one write, one fsync", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    await log.append([put(1, "warm", "up")]);
    const before = log.stats();
    const pending: Promise<void>[] = [];
    for (let i = 2; i <= 101; i++) pending.push(log.append([put(i, `k${i}`, `v${i}`)]));
    await Promise.all(pending);
    const after = log.stats();
    assert.is(after.batches - before.batches, 1);
    assert.is(after.fsyncs - before.fsyncs, 1);
    assert.is(after.records - before.records, 100);
    await log.close();
  });
});

test("onBatch reports every batch: its records, bytes and time", async () => {
  await withTempDir(async (dir) => {
    const batches: Array<{ records: number; bytes: number; ms: number }> = [];
    const { log } = await openPartitionLog(dir, P, { onBatch: (batch) => batches.push(batch) });
    await log.append([put(1, "a", "1")]);
    await Promise.all([log.append([put(2, "b", "2")]), log.append([put(3, "c", "3"), put(4, "d", "4")])]);
    assert.equal(batches.map((b) => b.records), [1, 3]);
    const stats = log.stats();
    assert.is(batches.reduce((sum, b) => sum + b.bytes, 0), stats.bytes);
    assert.ok(batches.every((b) => b.ms >= 0 && b.bytes > 0));
    await log.close();
  });
});

test("calls made after a batch started writing form the next batch, and order is kept", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    const resolved: number[] = [];
    const pending: Promise<void>[] = [];
    const add = (i: number) => pending.push(log.append([put(i, `k${i}`, `v${i}`)]).then(() => void resolved.push(i)));
    for (let i = 1; i <= 50; i++) add(i);
    // setImmediate callbacks run in order: the log's batch starts writing before this one runs.
    await new Promise<void>((resolve) =>
      setImmediate(() => {
        for (let i = 51; i <= 100; i++) add(i);
        resolve();
      })
    );
    await Promise.all(pending);
    assert.is(log.stats().batches, 2);
    assert.is(log.stats().fsyncs, 2);
    assert.equal(resolved, Array.from({ length: 100 }, (_, i) => i + 1));
    await log.close();
    const again = await openPartitionLog(dir, P);
    assert.equal(again.recovery.entries.map((e) => e.value.toString()), Array.from({ length: 100 }, (_, i) => `v${i + 1}`));
    await again.log.close();
  });
});

test("an entry that does not continue the log is refused at once", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    assert.throws(() => log.append([put(2, "a", "b")]), /entry index 2 does not follow 0/);
    await log.append([put(1, "a", "b")]);
    assert.throws(() => log.append([put(1, "a", "b")]), /does not follow 1/);
    assert.throws(() => log.append([put(2, "a", "b"), put(4, "a", "b")]), /entry index 4 does not follow 2/);
    assert.throws(() => log.append([], { promisedEpoch: -1 }), /promisedEpoch/);
    // A refused call changes nothing.
    assert.is(log.lastIndex, 1);
    await log.append([put(2, "a", "c")]);
    await log.close();
  });
});

test("truncateAfter drops the uncommitted suffix durably, in the same batch", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    await log.append(puts(1, 10, 1));
    const before = log.stats();
    await log.append(puts(6, 7, 2, "w"), { truncateAfter: 5 });
    assert.is(log.stats().batches - before.batches, 1);
    assert.is(log.lastIndex, 7);
    // Truncating past the end is a no-op and writes nothing.
    await log.append([], { truncateAfter: 100 });
    await log.close();
    const again = await openPartitionLog(dir, P);
    const got = again.recovery.entries.map((e) => `${e.index}@${e.epoch}:${e.value}`);
    assert.equal(got, ["1@1:v1", "2@1:v2", "3@1:v3", "4@1:v4", "5@1:v5", "6@2:w6", "7@2:w7"]);
    // A truncation with no new entries, then reopen.
    await again.log.append([], { truncateAfter: 3 });
    assert.is(again.log.lastIndex, 3);
    await again.log.close();
    const third = await openPartitionLog(dir, P);
    assert.equal(third.recovery.entries.map((e) => e.index), [1, 2, 3]);
    assert.is(third.log.lastIndex, 3);
    await third.log.close();
  });
});

test("the promised epoch survives reopen, and snapshot plus segment deletion", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    const pending = log.append([], { promisedEpoch: 41 });
    assert.is(log.promisedEpoch, 0, "not durable before the batch's fsync");
    await pending;
    assert.is(log.promisedEpoch, 41);
    await log.append(puts(1, 5, 41), { promisedEpoch: 42 });
    assert.throws(() => log.append([], { promisedEpoch: 40 }), /below the promised 42/);
    await log.close();

    const second = await openPartitionLog(dir, P);
    assert.is(second.recovery.promisedEpoch, 42);
    assert.is(second.log.promisedEpoch, 42);
    const segmentsBefore = await segmentFiles(dir);
    await second.log.writeSnapshot(5, 41, applyAll(new Map(), second.recovery.entries));
    const segmentsAfter = await segmentFiles(dir);
    assert.not.equal(segmentsAfter, segmentsBefore);
    for (const name of segmentsBefore) assert.not.ok(segmentsAfter.includes(name), `${name} should be deleted`);
    await second.log.close();

    const third = await openPartitionLog(dir, P);
    assert.is(third.recovery.promisedEpoch, 42);
    assert.is(third.recovery.snapshot?.index, 5);
    assert.equal(third.recovery.entries, []);
    await third.log.close();
  });
});

test("snapshot, concurrent appends and truncation replay to the same state", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    // The committed history, as the replication core would apply it.
    const history: LogEntry[] = [];
    let nextIndex = 1;
    const batch = (n: number, epoch: number): LogEntry[] =>
      Array.from({ length: n }, () => {
        const index = nextIndex++;
        const key = `key-${rand(50)}`;
        return rand(4) === 0 ? del(index, key, epoch) : put(index, key, `val-${index}-${rand(1000)}`, epoch);
      });
    const first = batch(300, 1);
    await log.append(first);
    history.push(...first);

    // Snapshot at 200 while 100 more entries are appended concurrently.
    const snapshotState = applyAll(new Map(), history.slice(0, 200));
    const concurrent: Promise<void>[] = [];
    const snap = log.writeSnapshot(200, 1, snapshotState);
    snapshotState.set("mutated-after-call", Buffer.from("must not be in the snapshot"));
    for (let i = 0; i < 10; i++) {
      const entries = batch(10, 1);
      history.push(...entries);
      concurrent.push(log.append(entries));
    }
    await Promise.all([snap, ...concurrent]);
    assert.is(log.entriesSinceSnapshot, 100);

    // A new leader's follower discards an uncommitted suffix.
    history.length = 350;
    const replacement = Array.from({ length: 20 }, (_, i) => put(351 + i, `key-${i}`, `epoch2-${i}`, 2));
    await log.append(replacement, { truncateAfter: 350 });
    history.push(...replacement);
    await log.close();

    const again = await openPartitionLog(dir, P);
    assert.is(again.recovery.snapshot?.index, 200);
    assert.not.ok(again.recovery.snapshot?.state.has("mutated-after-call"));
    assert.equal(again.recovery.entries.map((e) => e.index), Array.from({ length: 170 }, (_, i) => 201 + i));
    const replayed = applyAll(new Map(again.recovery.snapshot?.state), again.recovery.entries);
    assert.equal(asStrings(replayed), asStrings(applyAll(new Map(), history)));
    assert.is(again.log.lastIndex, 370);
    await again.log.close();
  });
});

test("segments holding entries above the snapshot index are kept", async () => {
  await withTempDir(async (dir) => {
    const seen = events();
    const { log } = await openPartitionLog(dir, P, { log: seen.log });
    await log.append(puts(1, 10));
    const oldSegments = await segmentFiles(dir);
    // Snapshot at 5 while the old segment still holds 6..10.
    await log.writeSnapshot(5, 1, applyAll(new Map(), puts(1, 5)));
    await log.append(puts(11, 12));
    const segments = await segmentFiles(dir);
    assert.ok(segments.includes(oldSegments[0]), "old segment still needed for 6..10");
    assert.is(segments.length, 2);
    // The next snapshot covers it.
    await log.writeSnapshot(12, 1, applyAll(new Map(), puts(1, 12)));
    assert.is((await segmentFiles(dir)).length, 1);
    assert.equal((await files(dir)).filter((n) => n.endsWith(".snap")), ["snap-0000000000000012.snap"]);
    // Routine housekeeping is logged at info, not as a warning.
    const routine = seen.seen.filter((e) => ["snapshot_written", "snapshot_deleted", "segment_deleted"].includes(e.event));
    assert.ok(routine.length >= 3 && routine.every((e) => e.level === "info"), JSON.stringify(routine));
    await log.close();
    const again = await openPartitionLog(dir, P);
    assert.is(again.recovery.snapshot?.index, 12);
    assert.equal(again.recovery.entries, []);
    assert.is(again.log.lastIndex, 12);
    await again.log.append([put(13, "x", "y")]);
    await again.log.close();
  });
});

test("installSnapshot discards every log entry, durably", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    await log.append(puts(1, 30, 1, "stale"), { promisedEpoch: 3 });
    const leaderState = new Map([["from-leader", Buffer.from("yes")]]);
    // Installing at 20 (below our last index 30): entries 21..30 must go too.
    const install = log.installSnapshot(20, 4, leaderState);
    assert.is(log.lastIndex, 20);
    const after = log.append([put(21, "after", "install", 4)]);
    await Promise.all([install, after]);
    assert.is((await segmentFiles(dir)).length, 1);
    await log.close();

    const again = await openPartitionLog(dir, P);
    assert.is(again.recovery.snapshot?.index, 20);
    assert.is(again.recovery.snapshot?.epoch, 4);
    assert.equal(asStrings(again.recovery.snapshot!.state), { "from-leader": "yes" });
    assert.equal(again.recovery.entries.map((e) => `${e.index}:${e.key}`), ["21:after"]);
    assert.is(again.recovery.promisedEpoch, 3);
    // A follower far behind installs a snapshot beyond its last index.
    await again.log.installSnapshot(1000, 5, new Map([["far", Buffer.from("ahead")]]));
    await again.log.append([put(1001, "next", "1", 5)]);
    await again.log.close();

    const third = await openPartitionLog(dir, P);
    assert.is(third.recovery.snapshot?.index, 1000);
    assert.equal(third.recovery.entries.map((e) => e.index), [1001]);
    await third.log.close();
  });
});

test("a reset record whose installed snapshot is missing is refused loudly", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    await log.append(puts(1, 5));
    await log.installSnapshot(50, 2, new Map());
    await log.close();
    await rm(join(dir, P, "snap-0000000000000050.snap"));
    const error = await openRefused(dir);
    assert.match(error.message, /log reset to index 50 by an installed snapshot/);
  });
});

test("a torn tail is cut, reported, and the log works and reopens clean", async () => {
  for (const tail of ["partial", "garbage", "zeros"] as const) {
    const dir = await tempDir();
    try {
      const { log } = await openPartitionLog(dir, P);
      await log.append(puts(1, 5));
      await log.close();
      const [segment] = await segmentFiles(dir);
      const file = join(dir, P, segment);
      const goodSize = (await stat(file)).size;
      let junk: Buffer;
      if (tail === "partial") junk = encodeRecords([put(6, "key", "a value cut short by a crash")]).subarray(0, 40);
      else if (tail === "zeros") junk = Buffer.alloc(4096);
      else junk = Buffer.from(Array.from({ length: 777 }, (_, i) => (i * 89 + 3) & 0xff));
      await appendFile(file, junk);

      const seen = events();
      const reopened = await openPartitionLog(dir, P, { log: seen.log });
      assert.is(reopened.recovery.tornTailBytes, junk.length, tail);
      assert.equal(reopened.recovery.entries.map((e) => e.index), [1, 2, 3, 4, 5]);
      const torn = seen.seen.find((e) => e.event === "torn_tail");
      assert.equal(torn?.detail, { file, offset: goodSize, bytes: junk.length });
      assert.is(torn?.level, "warn", "a cut tail is worth an operator's look");
      assert.is((await stat(file)).size, goodSize);
      await reopened.log.append([put(6, "after", "tear")]);
      await reopened.log.close();

      const clean = await openPartitionLog(dir, P);
      assert.is(clean.recovery.tornTailBytes, 0);
      assert.equal(clean.recovery.entries.map((e) => e.index), [1, 2, 3, 4, 5, 6]);
      await clean.log.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
});

test("corruption in the middle is refused with the file and offset", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    await log.append(puts(1, 20));
    await log.close();
    const [segment] = await segmentFiles(dir);
    const file = join(dir, P, segment);
    const bytes = await readFile(file);
    const recordSize = encodeRecords([put(1, "k1", "v1")]).length;
    const offset = 2 * recordSize; // the third record (index 3)
    bytes[offset + recordSize - 1] ^= 0x01; // last value byte of that record
    await writeFile(file, bytes);
    const e = await openRefused(dir);
    assert.is(e.file, file);
    assert.is(e.offset, offset);
    assert.match(e.message, new RegExp(`^corrupt record in ${file} at offset ${offset}: crc mismatch`));
    assert.match(e.message, /a valid record follows/);
    // Refusing did not cut anything.
    assert.is((await stat(file)).size, bytes.length);
  });
});

test("a bad record in a segment that is not the last is corruption, even at its end", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    await log.append(puts(1, 5));
    await log.writeSnapshot(2, 1, applyAll(new Map(), puts(1, 2)));
    await log.append(puts(6, 8));
    await log.close();
    const segments = await segmentFiles(dir);
    assert.is(segments.length, 2);
    const first = join(dir, P, segments[0]);
    const size = (await stat(first)).size;
    await appendFile(first, Buffer.from([1, 2, 3]));
    const error = await openRefused(dir);
    assert.is(error.file, first);
    assert.is(error.offset, size);
    assert.match(error.message, /not in the last segment/);
  });
});

test("a gap in the indexes is corruption", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    await log.close();
    const [segment] = await segmentFiles(dir);
    const file = join(dir, P, segment);
    const head = encodeRecords(puts(1, 2));
    await writeFile(file, Buffer.concat([head, encodeRecords(puts(4, 4))]));
    const error = await openRefused(dir);
    assert.is(error.offset, head.length);
    assert.match(error.message, /log gap: entry index 4, expected 3/);
  });
});

test("a leftover .tmp is ignored and deleted; a bad newest snapshot is bypassed only if the log covers it", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    await log.append(puts(1, 10));
    await log.writeSnapshot(4, 1, applyAll(new Map(), puts(1, 4)));
    await log.close();
    await writeFile(join(dir, P, "snap-0000000000000009.snap.tmp"), "half a snapshot");
    // A newer snapshot that is garbage (as if it rotted on disk).
    await writeFile(join(dir, P, "snap-0000000000000008.snap"), Buffer.alloc(100, 7));

    const seen = events();
    const again = await openPartitionLog(dir, P, { log: seen.log });
    assert.is(again.recovery.snapshot?.index, 4);
    assert.equal(again.recovery.entries.map((e) => e.index), [5, 6, 7, 8, 9, 10]);
    assert.ok(seen.seen.some((e) => e.event === "tmp_deleted"));
    assert.ok(seen.seen.some((e) => e.event === "snapshot_bad" && e.level === "warn"));
    const names = await files(dir);
    assert.not.ok(names.some((n) => n.endsWith(".tmp")));
    assert.ok(names.includes("snap-0000000000000008.snap.bad"));
    // Now the log only reaches 10: a bad snapshot at 50 cannot be bypassed.
    await again.log.writeSnapshot(10, 1, applyAll(new Map(), puts(1, 10)));
    await again.log.close();
    await writeFile(join(dir, P, "snap-0000000000000050.snap"), Buffer.alloc(100, 7));
    const error = await openRefused(dir);
    assert.match(error.message, /corrupt snapshot in .*snap-0000000000000050\.snap.*reach only index 10/);
  });
});

test("close() waits for in-flight appends and is idempotent; later calls are refused", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    let done = 0;
    const pending = Array.from({ length: 20 }, (_, i) => log.append([put(i + 1, "k", `v${i}`)]).then(() => void done++));
    const closing = log.close();
    const closingAgain = log.close();
    assert.is(closing, closingAgain);
    await closing;
    assert.is(done, 20);
    await Promise.all(pending);
    await log.close();
    assert.throws(() => log.append([put(21, "k", "v")]), /closed/);
    const again = await openPartitionLog(dir, P);
    assert.is(again.recovery.entries.length, 20);
    await again.log.close();
  });
});

test("segments rotate by size; replay spans them and a snapshot deletes the covered prefix", async () => {
  await withTempDir(async (dir) => {
    const opts = { segmentMaxBytes: 500 };
    const { log } = await openPartitionLog(dir, P, opts);
    for (let i = 1; i <= 200; i += 10) await log.append(puts(i, i + 9));
    const many = await segmentFiles(dir);
    assert.ok(many.length >= 10, `only ${many.length} segments`);
    await log.close();
    const again = await openPartitionLog(dir, P, opts);
    assert.equal(again.recovery.entries.map((e) => e.index), Array.from({ length: 200 }, (_, i) => i + 1));
    await again.log.writeSnapshot(150, 1, applyAll(new Map(), again.recovery.entries.slice(0, 150)));
    const left = await segmentFiles(dir);
    assert.ok(left.length < many.length);
    await again.log.close();
    const third = await openPartitionLog(dir, P, opts);
    assert.is(third.recovery.snapshot?.index, 150);
    assert.equal(third.recovery.entries.map((e) => e.index), Array.from({ length: 50 }, (_, i) => i + 151));
    await third.log.close();
  });
});

test("a crash after an installed snapshot is durable but before the old log is deleted still discards it", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    await log.append(puts(1, 30, 1, "stale"));
    await log.close();
    const [oldSegment] = await segmentFiles(dir);
    // What installSnapshot leaves after rotating and renaming the snapshot, before its reset record.
    const next = Number(oldSegment.slice(4, 20)) + 1;
    await writeFile(join(dir, P, `log-${String(next).padStart(16, "0")}.seg`), Buffer.alloc(0));
    const snapshot = serializeSnapshot(new Map([["leader", Buffer.from("state")]]), { index: 20, epoch: 3, promisedEpoch: 3 });
    await writeSnapshotFile(join(dir, P), snapshot, { logStartSegment: next });

    const again = await openPartitionLog(dir, P);
    assert.is(again.recovery.snapshot?.index, 20);
    assert.equal(again.recovery.entries, [], "stale entries 21..30 must not come back");
    assert.is(again.log.lastIndex, 20);
    assert.not.ok((await segmentFiles(dir)).includes(oldSegment), "void segment deleted");
    await again.log.append([put(21, "new", "entry", 3)]);
    await again.log.close();
    const third = await openPartitionLog(dir, P);
    assert.equal(third.recovery.entries.map((e) => e.key), ["new"]);
    await third.log.close();
  });
});

test("a snapshot ahead of the durable log: the jump is recorded so later replays stay contiguous", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    await log.append(puts(1, 5));
    await log.close();
    // As if entries 6..10 were applied and snapshotted but lost from the log in a crash.
    await writeSnapshotFile(join(dir, P), serializeSnapshot(applyAll(new Map(), puts(1, 10)), { index: 10, epoch: 1, promisedEpoch: 0 }));
    const again = await openPartitionLog(dir, P);
    assert.is(again.log.lastIndex, 10);
    assert.equal(again.recovery.entries, []);
    await again.log.append(puts(11, 12));
    await again.log.writeSnapshot(11, 1, applyAll(new Map(), puts(1, 11)));
    await again.log.close();
    const third = await openPartitionLog(dir, P);
    assert.is(third.recovery.snapshot?.index, 11);
    assert.equal(third.recovery.entries.map((e) => e.index), [12]);
    await third.log.close();
  });
});

test("a snapshot larger than a read chunk round-trips; a flipped byte in it is refused", async () => {
  await withTempDir(async (dir) => {
    const state = new Map<string, Buffer>();
    for (let i = 0; i < 2000; i++) state.set(`key-${i}`, Buffer.alloc(5000, i & 0xff));
    state.set("huge", Buffer.alloc(9 * 1024 * 1024, 7)); // bigger than one 8 MiB chunk
    state.set("", Buffer.from("empty key"));
    state.set("empty value", Buffer.alloc(0));
    state.set("ключ-🔑", Buffer.from("unicode"));
    const { log } = await openPartitionLog(dir, P);
    await log.append([put(1, "x", "y")], { promisedEpoch: 5 });
    await log.writeSnapshot(1, 1, state);
    await log.close();
    const again = await openPartitionLog(dir, P);
    const loaded = again.recovery.snapshot!.state;
    assert.is(loaded.size, state.size);
    for (const [key, value] of state) assert.ok(loaded.get(key)?.equals(value), `value of ${key}`);
    assert.is(again.recovery.promisedEpoch, 5);
    await again.log.close();

    const file = join(dir, P, "snap-0000000000000001.snap");
    const bytes = await readFile(file);
    bytes[Math.floor(bytes.length / 2)] ^= 0x10;
    await writeFile(file, bytes);
    const e = await openRefused(dir);
    assert.is(e.file, file);
    assert.is(e.offset, bytes.length - 4, "the CRC trailer");
    assert.match(e.message, /^corrupt snapshot in \S+snap-0000000000000001\.snap at offset \d+: crc mismatch .*reach only index 0/);
  });
});

test("unsafe partition names are refused", async () => {
  await withTempDir(async (dir) => {
    for (const bad of ["..", "a/b", "", "x y", "a\\b"]) {
      await openPartitionLog(dir, bad).then(
        () => assert.unreachable(`accepted ${JSON.stringify(bad)}`),
        (error: Error) => assert.match(error.message, /unsafe partition name/),
      );
    }
  });
});


test("a snapshot encoded in slices: the same bytes as in one go, and writes made meanwhile stay out", async () => {
  const state = new Map<string, Buffer>();
  const keys = SNAPSHOT_SLICE_ENTRIES * 2 + 17; // crosses slice boundaries
  for (let i = 0; i < keys; i++) state.set(`k${i}`, Buffer.from(`v${i}`.repeat(i % 5)));
  state.set("ünïcode", Buffer.from("välue"));
  const header = { index: 77, epoch: 4, promisedEpoch: 5 };
  const whole = Buffer.concat(serializeSnapshot(state, header).chunks);

  const captured = captureState(state);
  const sliced = serializeSnapshotInSlices(captured, header);
  // Changes after the capture (what the node keeps applying) must not leak in.
  let yielded = false;
  setImmediate(() => {
    yielded = true;
    state.set("k0", Buffer.from("changed"));
    state.set("new-key", Buffer.from("x"));
    state.delete("k1");
  });
  const result = await sliced;
  assert.ok(yielded, "the event loop ran between slices");
  assert.is(result.keys, keys + 1);
  assert.ok(Buffer.concat(result.chunks).equals(whole), "same bytes as serializeSnapshot of the state at capture");
});

test("writeSnapshot captures the state at the call: later changes to the Map are not in the file", async () => {
  await withTempDir(async (dir) => {
    const { log } = await openPartitionLog(dir, P);
    await log.append(puts(1, 3));
    const state = applyAll(new Map(), puts(1, 3));
    const written = log.writeSnapshot(3, 1, state);
    state.set("after", Buffer.from("the snapshot"));
    await written;
    await log.close();
    const again = await openPartitionLog(dir, P);
    assert.is(again.recovery.snapshot?.index, 3);
    assert.not.ok(again.recovery.snapshot?.state.has("after"));
    assert.is(again.recovery.snapshot?.state.size, 3);
    await again.log.close();
  });
});

test.run();
