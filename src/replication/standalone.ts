/**
 * A standalone partition: this node alone replicates it, so a write commits
 * once it is durable in the local log (group-committed fsync) and is then
 * applied; reads see only applied, durable state — linearizable on one node.
 *
 * @module
 */
import { type BatchStats, openPartitionLog, type PartitionLog } from "../storage/partition_log.ts";
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
  durable: boolean;
  resolve: (outcome: Outcome) => void;
}

class StandalonePartition implements PartitionHandle {
  private lastIndex: number;
  /** Appended but not yet applied, in index order: applied strictly in order once durable. */
  private readonly pending: PendingWrite[] = [];
  private snapshotting = false;
  private closed = false;

  constructor(
    readonly name: string,
    private readonly log: PartitionLog,
    private readonly store: KvStore,
    private readonly options: StandaloneOptions,
  ) {
    this.lastIndex = store.appliedIndex;
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
    return new Promise<Outcome>((resolve) => {
      const write: PendingWrite = { entry, durable: false, resolve };
      this.pending.push(write);
      this.log.append([entry]).then(
        () => {
          write.durable = true;
          this.applyDurable();
        },
        (error) => this.failStorage(error),
      );
    });
  }

  private applyDurable(): void {
    while (this.pending.length > 0 && this.pending[0].durable) {
      const write = this.pending.shift()!;
      const result = this.store.apply(write.entry);
      write.resolve({ type: result });
    }
    this.maybeSnapshot();
  }

  /**
   * A failed write or fsync leaves the log's durable state unknown (fsyncgate):
   * the only safe answer is to stop serving writes. The outcome is unknown.
   */
  private failStorage(error: unknown): void {
    this.options.logger.error("storage_failed", { partition: this.name, error });
    this.closed = true;
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
    await this.log.close();
    this.applyDurable();
  }
}
