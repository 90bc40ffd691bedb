/**
 * A standalone partition: this node alone replicates it, so a write commits
 * once it is durable in the local log (group-committed fsync) and is then
 * applied; reads see only applied, durable state — linearizable on one node.
 *
 * @module
 */
import { BATCH_MAX_BYTES, type BatchStats, openPartitionLog, type PartitionLog } from "../storage/partition_log.ts";
import { RECORD_HEADER_BYTES } from "../storage/record.ts";
import type { LogEntry } from "../storage/entry.ts";
import { KvStore } from "../store/store.ts";
import type { Logger } from "../log/log.ts";
import type { Outcome, PartitionHandle, PartitionStatus, ReadOptions } from "./partition.ts";
import type { Proposal } from "./types.ts";

/** The epoch of every standalone entry: nobody else ever leads. */
const STANDALONE_EPOCH = 1;

/** Options for {@linkcode openStandalonePartition}. */
export interface StandaloneOptions {
  fsync: "always" | "never";
  /** Told about every group-commit batch of the partition's log (metrics). */
  onBatch?: (batch: BatchStats) => void;
  /** Snapshot after this many log entries since the last one. */
  snapshotEvery: number;
  logger: Logger;
  /** This node's id (the leader of every standalone partition, for INFO). */
  nodeId: string;
}

/** Opens (replaying its log) a partition served by this node alone. */
export async function openStandalonePartition(
  dataDir: string,
  partition: string,
  options: StandaloneOptions,
): Promise<PartitionHandle> {
  const { log, recovery } = await openPartitionLog(dataDir, partition, {
    fsync: options.fsync,
    onBatch: options.onBatch,
    log: (level, event, detail) => options.logger[level](event, { partition, ...detail }),
  });
  const store = new KvStore();
  if (recovery.snapshot) store.load(recovery.snapshot.index, recovery.snapshot.epoch, recovery.snapshot.state);
  for (const entry of recovery.entries) store.apply(entry);
  options.logger.info("partition_recovered", {
    partition,
    snapshotIndex: recovery.snapshot?.index ?? 0,
    entries: recovery.entries.length,
    keys: store.size,
    tornTailBytes: recovery.tornTailBytes,
  });
  return new StandalonePartition(partition, log, store, options);
}

interface PendingWrite {
  entry: LogEntry;
  resolve: (outcome: Outcome) => void;
}

/** Bytes of one append call at most (a batch of the log's, so a torn tail stays within its bound). */
const APPEND_CHUNK_BYTES = BATCH_MAX_BYTES;

class StandalonePartition implements PartitionHandle {
  private lastIndex: number;
  /** Written but not yet applied, in index order: applied strictly in order once durable. */
  private readonly pending: PendingWrite[] = [];
  /** Entries of this tick not handed to the log yet: one append call for all of them. */
  private unsent: LogEntry[] = [];
  /** Highest index known durable. */
  private durableIndex: number;
  private snapshotting = false;
  private closed = false;

  constructor(
    readonly name: string,
    private readonly log: PartitionLog,
    private readonly store: KvStore,
    private readonly options: StandaloneOptions,
  ) {
    this.lastIndex = store.appliedIndex;
    this.durableIndex = store.appliedIndex;
  }

  write(proposal: Proposal): Promise<Outcome> {
    if (this.closed) return Promise.resolve({ type: "unavailable", message: "the node is shutting down" });
    const entry: LogEntry = {
      epoch: STANDALONE_EPOCH,
      index: ++this.lastIndex,
      op: proposal.op,
      key: proposal.key,
      value: proposal.value,
    };
    if (this.unsent.length === 0) process.nextTick(() => this.sendToLog());
    this.unsent.push(entry);
    return new Promise<Outcome>((resolve) => {
      this.pending.push({ entry, resolve });
    });
  }

  /**
   * Appends the writes of this tick in one call (the log's group commit
   * then joins the calls of the whole event-loop turn): one record buffer
   * and one promise per call, not per write.
   */
  private sendToLog(): void {
    // Empty when close() sent them already.
    const entries = this.unsent;
    this.unsent = [];
    let start = 0;
    let bytes = 0;
    for (let i = 0; i < entries.length; i++) {
      const size = entryBytesBound(entries[i]);
      if (i > start && bytes + size > APPEND_CHUNK_BYTES) {
        if (!this.append(entries.slice(start, i))) return;
        start = i;
        bytes = 0;
      }
      bytes += size;
    }
    if (start < entries.length) this.append(start === 0 ? entries : entries.slice(start));
  }

  /** Hands `entries` to the log; false if it refused them (the partition then stops serving). */
  private append(entries: LogEntry[]): boolean {
    const last = entries[entries.length - 1].index;
    let durable: Promise<void>;
    try {
      durable = this.log.append(entries);
    } catch (error) {
      this.failStorage(error);
      return false;
    }
    durable.then(
      () => {
        if (last > this.durableIndex) this.durableIndex = last;
        this.applyDurable();
      },
      (error) => this.failStorage(error),
    );
    return true;
  }

  private applyDurable(): void {
    let applied = 0;
    while (applied < this.pending.length && this.pending[applied].entry.index <= this.durableIndex) {
      const write = this.pending[applied++];
      write.resolve({ type: this.store.apply(write.entry) });
    }
    if (applied > 0) this.pending.splice(0, applied);
    this.maybeSnapshot();
  }

  /**
   * A failed write or fsync leaves the log's durable state unknown (fsyncgate):
   * the only safe answer is to stop serving writes. The outcome is unknown.
   */
  private failStorage(error: unknown): void {
    this.options.logger.error("storage_failed", { partition: this.name, error });
    this.closed = true;
    this.unsent = [];
    for (const write of this.pending.splice(0)) {
      write.resolve({ type: "timeout", message: "storage failed; the write's outcome is unknown" });
    }
  }

  private maybeSnapshot(): void {
    // A closing log takes no snapshot (it would throw): the log replays on the next start.
    if (this.closed || this.snapshotting || this.log.entriesSinceSnapshot < this.options.snapshotEvery) return;
    this.snapshotting = true;
    const index = this.store.appliedIndex;
    this.log.writeSnapshot(index, this.store.appliedEpoch, this.store.data).then(
      () => {
        this.snapshotting = false;
      },
      (error) => {
        this.snapshotting = false;
        this.options.logger.error("snapshot_failed", { partition: this.name, index, error });
      },
    );
  }

  read(key: string, _options: ReadOptions): Outcome {
    if (this.closed) return { type: "unavailable", message: "the node is shutting down" };
    const value = this.store.get(key);
    return value === undefined ? { type: "not_found" } : { type: "value", value };
  }

  status(): PartitionStatus {
    return {
      partition: this.name,
      role: "standalone",
      epoch: STANDALONE_EPOCH,
      promisedEpoch: STANDALONE_EPOCH,
      leader: this.options.nodeId,
      commitIndex: this.store.appliedIndex,
      appliedIndex: this.store.appliedIndex,
      lastIndex: this.lastIndex,
      keys: this.store.size,
      followers: [],
    };
  }

  async close(): Promise<void> {
    // In-flight writes finish: their appends complete before the log closes.
    this.closed = true;
    if (this.unsent.length > 0) this.sendToLog();
    await this.log.close();
    this.applyDurable();
  }
}

/** An upper bound of the bytes `entry` takes in the log (a UTF-16 unit is at most 3 UTF-8 bytes). */
function entryBytesBound(entry: LogEntry): number {
  return RECORD_HEADER_BYTES + entry.key.length * 3 + entry.value.length;
}
