/**
 * The host of one replicated partition on a node: it feeds the pure
 * {@linkcode ReplicaCore} with events (client requests, peer messages, ticks,
 * election changes, storage completions) and carries out its Ready —
 * persist to the partition log (group commit), send messages, apply committed
 * entries to the store, answer clients, stream snapshots.
 *
 * @module
 */
import { ReplicaCore } from "./core.ts";
import type { CoreEvent, PeerMessage, Proposal, Ready } from "./types.ts";
import type { Outcome, PartitionHandle, PartitionStatus, ReadOptions } from "./partition.ts";
import { type BatchStats, openPartitionLog, type PartitionLog } from "../storage/partition_log.ts";
import { KvStore, type ApplyResult } from "../store/store.ts";
import type { Logger } from "../log/log.ts";

/** Incoming messages held while a snapshot is being installed, at most. */
export const MAX_HELD_MESSAGES = 10_000;
/** Apply results remembered for proposals whose result has not been taken yet, at most. */
const MAX_REMEMBERED_RESULTS = 200_000;
/** How often a draining leader re-checks its in-flight requests and its successor's progress. */
const DRAIN_POLL_MS = 2;

/** A whole partition state at one log position, as it travels between nodes. */
export interface SnapshotImage {
  /** The sender's leadership epoch (fencing: refused below the receiver's promise). */
  epoch: number;
  index: number;
  /** Epoch of the entry at `index`. */
  lastEpoch: number;
  state: Map<string, Buffer>;
}

/** How a replica reaches its peers (the node's transport). */
export interface ReplicaTransport {
  send(message: PeerMessage): void;
  /** Streams `image` to `to` (serialises synchronously: the store keeps changing). */
  sendSnapshot(to: string, partition: string, image: SnapshotImage): void;
  /** Asks `from` to stream its snapshot of `partition` here. */
  requestSnapshot(from: string, partition: string, epoch: number): void;
}

/** Options for {@linkcode openReplica}. */
export interface ReplicaOptions {
  partition: string;
  self: string;
  members: readonly string[];
  fsync: "always" | "never";
  /** Told about every group-commit batch of the partition's log (metrics). */
  onBatch?: (batch: BatchStats) => void;
  snapshotEvery: number;
  heartbeatMs: number;
  /** A proposal without a result after this long gets `timeout` (unknown outcome); a read gets `unavailable`. */
  requestTimeoutMs: number;
  transport: ReplicaTransport;
  logger: Logger;
  /** The core finished recovery and committed its no-op: the node may publish itself as leader. */
  onLeaderReady(partition: string, epoch: number): void;
  /** The core stopped leading (deposed, fenced, stepped down). */
  onLeaderLost(partition: string): void;
  /**
   * Serving, but no majority of the group heard from for `quorumTimeoutMs`:
   * the node should leave the election so that a connected replica takes over.
   */
  onQuorumLost?(partition: string, silentMs: number): void;
  /** See `onQuorumLost`. Defaults to never. */
  quorumTimeoutMs?: number;
}

/** A tick later than this after the previous one means our own event loop stalled: skip the quorum check once. */
const STALL_MS = 200;

interface PendingWrite {
  resolve: (outcome: Outcome) => void;
  timer: NodeJS.Timeout;
}

interface PendingRead {
  key: string;
  resolve: (outcome: Outcome) => void;
  timer: NodeJS.Timeout;
}

/** Opens the partition's log, replays it and starts the replica (as a follower). */
export async function openReplica(dataDir: string, options: ReplicaOptions): Promise<ReplicatedPartition> {
  const { log, recovery } = await openPartitionLog(dataDir, options.partition, {
    fsync: options.fsync,
    onBatch: options.onBatch,
    log: (level, event, detail) => options.logger[level](event, { partition: options.partition, ...detail }),
  });
  const store = new KvStore();
  if (recovery.snapshot) store.load(recovery.snapshot.index, recovery.snapshot.epoch, recovery.snapshot.state);
  const core = new ReplicaCore({
    partition: options.partition,
    self: options.self,
    members: options.members,
    heartbeatMs: options.heartbeatMs,
    recovered: {
      promisedEpoch: recovery.promisedEpoch,
      entries: recovery.entries,
      snapshotIndex: recovery.snapshot?.index ?? 0,
      snapshotEpoch: recovery.snapshot?.epoch ?? 0,
    },
  });
  options.logger.info("partition_recovered", {
    partition: options.partition,
    promisedEpoch: recovery.promisedEpoch,
    snapshotIndex: recovery.snapshot?.index ?? 0,
    entries: recovery.entries.length,
    tornTailBytes: recovery.tornTailBytes,
  });
  return new ReplicatedPartition(core, log, store, options);
}

/** One partition replicated by this node; see the module doc. */
export class ReplicatedPartition implements PartitionHandle {
  readonly name: string;
  /** True between the leader znode being published and any loss of leadership. */
  private serving = false;
  private leaderEpoch = 0;
  /** Election's view of who leads (for NOT_LEADER hints and INFO). */
  private leaderHint: { id: string; address: string } | undefined;
  private nextId = 1;
  private readonly writes = new Map<number, PendingWrite>();
  private readonly reads = new Map<number, PendingRead>();
  private readonly applied = new Map<number, ApplyResult>();
  private scheduled = false;
  private installing = false;
  private held: PeerMessage[] = [];
  private snapshotting = false;
  private broken = false;
  private closed = false;
  /** Planned shutdown: new requests are refused (the router sends them on to the next leader). */
  private draining = false;
  private readonly ticker: NodeJS.Timeout;
  private readonly started = performance.now();
  private lastTickAt = performance.now();
  /** onQuorumLost was called for the current leadership. */
  private quorumLostReported = false;

  constructor(
    private readonly core: ReplicaCore,
    private readonly log: PartitionLog,
    private readonly store: KvStore,
    private readonly options: ReplicaOptions,
  ) {
    this.name = options.partition;
    this.ticker = setInterval(() => this.onTick(), Math.max(5, Math.floor(options.heartbeatMs / 2)));
    this.ticker.unref();
  }

  private onTick(): void {
    const now = performance.now();
    const stalled = now - this.lastTickAt > STALL_MS;
    this.lastTickAt = now;
    this.step({ type: "tick", now: now - this.started });
    const limit = this.options.quorumTimeoutMs;
    if (limit === undefined || stalled || !this.serving || this.draining || this.quorumLostReported) return;
    // After a stall, messages that arrived meanwhile are still unread: only judge on a live loop.
    const silent = this.core.quorumSilenceMs();
    if (silent !== undefined && silent > limit) {
      this.quorumLostReported = true;
      this.options.logger.always("quorum_lost", { partition: this.name, epoch: this.leaderEpoch, silentMs: Math.round(silent) });
      this.options.onQuorumLost?.(this.name, silent);
    }
  }

  // ---- election, from the cluster layer ----

  /** ZooKeeper made this node the lowest candidate with `epoch`: start the promise phase. */
  campaign(epoch: number): void {
    this.options.logger.always("campaign", { partition: this.name, epoch });
    this.leaderEpoch = epoch;
    this.step({ type: "campaign", epoch });
  }

  /** Stop leading now (lost the election, ZooKeeper deadline, expiry, shutdown). */
  stepDown(reason: string): void {
    if (this.serving || this.leaderEpoch !== 0) {
      this.options.logger.always("step_down", { partition: this.name, epoch: this.leaderEpoch, reason });
    }
    this.serving = false;
    this.leaderEpoch = 0;
    this.step({ type: "step_down" });
  }

  /** The leader znode for this partition is ours and published: serve clients. */
  setServing(epoch: number): void {
    if (epoch !== this.leaderEpoch) return;
    this.serving = true;
    this.quorumLostReported = false;
    this.options.logger.always("serving", { partition: this.name, epoch });
  }

  /** Who leads according to the election (routing hint). */
  setLeaderHint(leader: { id: string; address: string } | undefined): void {
    this.leaderHint = leader;
    this.step({ type: "leader_hint", leader: leader?.id });
  }

  // ---- peer input ----

  /** A replication message from an authenticated peer. */
  receive(message: PeerMessage): void {
    if (this.installing) {
      if (this.held.length < MAX_HELD_MESSAGES) this.held.push(message);
      return;
    }
    this.step({ type: "message", message });
  }

  /** A snapshot streamed by the leader (or by the member a candidate recovers from). */
  async installSnapshot(image: SnapshotImage): Promise<void> {
    if (this.broken || this.closed) return;
    // A snapshot holds only committed state, so it needs no epoch fence; the
    // core decides whether it is newer than what this replica has.
    if (this.installing || !this.core.wantsSnapshot(image.index, image.lastEpoch)) return;
    this.installing = true;
    const started = Date.now();
    try {
      await this.log.installSnapshot(image.index, image.lastEpoch, image.state);
      this.store.load(image.index, image.lastEpoch, image.state);
      this.options.logger.always("snapshot_installed", { partition: this.name, index: image.index, keys: image.state.size, ms: Date.now() - started });
      this.step({ type: "snapshot_installed", index: image.index, epoch: image.lastEpoch });
    } catch (error) {
      this.failStorage(error);
    } finally {
      this.installing = false;
      const held = this.held;
      this.held = [];
      for (const message of held) this.step({ type: "message", message });
    }
  }

  /** Our applied state, for a peer that asked for it (candidate recovery). */
  snapshotImage(): SnapshotImage {
    return { epoch: this.log.promisedEpoch, index: this.store.appliedIndex, lastEpoch: this.store.appliedEpoch, state: this.store.data };
  }

  /** The epoch this node has durably promised (fencing checks outside the core). */
  get promisedEpoch(): number {
    return this.log.promisedEpoch;
  }

  // ---- clients ----

  write(proposal: Proposal): Promise<Outcome> {
    if (!this.serving || this.broken || this.draining) return Promise.resolve(this.notLeader());
    const id = this.nextId++;
    return new Promise<Outcome>((resolve) => {
      const timer = setTimeout(() => {
        this.writes.delete(id);
        resolve({ type: "timeout", message: "the write was not confirmed in time; its outcome is unknown" });
      }, this.options.requestTimeoutMs);
      this.writes.set(id, { resolve, timer });
      this.step({ type: "propose", id, proposal });
    });
  }

  read(key: string, options: ReadOptions): Outcome | Promise<Outcome> {
    if (options.local) return this.localRead(key);
    if (!this.serving || this.broken || this.draining) return this.notLeader();
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.reads.delete(id);
        resolve({ type: "unavailable", message: "could not confirm leadership with a majority in time" });
      }, this.options.requestTimeoutMs);
      this.reads.set(id, { key, resolve, timer });
      this.step({ type: "read", id });
    });
  }

  private localRead(key: string): Outcome {
    const value = this.store.get(key);
    return value === undefined ? { type: "not_found" } : { type: "value", value };
  }

  private notLeader(): Outcome {
    return { type: "not_leader", leader: this.leaderHint?.address };
  }

  /**
   * First half of a graceful handover: refuse new requests (they wait for the
   * next leader), let the ones in flight finish, and wait until `successor`
   * holds every entry, so that its campaign has nothing left to recover.
   * Bounded by `timeoutMs`; resolves whether all of that happened in time.
   * The caller then leaves the election; the replica never serves again.
   */
  async drain(successor: string | undefined, timeoutMs: number): Promise<boolean> {
    this.draining = true;
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (this.writes.size === 0 && this.reads.size === 0 && this.successorHasAll(successor)) return true;
      if (performance.now() >= deadline || this.closed || this.broken || !this.serving) return false;
      await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
    }
  }

  private successorHasAll(successor: string | undefined): boolean {
    const core = this.core.status();
    if (core.commitIndex < core.lastIndex) return false;
    if (successor === undefined) return true;
    const progress = this.core.progress().find((p) => p.id === successor);
    return progress !== undefined && progress.matchIndex >= core.lastIndex;
  }

  /**
   * Undoes {@linkcode drain} when the leader stays (a rebalancing handover
   * that ZooKeeper did not carry out): requests are taken again. A replica
   * that stopped serving meanwhile is not affected until it leads again.
   */
  endDrain(): void {
    this.draining = false;
  }

  /** Elected or campaigning, not serving yet: the partition's next leader is (probably) us. */
  isElecting(): boolean {
    return !this.serving && !this.broken && this.core.role !== "follower";
  }

  /** Serving as leader right now. */
  isServing(): boolean {
    return this.serving;
  }

  status(): PartitionStatus {
    const core = this.core.status();
    return {
      partition: this.name,
      // "leader" only once serving (published); elected but not yet published is still a candidate.
      role: this.serving ? "leader" : core.role === "follower" ? "follower" : "candidate",
      // A follower reports the epoch it enforces (its promise): the current one as far as it knows.
      epoch: core.role === "leader" || core.role === "candidate" ? core.epoch : this.log.promisedEpoch,
      promisedEpoch: this.log.promisedEpoch,
      leader: this.serving ? this.options.self : this.leaderHint?.id,
      commitIndex: core.commitIndex,
      appliedIndex: this.store.appliedIndex,
      lastIndex: core.lastIndex,
      keys: this.store.size,
      followers: this.followers(core.commitIndex),
    };
  }

  /** Replication progress per follower, when the core exposes it (leaders only). */
  private followers(commitIndex: number): PartitionStatus["followers"] {
    const progress = this.core.progress();
    return progress.map((p) => ({ id: p.id, matchIndex: p.matchIndex, lag: Math.max(0, commitIndex - p.matchIndex) }));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.stepDown("shutdown");
    this.process();
    this.closed = true;
    clearInterval(this.ticker);
    await this.log.close();
    for (const [id, write] of this.writes) {
      clearTimeout(write.timer);
      write.resolve({ type: "timeout", message: "the node shut down; the write's outcome is unknown" });
      this.writes.delete(id);
    }
    for (const [id, read] of this.reads) {
      clearTimeout(read.timer);
      read.resolve({ type: "unavailable", message: "the node shut down" });
      this.reads.delete(id);
    }
  }

  // ---- the event loop of the host ----

  private step(event: CoreEvent): void {
    if (this.closed || this.broken) return;
    try {
      this.core.step(event);
    } catch (error) {
      // A broken invariant in the core: stop this partition loudly rather than corrupt data.
      this.options.logger.error("core_invariant_broken", { partition: this.name, event: event.type, error });
      this.broken = true;
      this.serving = false;
      this.options.onLeaderLost(this.name);
      return;
    }
    // All events of one event-loop turn share one Ready: one append + fsync, one message per peer.
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.process());
    }
  }

  private process(): void {
    this.scheduled = false;
    if (this.closed) return;
    const ready = this.core.ready();
    this.carryOut(ready);
  }

  private carryOut(ready: Ready): void {
    const persist = ready.persist;
    if (persist !== undefined) {
      const persistId = persist.persistId;
      this.log.append(persist.entries, { truncateAfter: persist.truncateAfter, promisedEpoch: persist.promisedEpoch }).then(
        () => this.step({ type: "persisted", persistId }),
        (error) => this.failStorage(error),
      );
    }
    for (const message of ready.messages) this.options.transport.send(message);
    for (const entry of ready.committed) {
      const result = this.store.apply(entry);
      if (this.writes.size > 0) {
        this.applied.set(entry.index, result);
        if (this.applied.size > MAX_REMEMBERED_RESULTS) this.applied.delete(this.applied.keys().next().value!);
      }
    }
    for (const result of ready.results) {
      const write = this.writes.get(result.id);
      if (write === undefined) continue; // timed out already
      this.writes.delete(result.id);
      clearTimeout(write.timer);
      if ("failure" in result) {
        write.resolve(result.failure === "unknown"
          ? { type: "timeout", message: "leadership changed before the write committed; its outcome is unknown" }
          : this.notLeader());
      } else {
        const applied = this.applied.get(result.index);
        this.applied.delete(result.index);
        write.resolve({ type: applied ?? "ok" });
      }
    }
    for (const read of ready.reads) {
      const pending = this.reads.get(read.id);
      if (pending === undefined) continue;
      this.reads.delete(read.id);
      clearTimeout(pending.timer);
      pending.resolve("failure" in read ? this.notLeader() : this.localRead(pending.key));
    }
    for (const request of ready.sendSnapshot) {
      this.options.logger.always("snapshot_send", { partition: this.name, to: request.to, index: this.store.appliedIndex });
      this.options.transport.sendSnapshot(request.to, this.name, {
        epoch: this.leaderEpoch,
        index: this.store.appliedIndex,
        lastEpoch: this.store.appliedEpoch,
        state: this.store.data,
      });
    }
    for (const request of ready.needSnapshotFrom) {
      this.options.transport.requestSnapshot(request.from, this.name, this.leaderEpoch);
    }
    for (const event of ready.events) this.onCoreEvent(event);
    this.maybeSnapshot();
  }

  private onCoreEvent(event: { kind: string; detail: Record<string, unknown> }): void {
    this.options.logger.always(event.kind, { partition: this.name, ...event.detail });
    if (event.kind === "serving") {
      this.options.onLeaderReady(this.name, Number(event.detail.epoch));
    } else if (event.kind === "step_down" || event.kind === "fenced") {
      if (this.serving) this.serving = false;
      this.options.onLeaderLost(this.name);
    }
  }

  private maybeSnapshot(): void {
    // A closing log takes no snapshot (it would throw): the log replays on the next start.
    if (this.closed || this.snapshotting || this.log.entriesSinceSnapshot < this.options.snapshotEvery) return;
    if (this.store.appliedIndex === 0) return;
    this.snapshotting = true;
    const index = this.store.appliedIndex;
    const epoch = this.store.appliedEpoch;
    this.log.writeSnapshot(index, epoch, this.store.data).then(
      () => {
        this.snapshotting = false;
        this.step({ type: "compacted", index, epoch });
      },
      (error) => {
        this.snapshotting = false;
        this.options.logger.error("snapshot_failed", { partition: this.name, index, error });
      },
    );
  }

  /** A failed write or fsync leaves durability unknown: stop serving this partition for good. */
  private failStorage(error: unknown): void {
    this.options.logger.error("storage_failed", { partition: this.name, error });
    this.broken = true;
    this.serving = false;
    this.options.onLeaderLost(this.name);
  }
}
