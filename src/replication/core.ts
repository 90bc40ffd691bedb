/**
 * The replication core of one partition: a pure state machine with no I/O
 * (the lesson of etcd's raft package). A host feeds it events with
 * {@linkcode ReplicaCore.step} and carries out what {@linkcode ReplicaCore.ready}
 * asks for: persist, send, apply, answer. The real node and the deterministic
 * simulation drive this very class.
 *
 * Protocol ("Raft's safety rules, ZooKeeper's election"):
 * - the election is external: `campaign {epoch}` / `step_down` from the host;
 * - promise: a candidate gathers durable promises of its epoch from a
 *   majority (itself included), adopts the most up-to-date log among them
 *   (fetching the missing suffix, or a snapshot first), appends a `noop` in
 *   its epoch and serves once that noop is committed;
 * - replicate: (prevEpoch, prevIndex) consistency check, conflicting suffix
 *   truncated, ack only after fsync; the leader commits index N once N is
 *   durable on a majority and entry N is of its own epoch (Raft figure 8);
 * - reads: read index confirmed by one heartbeat round acked by a majority;
 * - every member refuses anything from an epoch below the one it promised:
 *   that fence, not ZooKeeper, is what keeps a paused leader harmless.
 *
 * Proposals and reads that arrive while the node is not a serving leader fail
 * "unavailable" at once (nothing was appended; the host retries or forwards
 * within its own deadline). The core does not queue them.
 *
 * @module
 */
import type {
  CoreEvent,
  CoreOptions,
  CoreStatus,
  LogEntry,
  MemberProgress,
  PeerMessage,
  Proposal,
  Ready,
  RecoveredState,
} from "./types.ts";

/** Default heartbeat interval (ms of the host's tick clock). */
export const DEFAULT_HEARTBEAT_MS = 50;
/** Default maximum entries in one replicate or fetch_reply message. */
export const DEFAULT_MAX_BATCH_ENTRIES = 256;
/** Default maximum unacknowledged entries in flight to one member. */
export const DEFAULT_MAX_INFLIGHT_ENTRIES = 4096;
/** Default maximum appended-but-uncommitted entries on a leader. */
export const DEFAULT_MAX_UNCOMMITTED_ENTRIES = 65_536;
/** Default maximum reads waiting for a heartbeat round. */
export const DEFAULT_MAX_PENDING_READS = 65_536;
/** Promises and fetches are retried every this many heartbeats without an answer. */
export const RETRY_HEARTBEATS = 2;
/** Unacknowledged entries are resent after this many heartbeats without progress. */
export const RESEND_HEARTBEATS = 4;
/**
 * A snapshot transfer (to a member, or awaited by a candidate) is asked for
 * again after this many heartbeats without word of it. A host still streaming
 * to that member ignores the repeat.
 */
export const SNAPSHOT_RETRY_HEARTBEATS = 10;
/** A candidate whose fetch or snapshot makes no progress for this many heartbeats starts recovery over. */
export const RECOVERY_STALL_HEARTBEATS = 40;
/** A recovering candidate probes at most this many positions for a common prefix before fetching from its commit index. */
export const MAX_RECOVERY_PROBES = 4;
/** A follower scans back at most this many entries to hint where a conflicting epoch run starts. */
export const MAX_CONFLICT_SCAN = 4096;

/** Thrown when an invariant of the replication core is broken: a bug, never a peer's or client's fault. */
export class InvariantError extends Error {
  constructor(message: string) {
    super(`replication invariant broken: ${message}`);
    this.name = "InvariantError";
  }
}

function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new InvariantError(message);
}

type Role = "follower" | "candidate" | "leader";
type Recovery = "none" | "promising" | "fetching" | "snapshot";

interface PromiseInfo {
  lastEpoch: number;
  lastIndex: number;
  commitIndex: number;
  firstIndex: number;
}

/** What the core knows about one other member. */
interface Peer {
  id: string;
  // Leader side.
  matchIndex: number;
  nextIndex: number;
  /** Highest heartbeat round this member acknowledged in the current epoch. */
  ackedReadSeq: number;
  lastSentAt: number;
  /** When matchIndex last advanced, or when entries started being in flight. */
  lastProgressAt: number;
  /** Probing: one message at a time, nextIndex not advanced optimistically. */
  probing: boolean;
  /** When the outstanding probe was sent; -1: none outstanding. */
  probeSentAt: number;
  /** When a snapshot was requested for this member; -1: none. */
  snapshotSentAt: number;
  // Candidate side.
  promised: PromiseInfo | undefined;
  promiseSentAt: number;
  /** When any valid message from this member last arrived (tick time). */
  lastHeardAt: number;
}

interface PendingPersist {
  id: number;
  /** The in-memory last index when this persist was handed out, lowered by later truncations. */
  lastIndex: number;
  /** -1 when this persist carries no promise. */
  promisedEpoch: number;
}

interface PendingProposal {
  id: number;
  index: number;
}

interface PendingRead {
  id: number;
  /** The heartbeat round that must be acknowledged by a majority. */
  seq: number;
  readIndex: number;
}

const EMPTY_VALUE: Buffer = Buffer.alloc(0);
// Shared empty lists for Ready: no allocation when nothing happened. Frozen so
// that a host that pushes into one fails loudly instead of leaking state.
const NONE = Object.freeze([]) as unknown as never[];

/** The replication state machine of one partition on one node; see the module doc. */
export class ReplicaCore {
  readonly #partition: string;
  readonly #self: string;
  readonly #peers: Peer[];
  readonly #peerById: Map<string, Peer>;
  readonly #majority: number;
  readonly #heartbeatMs: number;
  readonly #retryMs: number;
  readonly #resendMs: number;
  readonly #snapshotRetryMs: number;
  readonly #stallMs: number;
  readonly #maxBatch: number;
  readonly #maxInflight: number;
  readonly #maxUncommitted: number;
  readonly #maxPendingReads: number;
  /** Scratch space for majority computations (members.length numbers). */
  readonly #scratch: number[];

  // Log and durability.
  #promisedEpoch: number;
  #durablePromisedEpoch: number;
  /** Who the promise of `#promisedEpoch` went to; undefined after a restart. */
  #promisedTo: string | undefined;
  #log: LogEntry[];
  #snapshotIndex: number;
  #snapshotEpoch: number;
  #commitIndex: number;
  /** Last index handed out in Ready.committed (the host's store is at this index). */
  #emittedIndex: number;
  /** In-memory entries 1..#stableIndex are durable. */
  #stableIndex: number;
  #pendingPersists: PendingPersist[] = [];
  #nextPersistId = 1;
  #batchEntries: LogEntry[] = [];
  #batchTruncateAfter = -1;
  #batchPromised = -1;

  // Role.
  #role: Role = "follower";
  #epoch = 0;
  #leader: string | undefined = undefined;
  #leaderHint: string | undefined = undefined;
  #now = 0;

  // Follower side, valid for #followEpoch.
  #followEpoch = -1;
  /** Entries 1..#matchLeader are known to match the leader of #followEpoch. */
  #matchLeader = 0;
  #lastReadSeq = 0;
  #ackedReadSeq = 0;
  #ackedMatch = -1;
  #ackPending = false;
  /** Promise replies waiting for the promise to be durable: candidate → epoch. */
  #promiseReplies = new Map<string, number>();

  // Candidate side.
  #recovery: Recovery = "none";
  #source: Peer | undefined = undefined;
  #fetchTarget = 0;
  #fetchNext = 0;
  /** Index of the entry being compared with the source's (0: not probing). */
  #probeIndex = 0;
  #probesLeft = 0;
  #sourceFirstIndex = 1;
  #fetchSentAt = -Infinity;
  #snapshotAskedAt = -Infinity;
  #recoveryProgressAt = 0;

  // Leader side.
  #serving = false;
  #noopIndex = 0;
  #proposals: PendingProposal[] = [];
  #pendingReads: PendingRead[] = [];
  #readSeq = 0;
  /** The epoch #readSeq counts rounds of: leading the same epoch again continues it (followers remember it). */
  #readSeqEpoch = -1;
  #readRoundWanted = false;

  // Ready buffers.
  #messages: PeerMessage[] = NONE;
  #committed: LogEntry[] = NONE;
  #results: Ready["results"] = NONE;
  #reads: Ready["reads"] = NONE;
  #sendSnapshot: Ready["sendSnapshot"] = NONE;
  #needSnapshotFrom: Ready["needSnapshotFrom"] = NONE;
  #events: Ready["events"] = NONE;

  /** Builds the core from the durable state the host replayed; it starts as a follower. */
  constructor(options: CoreOptions) {
    const { partition, self, members, recovered } = options;
    assert(members.includes(self), `self ${self} is not a member`);
    assert(new Set(members).size === members.length, "duplicate members");
    this.#partition = partition;
    this.#self = self;
    this.#peers = [];
    this.#peerById = new Map();
    for (const id of members) {
      if (id === self) continue;
      const peer: Peer = {
        id,
        matchIndex: 0,
        nextIndex: 1,
        ackedReadSeq: 0,
        lastSentAt: -Infinity,
        lastProgressAt: 0,
        probing: true,
        probeSentAt: -1,
        snapshotSentAt: -1,
        promised: undefined,
        promiseSentAt: -Infinity,
        lastHeardAt: -Infinity,
      };
      this.#peers.push(peer);
      this.#peerById.set(id, peer);
    }
    this.#majority = Math.floor(members.length / 2) + 1;
    this.#scratch = new Array<number>(members.length).fill(0);
    this.#heartbeatMs = positive(options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS, "heartbeatMs");
    this.#retryMs = this.#heartbeatMs * RETRY_HEARTBEATS;
    this.#resendMs = this.#heartbeatMs * RESEND_HEARTBEATS;
    this.#snapshotRetryMs = this.#heartbeatMs * SNAPSHOT_RETRY_HEARTBEATS;
    this.#stallMs = this.#heartbeatMs * RECOVERY_STALL_HEARTBEATS;
    this.#maxBatch = positive(options.maxBatchEntries ?? DEFAULT_MAX_BATCH_ENTRIES, "maxBatchEntries");
    this.#maxInflight = positive(options.maxInflightEntries ?? DEFAULT_MAX_INFLIGHT_ENTRIES, "maxInflightEntries");
    this.#maxUncommitted = positive(
      options.maxUncommittedEntries ?? DEFAULT_MAX_UNCOMMITTED_ENTRIES,
      "maxUncommittedEntries",
    );
    this.#maxPendingReads = positive(options.maxPendingReads ?? DEFAULT_MAX_PENDING_READS, "maxPendingReads");

    checkRecovered(recovered);
    this.#promisedEpoch = recovered.promisedEpoch;
    this.#durablePromisedEpoch = recovered.promisedEpoch;
    this.#promisedTo = undefined;
    this.#log = recovered.entries.slice();
    if (this.#log.length > 0 && this.#log[0].epoch < recovered.snapshotEpoch) {
      // A crash after installing a snapshot whose position the log did not
      // hold, before the truncation that followed it was durable: the tail is
      // a stale, never-committed suffix. Drop it, durably.
      this.#log.length = 0;
      this.#batchTruncateAfter = recovered.snapshotIndex;
      this.#event("stale_tail_dropped", { snapshotIndex: recovered.snapshotIndex, entries: recovered.entries.length });
    }
    this.#snapshotIndex = recovered.snapshotIndex;
    this.#snapshotEpoch = recovered.snapshotEpoch;
    if (recovered.snapshotEpoch > this.#promisedEpoch) {
      // A crash between installing a snapshot and persisting the promise it implies.
      this.#promisedEpoch = recovered.snapshotEpoch;
      this.#batchPromised = recovered.snapshotEpoch;
    }
    // The host's store starts at the snapshot; entries after it are emitted
    // again as this core learns they are committed.
    this.#commitIndex = recovered.snapshotIndex;
    this.#emittedIndex = recovered.snapshotIndex;
    this.#stableIndex = this.lastIndex;
    this.#checkInvariants();
  }

  /** Last index in the log (the snapshot index when the log is empty). */
  get lastIndex(): number {
    return this.#snapshotIndex + this.#log.length;
  }

  /** Epoch of the last entry (the snapshot's epoch when the log is empty). */
  get lastEpoch(): number {
    const log = this.#log;
    return log.length > 0 ? log[log.length - 1].epoch : this.#snapshotEpoch;
  }

  /** Leading, campaigning or following (cheap: for per-request checks). */
  get role(): CoreStatus["role"] {
    return this.#role;
  }

  /** The core's state, for INFO, metrics and the host's decisions (e.g. whether a snapshot is useful). */
  status(): CoreStatus {
    return {
      role: this.#role,
      serving: this.#serving,
      epoch: this.#epoch,
      promisedEpoch: this.#promisedEpoch,
      leader: this.#role === "leader" ? this.#self : this.#followEpoch === this.#promisedEpoch ? this.#leader : undefined,
      leaderHint: this.#leaderHint,
      commitIndex: this.#commitIndex,
      lastIndex: this.lastIndex,
      lastEpoch: this.lastEpoch,
      durableIndex: this.#stableIndex,
      snapshotIndex: this.#snapshotIndex,
      snapshotEpoch: this.#snapshotEpoch,
    };
  }

  /**
   * The host's rule for a snapshot it received: install it (and step
   * `snapshot_installed`) only when this returns true — it is beyond what
   * this node knows is committed, and either this node asked for it
   * (recovery) or its log does not already hold its last entry. Installing
   * resets the log; when this is true, nothing the log holds is lost.
   */
  wantsSnapshot(index: number, epoch: number): boolean {
    // A leader's log is the group's: it never takes a snapshot from anyone.
    if (this.#role === "leader") return false;
    if (index <= this.#commitIndex || index <= this.#snapshotIndex) return false;
    if (this.#role === "candidate" && this.#recovery === "snapshot") return true;
    return !(index <= this.lastIndex && this.#epochAt(index) === epoch);
  }

  /**
   * On a leader: how long ago (tick time) a majority of the group, this node
   * included, was last heard from — the host steps down when it grows past a
   * session timeout (a leader cut off from its replicas but not from
   * ZooKeeper would otherwise keep the partition unavailable). Undefined when
   * not leading.
   */
  quorumSilenceMs(): number | undefined {
    if (this.#role !== "leader") return undefined;
    const others = this.#majority - 1;
    if (others === 0) return 0;
    const heard = this.#peers.map((peer) => peer.lastHeardAt).sort((a, b) => b - a);
    return this.#now - heard[others - 1];
  }

  /** Replication progress of every other member: on a leader only, empty otherwise. */
  progress(): MemberProgress[] {
    if (this.#role !== "leader") return [];
    return this.#peers.map((peer) => ({
      id: peer.id,
      matchIndex: peer.matchIndex,
      nextIndex: peer.nextIndex,
      snapshotting: peer.snapshotSentAt >= 0,
    }));
  }

  /** The log entry at `index` if it is still in memory (after the snapshot, at most lastIndex). */
  entry(index: number): LogEntry | undefined {
    if (index <= this.#snapshotIndex || index > this.lastIndex) return undefined;
    return this.#log[index - this.#snapshotIndex - 1];
  }

  /** True when {@linkcode ReplicaCore.ready} has something to hand out (or a leader may have to send). */
  hasReady(): boolean {
    return this.#role === "leader" ||
      this.#batchEntries.length > 0 || this.#batchTruncateAfter >= 0 || this.#batchPromised >= 0 ||
      this.#messages.length > 0 || this.#committed.length > 0 || this.#results.length > 0 ||
      this.#reads.length > 0 || this.#sendSnapshot.length > 0 || this.#needSnapshotFrom.length > 0 ||
      this.#events.length > 0;
  }

  /** Feeds one event in; pure apart from the core's own state. Throws {@linkcode InvariantError} on a bug. */
  step(event: CoreEvent): void {
    switch (event.type) {
      case "campaign":
        this.#onCampaign(event.epoch);
        break;
      case "step_down":
        if (this.#role !== "follower") this.#abdicate("step_down");
        break;
      case "leader_hint":
        this.#leaderHint = event.leader;
        break;
      case "message":
        this.#onMessage(event.message);
        break;
      case "tick":
        this.#onTick(event.now);
        break;
      case "propose":
        this.#onPropose(event.id, event.proposal);
        break;
      case "read":
        this.#onRead(event.id);
        break;
      case "persisted":
        this.#onPersisted(event.persistId);
        break;
      case "snapshot_installed":
        this.#onSnapshotInstalled(event.index, event.epoch);
        break;
      case "compacted":
        this.#onCompacted(event.index, event.epoch);
        break;
      default:
        assert(false, `unknown event ${(event as { type: string }).type}`);
    }
    this.#checkInvariants();
  }

  /**
   * Takes everything to do since the last call: one persist (all appends of
   * this turn, so group commit is natural), the messages (one replicate per
   * member carrying every entry appended this turn), commits, answers.
   */
  ready(): Ready {
    if (this.#role === "leader") this.#flushLeader();
    let persist: Ready["persist"];
    if (this.#batchEntries.length > 0 || this.#batchTruncateAfter >= 0 || this.#batchPromised >= 0) {
      const persistId = this.#nextPersistId++;
      persist = { persistId, entries: this.#batchEntries };
      if (this.#batchPromised >= 0) persist.promisedEpoch = this.#batchPromised;
      if (this.#batchTruncateAfter >= 0) persist.truncateAfter = this.#batchTruncateAfter;
      this.#pendingPersists.push({ id: persistId, lastIndex: this.lastIndex, promisedEpoch: this.#batchPromised });
      this.#batchEntries = [];
      this.#batchTruncateAfter = -1;
      this.#batchPromised = -1;
    }
    const ready: Ready = {
      persist,
      messages: this.#messages,
      committed: this.#committed,
      results: this.#results,
      reads: this.#reads,
      sendSnapshot: this.#sendSnapshot,
      needSnapshotFrom: this.#needSnapshotFrom,
      events: this.#events,
    };
    this.#messages = NONE;
    this.#committed = NONE;
    this.#results = NONE;
    this.#reads = NONE;
    this.#sendSnapshot = NONE;
    this.#needSnapshotFrom = NONE;
    this.#events = NONE;
    return ready;
  }

  // ---------------------------------------------------------------- outputs

  #send(message: PeerMessage): void {
    if (this.#messages === NONE) this.#messages = [];
    this.#messages.push(message);
  }

  #event(kind: string, detail: Record<string, unknown>): void {
    if (this.#events === NONE) this.#events = [];
    this.#events.push({ kind, detail });
  }

  #result(result: Ready["results"][number]): void {
    if (this.#results === NONE) this.#results = [];
    this.#results.push(result);
  }

  #readDone(read: Ready["reads"][number]): void {
    if (this.#reads === NONE) this.#reads = [];
    this.#reads.push(read);
  }

  // ------------------------------------------------------------ log helpers

  #epochAt(index: number): number {
    if (index === this.#snapshotIndex) return this.#snapshotEpoch;
    assert(index > this.#snapshotIndex && index <= this.lastIndex, `no entry ${index} in memory`);
    return this.#log[index - this.#snapshotIndex - 1].epoch;
  }

  #append(entry: LogEntry): void {
    assert(entry.index === this.lastIndex + 1, `append ${entry.index} after ${this.lastIndex}`);
    assert(entry.epoch >= this.lastEpoch, `append epoch ${entry.epoch} after ${this.lastEpoch}`);
    assert(entry.epoch <= this.#promisedEpoch, `append epoch ${entry.epoch} above promise ${this.#promisedEpoch}`);
    this.#log.push(entry);
    this.#batchEntries.push(entry);
  }

  /** Drops every entry after `after`, in memory now and on disk with the next persist. */
  #truncate(after: number): void {
    assert(after >= this.#commitIndex, `truncate after ${after} below commit ${this.#commitIndex}`);
    assert(after >= this.#snapshotIndex, `truncate after ${after} below snapshot ${this.#snapshotIndex}`);
    if (after >= this.lastIndex) return;
    this.#log.length = after - this.#snapshotIndex;
    const batch = this.#batchEntries;
    if (batch.length > 0 && after >= batch[0].index - 1) {
      // Only entries not yet handed to the host go: no disk truncation needed.
      batch.length = after - batch[0].index + 1;
    } else {
      batch.length = 0;
      this.#batchTruncateAfter = this.#batchTruncateAfter < 0 ? after : Math.min(this.#batchTruncateAfter, after);
    }
    for (const pending of this.#pendingPersists) {
      if (pending.lastIndex > after) pending.lastIndex = after;
    }
    if (this.#stableIndex > after) this.#stableIndex = after;
    if (this.#matchLeader > after) this.#matchLeader = after;
  }

  /** Raises the promise to `epoch` (persisted with the next Ready); leaving any role of a lower epoch. */
  #raisePromise(epoch: number, to: string | undefined): void {
    assert(epoch > this.#promisedEpoch, `promise ${epoch} not above ${this.#promisedEpoch}`);
    if (this.#role !== "follower") this.#abdicate("higher_epoch", epoch);
    this.#promisedEpoch = epoch;
    this.#promisedTo = to;
    this.#batchPromised = epoch;
    this.#leader = undefined;
    this.#followEpoch = -1;
  }

  #advanceCommit(index: number): void {
    assert(index <= this.lastIndex, `commit ${index} beyond last ${this.lastIndex}`);
    if (index <= this.#commitIndex) return;
    this.#commitIndex = index;
    this.#emitCommitted();
    this.#afterLeaderCommit();
  }

  /** Answers the proposals the commit index now covers; serving starts once the noop is committed. */
  #afterLeaderCommit(): void {
    const index = this.#commitIndex;
    if (this.#role === "leader") {
      const proposals = this.#proposals;
      let done = 0;
      while (done < proposals.length && proposals[done].index <= index) {
        this.#result({ id: proposals[done].id, index: proposals[done].index });
        done++;
      }
      if (done > 0) proposals.splice(0, done);
      if (!this.#serving && index >= this.#noopIndex) {
        this.#serving = true;
        this.#event("serving", { epoch: this.#epoch, noopIndex: this.#noopIndex });
      }
    }
  }

  #emitCommitted(): void {
    if (this.#emittedIndex >= this.#commitIndex) return;
    if (this.#committed === NONE) this.#committed = [];
    const log = this.#log;
    const base = this.#snapshotIndex + 1;
    for (let index = this.#emittedIndex + 1; index <= this.#commitIndex; index++) {
      this.#committed.push(log[index - base]);
    }
    this.#emittedIndex = this.#commitIndex;
  }

  // ------------------------------------------------------------------ roles

  #onCampaign(epoch: number): void {
    assert(Number.isSafeInteger(epoch) && epoch >= 1, `campaign epoch ${epoch}`);
    if (this.#role !== "follower" && this.#epoch === epoch) return; // duplicate
    const again = epoch === this.#promisedEpoch && this.#promisedTo === this.#self;
    if (epoch < this.#promisedEpoch || (epoch === this.#promisedEpoch && !again)) {
      // An epoch this node already promised to someone (or cannot prove it did not).
      this.#event("campaign_refused", { epoch, promisedEpoch: this.#promisedEpoch });
      return;
    }
    if (this.#role !== "follower") this.#abdicate("new_campaign", epoch);
    if (epoch > this.#promisedEpoch) this.#raisePromise(epoch, this.#self);
    this.#role = "candidate";
    this.#epoch = epoch;
    this.#leader = undefined;
    this.#followEpoch = -1;
    this.#event("campaign", { epoch, lastEpoch: this.lastEpoch, lastIndex: this.lastIndex });
    this.#startRecovery();
  }

  /** Leaves the leader or candidate role; appended proposals become "unknown", reads "unavailable". */
  #abdicate(reason: string, epoch?: number): void {
    assert(this.#role !== "follower", "abdicate as follower");
    for (const proposal of this.#proposals) this.#result({ id: proposal.id, failure: "unknown" });
    this.#proposals = [];
    for (const read of this.#pendingReads) this.#readDone({ id: read.id, failure: "unavailable" });
    this.#pendingReads = [];
    this.#event("step_down", { epoch: this.#epoch, role: this.#role, reason, higherEpoch: epoch });
    this.#role = "follower";
    this.#serving = false;
    this.#recovery = "none";
    this.#source = undefined;
    this.#readRoundWanted = false;
    this.#leader = undefined;
    this.#followEpoch = -1;
  }

  /** A reply showed a higher promise somewhere: this node can never commit in its epoch again. */
  #fenced(promisedEpoch: number, by: string): void {
    this.#event("fenced", { epoch: this.#epoch, promisedEpoch, by });
    this.#abdicate("fenced", promisedEpoch);
  }

  // --------------------------------------------------------------- recovery

  #startRecovery(): void {
    this.#recovery = "promising";
    this.#source = undefined;
    this.#recoveryProgressAt = this.#now;
    for (const peer of this.#peers) {
      peer.promised = undefined;
      peer.promiseSentAt = -Infinity;
    }
    this.#sendPromises();
    this.#maybeRecover();
  }

  #sendPromises(): void {
    for (const peer of this.#peers) {
      if (peer.promised !== undefined || this.#now - peer.promiseSentAt < this.#retryMs) continue;
      peer.promiseSentAt = this.#now;
      this.#send({ type: "promise", partition: this.#partition, from: this.#self, to: peer.id, epoch: this.#epoch });
    }
  }

  /** With durable promises from a majority (self included), adopt the best log among them. */
  #maybeRecover(): void {
    if (this.#role !== "candidate" || this.#recovery !== "promising") return;
    if (this.#durablePromisedEpoch < this.#epoch) return;
    let count = 1;
    for (const peer of this.#peers) if (peer.promised !== undefined) count++;
    if (count < this.#majority) return;
    let best: Peer | undefined;
    let bestEpoch = this.lastEpoch;
    let bestIndex = this.lastIndex;
    for (const peer of this.#peers) {
      const p = peer.promised;
      if (p === undefined) continue;
      if (p.lastEpoch > bestEpoch || (p.lastEpoch === bestEpoch && p.lastIndex > bestIndex)) {
        best = peer;
        bestEpoch = p.lastEpoch;
        bestIndex = p.lastIndex;
      }
    }
    this.#event("promised", { epoch: this.#epoch, promises: count, source: best?.id ?? this.#self, bestEpoch, bestIndex });
    if (best === undefined) {
      this.#becomeLeader();
      return;
    }
    this.#source = best;
    this.#fetchTarget = bestIndex;
    this.#recovery = "fetching";
    this.#recoveryProgressAt = this.#now;
    this.#continueFetch(best.promised!.firstIndex);
  }

  /**
   * Fetches the source's log from #fetchNext. Entries up to our commit index
   * are identical everywhere; beyond it, first probe whether the source holds
   * our entry at min(lastIndex, target): the same (index, epoch) means the
   * same prefix (Log Matching), so only the rest has to travel.
   */
  #continueFetch(sourceFirstIndex: number): void {
    this.#sourceFirstIndex = sourceFirstIndex;
    this.#fetchNext = this.#commitIndex + 1;
    this.#fetchSentAt = -Infinity;
    if (this.#fetchNext > this.#fetchTarget) {
      this.#becomeLeader();
      return;
    }
    const probe = Math.min(this.lastIndex, this.#fetchTarget);
    if (probe >= this.#fetchNext && probe >= sourceFirstIndex) {
      this.#probeIndex = probe;
      this.#probesLeft = MAX_RECOVERY_PROBES;
      this.#sendFetch();
    } else {
      this.#fetchFromNext();
    }
  }

  #fetchFromNext(): void {
    this.#probeIndex = 0;
    if (this.#sourceFirstIndex > this.#fetchNext) this.#askSnapshot();
    else this.#sendFetch();
  }

  #sendFetch(): void {
    const source = this.#source!;
    this.#fetchSentAt = this.#now;
    this.#send({
      type: "fetch",
      partition: this.#partition,
      from: this.#self,
      to: source.id,
      epoch: this.#epoch,
      fromIndex: this.#probeIndex > 0 ? this.#probeIndex : this.#fetchNext,
      maxEntries: this.#probeIndex > 0 ? 1 : this.#maxBatch,
    });
  }

  #askSnapshot(): void {
    this.#recovery = "snapshot";
    this.#snapshotAskedAt = this.#now;
    if (this.#needSnapshotFrom === NONE) this.#needSnapshotFrom = [];
    this.#needSnapshotFrom.push({ from: this.#source!.id });
    this.#event("snapshot_needed", { from: this.#source!.id, fromIndex: this.#fetchNext });
  }

  #restartRecovery(reason: string): void {
    this.#event("recovery_restart", { epoch: this.#epoch, reason, source: this.#source?.id });
    this.#startRecovery();
  }

  #becomeLeader(): void {
    assert(this.#role === "candidate", "become leader from " + this.#role);
    assert(this.#promisedEpoch === this.#epoch, "leader epoch differs from promise");
    if (this.#source !== undefined && this.lastIndex > this.#fetchTarget) this.#truncate(this.#fetchTarget);
    this.#source = undefined;
    this.#recovery = "none";
    this.#role = "leader";
    this.#serving = false;
    this.#leader = this.#self;
    if (this.#readSeqEpoch !== this.#epoch) {
      this.#readSeqEpoch = this.#epoch;
      this.#readSeq = 0;
    }
    this.#readRoundWanted = false;
    const noopIndex = this.lastIndex + 1;
    this.#noopIndex = noopIndex;
    for (const peer of this.#peers) {
      peer.matchIndex = 0;
      peer.nextIndex = noopIndex;
      peer.ackedReadSeq = 0;
      peer.lastSentAt = -Infinity;
      peer.lastProgressAt = this.#now;
      peer.lastHeardAt = this.#now; // a new leader starts with a full grace period
      peer.probing = true;
      peer.probeSentAt = -1;
      peer.snapshotSentAt = -1;
    }
    this.#append({ epoch: this.#epoch, index: noopIndex, op: "noop", key: "", value: EMPTY_VALUE });
    this.#event("leading", { epoch: this.#epoch, noopIndex, commitIndex: this.#commitIndex });
  }

  // ---------------------------------------------------------------- messages

  #onMessage(message: PeerMessage): void {
    if (
      message.partition !== this.#partition || message.to !== this.#self || !this.#peerById.has(message.from)
    ) {
      this.#event("invalid_message", { type: message.type, from: message.from, reason: "wrong partition or member" });
      return;
    }
    this.#peerById.get(message.from)!.lastHeardAt = this.#now;
    switch (message.type) {
      case "promise":
        this.#onPromise(message);
        break;
      case "promise_reply":
        this.#onPromiseReply(message);
        break;
      case "fetch":
        this.#onFetch(message);
        break;
      case "fetch_reply":
        this.#onFetchReply(message);
        break;
      case "replicate":
        this.#onReplicate(message);
        break;
      case "replicate_reply":
        this.#onReplicateReply(message);
        break;
      default:
        this.#event("invalid_message", { type: (message as { type: string }).type, reason: "unknown type" });
    }
  }

  /**
   * True when `epoch` is this node's own (it campaigns or leads in it, or may
   * lead in it again): another node claiming it is garbage. Epochs are unique
   * election sequence numbers; this only guards against a misbehaving peer.
   */
  #ownsEpoch(epoch: number): boolean {
    return epoch === this.#promisedEpoch && (this.#role !== "follower" || this.#promisedTo === this.#self);
  }

  #fencingRejection(type: string, from: string, epoch: number): void {
    this.#event("fencing_rejection", { type, from, epoch, promisedEpoch: this.#promisedEpoch });
  }

  #onPromise(m: Extract<PeerMessage, { type: "promise" }>): void {
    if (m.epoch < this.#promisedEpoch) {
      this.#fencingRejection("promise", m.from, m.epoch);
      this.#sendPromiseReply(m.from, m.epoch, false);
      return;
    }
    if (this.#ownsEpoch(m.epoch)) {
      this.#event("invalid_message", { type: "promise", from: m.from, reason: "our own epoch", epoch: m.epoch });
      return;
    }
    if (m.epoch > this.#promisedEpoch) this.#raisePromise(m.epoch, m.from);
    this.#promiseReplies.set(m.from, m.epoch);
    this.#flushPromiseReplies();
  }

  /** Sends the promise replies whose promise is durable (or that must now be refused). */
  #flushPromiseReplies(): void {
    if (this.#promiseReplies.size === 0) return;
    for (const [to, epoch] of this.#promiseReplies) {
      if (epoch < this.#promisedEpoch) {
        this.#sendPromiseReply(to, epoch, false);
        this.#promiseReplies.delete(to);
      } else if (this.#durablePromisedEpoch >= epoch) {
        this.#sendPromiseReply(to, epoch, true);
        this.#promiseReplies.delete(to);
      }
    }
  }

  #sendPromiseReply(to: string, epoch: number, ok: boolean): void {
    // Report the durable log only: what a crash cannot take back.
    const lastIndex = this.#stableIndex;
    this.#send({
      type: "promise_reply",
      partition: this.#partition,
      from: this.#self,
      to,
      epoch,
      ok,
      promisedEpoch: this.#promisedEpoch,
      lastEpoch: this.#epochAt(lastIndex),
      lastIndex,
      commitIndex: this.#commitIndex,
      firstIndex: this.#snapshotIndex + 1,
    });
  }

  #onPromiseReply(m: Extract<PeerMessage, { type: "promise_reply" }>): void {
    if (this.#role !== "candidate" || m.epoch !== this.#epoch) return;
    if (!m.ok) {
      if (m.promisedEpoch > this.#epoch) this.#fenced(m.promisedEpoch, m.from);
      return;
    }
    if (this.#recovery !== "promising") return;
    if (m.lastIndex < m.firstIndex - 1 || m.lastEpoch > this.#epoch || m.commitIndex > m.lastIndex) {
      this.#event("invalid_message", { type: "promise_reply", from: m.from, reason: "inconsistent log position" });
      return;
    }
    const peer = this.#peerById.get(m.from)!;
    peer.promised = {
      lastEpoch: m.lastEpoch,
      lastIndex: m.lastIndex,
      commitIndex: m.commitIndex,
      firstIndex: m.firstIndex,
    };
    this.#maybeRecover();
  }

  #onFetch(m: Extract<PeerMessage, { type: "fetch" }>): void {
    const refuse = m.epoch !== this.#promisedEpoch || this.#durablePromisedEpoch < m.epoch || this.#role !== "follower";
    if (refuse && m.epoch < this.#promisedEpoch) this.#fencingRejection("fetch", m.from, m.epoch);
    const stable = this.#stableIndex;
    let entries: LogEntry[] = [];
    let snapshotNeeded = false;
    if (!refuse) {
      if (m.fromIndex <= this.#snapshotIndex) {
        snapshotNeeded = true;
      } else if (m.fromIndex <= stable) {
        const count = Math.min(m.maxEntries, this.#maxBatch, stable - m.fromIndex + 1);
        const start = m.fromIndex - this.#snapshotIndex - 1;
        entries = this.#log.slice(start, start + count);
      }
    }
    this.#send({
      type: "fetch_reply",
      partition: this.#partition,
      from: this.#self,
      to: m.from,
      epoch: m.epoch,
      fromIndex: m.fromIndex,
      ok: !refuse,
      entries,
      lastIndex: stable,
      snapshotNeeded,
      promisedEpoch: this.#promisedEpoch,
    });
  }

  #onFetchReply(m: Extract<PeerMessage, { type: "fetch_reply" }>): void {
    if (this.#role !== "candidate" || m.epoch !== this.#epoch || this.#recovery !== "fetching") return;
    if (this.#source === undefined || m.from !== this.#source.id) return;
    if (!m.ok) {
      if (m.promisedEpoch > this.#epoch) this.#fenced(m.promisedEpoch, m.from);
      else this.#restartRecovery("fetch refused");
      return;
    }
    if (m.fromIndex !== (this.#probeIndex > 0 ? this.#probeIndex : this.#fetchNext)) return; // stale or duplicate
    if (m.snapshotNeeded) {
      if (m.fromIndex >= this.#sourceFirstIndex) this.#sourceFirstIndex = m.fromIndex + 1;
      // A probe that fell before the source's log start: fetch from our commit index instead.
      if (this.#probeIndex > 0) this.#fetchFromNext();
      else this.#askSnapshot();
      return;
    }
    if (m.lastIndex < this.#fetchTarget) {
      // The source lost entries it promised it had durably: start over with fresh promises.
      this.#restartRecovery("source shorter than promised");
      return;
    }
    const entries = m.entries;
    if (this.#probeIndex > 0) {
      if (entries.length !== 1 || entries[0].index !== this.#probeIndex) return; // stale
      this.#recoveryProgressAt = this.#now;
      this.#onProbeReply(entries[0].epoch);
      return;
    }
    if (entries.length === 0 || entries[0].index !== this.#fetchNext) return; // stale or duplicate
    if (!validEntries(entries, this.#fetchNext - 1, this.#epochAt(this.#fetchNext - 1), this.#epoch - 1)) {
      this.#event("invalid_message", { type: "fetch_reply", from: m.from, reason: "entries do not chain" });
      return;
    }
    for (const entry of entries) {
      if (entry.index > this.#fetchTarget) break;
      this.#mergeEntry(entry);
    }
    this.#fetchNext = Math.min(entries[entries.length - 1].index, this.#fetchTarget) + 1;
    this.#recoveryProgressAt = this.#now;
    if (this.#fetchNext > this.#fetchTarget) this.#becomeLeader();
    else this.#sendFetch();
  }

  #onProbeReply(theirs: number): void {
    const probe = this.#probeIndex;
    if (this.#epochAt(probe) === theirs) {
      this.#fetchNext = probe + 1;
      this.#probeIndex = 0;
      if (this.#fetchNext > this.#fetchTarget) this.#becomeLeader();
      else this.#sendFetch();
      return;
    }
    // Our entries of epochs above theirs cannot be in the source's log at
    // those positions: probe our last entry whose epoch is at most theirs.
    let index = probe - 1;
    let scanned = 0;
    while (index > this.#commitIndex && scanned < MAX_CONFLICT_SCAN && this.#epochAt(index) > theirs) {
      index--;
      scanned++;
    }
    this.#probesLeft--;
    if (index <= this.#commitIndex || index < this.#sourceFirstIndex || this.#probesLeft <= 0) {
      this.#fetchFromNext();
    } else {
      this.#probeIndex = index;
      this.#sendFetch();
    }
  }

  /** Keeps a matching entry, or replaces the conflicting suffix from it on. */
  #mergeEntry(entry: LogEntry): void {
    if (entry.index <= this.#snapshotIndex) return;
    if (entry.index <= this.lastIndex) {
      if (this.#epochAt(entry.index) === entry.epoch) return;
      this.#truncate(entry.index - 1);
    }
    this.#append(entry);
  }

  #onReplicate(m: Extract<PeerMessage, { type: "replicate" }>): void {
    if (m.epoch < this.#promisedEpoch) {
      this.#fencingRejection("replicate", m.from, m.epoch);
      this.#sendReplicateReply(m.from, m.epoch, false, 0, this.lastIndex, 0);
      return;
    }
    if (this.#ownsEpoch(m.epoch)) {
      this.#event("invalid_message", { type: "replicate", from: m.from, reason: "our own epoch", epoch: m.epoch });
      return;
    }
    if (!validEntries(m.entries, m.prevIndex, m.prevEpoch, m.epoch) || m.prevEpoch > m.epoch) {
      this.#event("invalid_message", { type: "replicate", from: m.from, reason: "entries do not chain" });
      return;
    }
    if (m.epoch > this.#promisedEpoch) this.#raisePromise(m.epoch, m.from);
    if (this.#followEpoch !== m.epoch) {
      this.#followEpoch = m.epoch;
      // Committed entries are in every leader's log.
      this.#matchLeader = this.#commitIndex;
      this.#lastReadSeq = 0;
      this.#ackedReadSeq = 0;
      this.#ackedMatch = -1;
      this.#ackPending = false;
    }
    this.#leader = m.from;

    const prev = m.prevIndex;
    if (prev > this.#commitIndex) {
      if (prev > this.lastIndex) {
        this.#sendReplicateReply(m.from, m.epoch, false, 0, this.lastIndex, 0);
        return;
      }
      if (this.#epochAt(prev) !== m.prevEpoch) {
        this.#sendReplicateReply(m.from, m.epoch, false, 0, this.#conflictHint(prev), 0);
        return;
      }
    } else if (prev >= this.#snapshotIndex && prev > 0) {
      assert(this.#epochAt(prev) === m.prevEpoch, `committed entry ${prev} differs from leader ${m.from}'s`);
    }
    for (const entry of m.entries) this.#mergeEntry(entry);
    const end = prev + m.entries.length;
    if (end > this.#matchLeader) this.#matchLeader = end;
    const commit = Math.min(m.commitIndex, this.#matchLeader);
    if (commit > this.#commitIndex) this.#advanceCommit(commit);
    const readSeqAdvanced = m.readSeq > this.#ackedReadSeq;
    if (m.readSeq > this.#lastReadSeq) this.#lastReadSeq = m.readSeq;
    this.#ackPending = true;
    // Ack now if everything matched is durable or a read round waits on us;
    // otherwise the ack goes out when the persist completes.
    if (this.#stableIndex >= this.#matchLeader || readSeqAdvanced) this.#sendAck();
  }

  /** The index just before the run of entries of the conflicting epoch (but not below the commit index). */
  #conflictHint(prev: number): number {
    const epoch = this.#epochAt(prev);
    const floor = Math.max(this.#commitIndex, this.#snapshotIndex);
    let index = prev;
    let scanned = 0;
    while (index - 1 > floor && scanned < MAX_CONFLICT_SCAN && this.#epochAt(index - 1) === epoch) {
      index--;
      scanned++;
    }
    return index - 1;
  }

  #sendAck(): void {
    if (this.#role !== "follower" || this.#leader === undefined || this.#followEpoch !== this.#promisedEpoch) {
      this.#ackPending = false;
      return;
    }
    const match = Math.min(this.#stableIndex, this.#matchLeader);
    this.#sendReplicateReply(this.#leader, this.#followEpoch, true, match, this.lastIndex, this.#lastReadSeq);
    this.#ackedMatch = match;
    this.#ackedReadSeq = this.#lastReadSeq;
    this.#ackPending = match < this.#matchLeader;
  }

  #sendReplicateReply(
    to: string,
    epoch: number,
    ok: boolean,
    matchIndex: number,
    lastIndex: number,
    readSeq: number,
  ): void {
    this.#send({
      type: "replicate_reply",
      partition: this.#partition,
      from: this.#self,
      to,
      epoch,
      ok,
      matchIndex,
      lastIndex,
      promisedEpoch: this.#promisedEpoch,
      readSeq,
    });
  }

  #onReplicateReply(m: Extract<PeerMessage, { type: "replicate_reply" }>): void {
    if (this.#role !== "leader" || m.epoch !== this.#epoch) return;
    const peer = this.#peerById.get(m.from)!;
    if (!m.ok) {
      if (m.promisedEpoch > this.#epoch) {
        this.#fenced(m.promisedEpoch, m.from);
        return;
      }
      // Log mismatch: back up to the member's hint, one probe at a time.
      peer.probing = true;
      peer.probeSentAt = -1;
      const hint = Math.min(m.lastIndex, this.lastIndex);
      peer.nextIndex = Math.max(peer.matchIndex + 1, Math.min(hint + 1, peer.nextIndex - 1));
      return;
    }
    if (m.matchIndex > this.lastIndex || m.readSeq > this.#readSeq) {
      this.#event("invalid_message", { type: "replicate_reply", from: m.from, reason: "ahead of the leader" });
      return;
    }
    if (m.matchIndex > peer.matchIndex) {
      peer.matchIndex = m.matchIndex;
      peer.lastProgressAt = this.#now;
      if (peer.snapshotSentAt >= 0 && m.matchIndex >= this.#snapshotIndex) peer.snapshotSentAt = -1;
    }
    if (peer.probing) {
      peer.probing = false;
      peer.probeSentAt = -1;
      peer.nextIndex = peer.matchIndex + 1;
    } else if (peer.nextIndex <= peer.matchIndex) {
      peer.nextIndex = peer.matchIndex + 1;
    }
    if (m.readSeq > peer.ackedReadSeq) {
      peer.ackedReadSeq = m.readSeq;
      this.#releaseReads();
    }
    this.#maybeCommit();
  }

  // ----------------------------------------------------------------- leader

  /** Commits the highest index durable on a majority, if it is of this epoch (Raft figure 8). */
  #maybeCommit(): void {
    if (this.#role !== "leader") return;
    const values = this.#scratch;
    values[0] = this.#stableIndex;
    for (let i = 0; i < this.#peers.length; i++) values[i + 1] = this.#peers[i].matchIndex;
    values.sort(descending);
    const index = values[this.#majority - 1];
    if (index > this.#commitIndex && this.#epochAt(index) === this.#epoch) this.#advanceCommit(index);
  }

  /** Releases the reads whose heartbeat round a majority (self included) acknowledged. */
  #releaseReads(): void {
    const reads = this.#pendingReads;
    if (reads.length === 0) return;
    const values = this.#scratch;
    values[0] = this.#readSeq;
    for (let i = 0; i < this.#peers.length; i++) values[i + 1] = this.#peers[i].ackedReadSeq;
    values.sort(descending);
    const confirmed = values[this.#majority - 1];
    let done = 0;
    while (done < reads.length && reads[done].seq <= confirmed && reads[done].readIndex <= this.#commitIndex) {
      this.#readDone({ id: reads[done].id });
      done++;
    }
    if (done > 0) reads.splice(0, done);
  }

  #flushLeader(): void {
    let force = false;
    if (this.#readRoundWanted) {
      this.#readRoundWanted = false;
      this.#readSeq++;
      force = true;
    }
    for (const peer of this.#peers) this.#sendAppends(peer, force);
    if (force) this.#releaseReads();
  }

  /** Sends `peer` what it lacks (within the in-flight limit), or a heartbeat when one is due. */
  #sendAppends(peer: Peer, force: boolean): void {
    const now = this.#now;
    if (peer.snapshotSentAt >= 0 && now - peer.snapshotSentAt >= this.#snapshotRetryMs) {
      // No word of the snapshot: probe just after our log start, which resends it if still needed.
      peer.snapshotSentAt = -1;
      peer.probing = true;
      peer.probeSentAt = -1;
      peer.nextIndex = Math.max(peer.matchIndex + 1, this.#snapshotIndex + 1);
    }
    if (peer.snapshotSentAt < 0 && peer.nextIndex - 1 < this.#snapshotIndex) {
      if (this.#sendSnapshot === NONE) this.#sendSnapshot = [];
      this.#sendSnapshot.push({ to: peer.id });
      peer.snapshotSentAt = now;
      this.#event("snapshot_send", { to: peer.id, nextIndex: peer.nextIndex, snapshotIndex: this.#snapshotIndex });
    }
    let sent = false;
    if (peer.snapshotSentAt < 0) {
      const last = this.lastIndex;
      while (peer.nextIndex <= last) {
        if (peer.probing && peer.probeSentAt >= 0) break;
        const inflight = peer.nextIndex - 1 - peer.matchIndex;
        if (inflight >= this.#maxInflight && !peer.probing) break;
        const from = peer.nextIndex;
        let to = Math.min(last, from + this.#maxBatch - 1);
        if (!peer.probing) to = Math.min(to, peer.matchIndex + this.#maxInflight);
        if (inflight <= 0) peer.lastProgressAt = now;
        const start = from - this.#snapshotIndex - 1;
        this.#sendReplicate(peer.id, from - 1, this.#log.slice(start, start + (to - from + 1)));
        sent = true;
        if (peer.probing) {
          peer.probeSentAt = now;
          break;
        }
        peer.nextIndex = to + 1;
      }
    }
    if (!sent && (force || now - peer.lastSentAt >= this.#heartbeatMs)) {
      if (peer.probing && peer.probeSentAt < 0 && peer.snapshotSentAt < 0) {
        // Nothing to send, but where the member's log matches is unknown: the
        // heartbeat itself probes at nextIndex - 1 (it may hold our entries
        // already, e.g. after declining a snapshot it did not need).
        this.#sendReplicate(peer.id, peer.nextIndex - 1, []);
        peer.probeSentAt = now;
      } else {
        // Otherwise a heartbeat checks only what is known to match, so it is always accepted.
        this.#sendReplicate(peer.id, peer.matchIndex >= this.#snapshotIndex ? peer.matchIndex : 0, []);
      }
      sent = true;
    }
    if (sent) peer.lastSentAt = now;
  }

  #sendReplicate(to: string, prevIndex: number, entries: LogEntry[]): void {
    this.#send({
      type: "replicate",
      partition: this.#partition,
      from: this.#self,
      to,
      epoch: this.#epoch,
      prevEpoch: prevIndex === 0 ? 0 : this.#epochAt(prevIndex),
      prevIndex,
      entries,
      commitIndex: this.#commitIndex,
      readSeq: this.#readSeq,
    });
  }

  #onPropose(id: number, proposal: Proposal): void {
    if (this.#role !== "leader" || !this.#serving) {
      this.#result({ id, failure: "unavailable" });
      return;
    }
    if (this.lastIndex - this.#commitIndex >= this.#maxUncommitted) {
      this.#result({ id, failure: "unavailable" });
      return;
    }
    assert(proposal.op === "put" || proposal.op === "delete", `proposal op ${proposal.op}`);
    const index = this.lastIndex + 1;
    this.#append({
      epoch: this.#epoch,
      index,
      op: proposal.op,
      key: proposal.key,
      value: proposal.op === "put" ? proposal.value : EMPTY_VALUE,
    });
    this.#proposals.push({ id, index });
  }

  #onRead(id: number): void {
    if (this.#role !== "leader" || !this.#serving || this.#pendingReads.length >= this.#maxPendingReads) {
      this.#readDone({ id, failure: "unavailable" });
      return;
    }
    // Wait for a round that starts after this read arrived: the next one.
    this.#pendingReads.push({ id, seq: this.#readSeq + 1, readIndex: this.#commitIndex });
    this.#readRoundWanted = true;
  }

  // ------------------------------------------------------------ host events

  #onTick(now: number): void {
    assert(now >= this.#now, `clock went back from ${this.#now} to ${now}`);
    this.#now = now;
    if (this.#role === "leader") {
      for (const peer of this.#peers) {
        if (peer.probing) {
          if (peer.probeSentAt >= 0 && now - peer.probeSentAt >= this.#resendMs) peer.probeSentAt = -1;
        } else if (peer.nextIndex - 1 > peer.matchIndex && now - peer.lastProgressAt >= this.#resendMs) {
          // Entries in flight and no progress: assume loss, resend from the known match.
          peer.nextIndex = peer.matchIndex + 1;
          peer.probing = true;
          peer.probeSentAt = -1;
        }
      }
    } else if (this.#role === "candidate") {
      switch (this.#recovery) {
        case "promising":
          this.#sendPromises();
          break;
        case "fetching":
          if (now - this.#recoveryProgressAt >= this.#stallMs) this.#restartRecovery("fetch stalled");
          else if (now - this.#fetchSentAt >= this.#retryMs) this.#sendFetch();
          break;
        case "snapshot":
          if (now - this.#recoveryProgressAt >= this.#stallMs) {
            this.#restartRecovery("snapshot stalled");
          } else if (now - this.#snapshotAskedAt >= this.#snapshotRetryMs) {
            // No usable snapshot came (lost, or not beyond our commit index after all):
            // ask the source again where its log starts by fetching from our commit index.
            this.#recovery = "fetching";
            this.#probeIndex = 0;
            this.#fetchNext = this.#commitIndex + 1;
            this.#sendFetch();
          }
          break;
      }
    }
  }

  #onPersisted(persistId: number): void {
    assert(
      Number.isSafeInteger(persistId) && persistId >= 1 && persistId < this.#nextPersistId,
      `persisted ${persistId} was never handed out`,
    );
    const pending = this.#pendingPersists;
    let done = 0;
    while (done < pending.length && pending[done].id <= persistId) {
      const p = pending[done];
      if (p.lastIndex > this.#stableIndex) this.#stableIndex = p.lastIndex;
      if (p.promisedEpoch > this.#durablePromisedEpoch) this.#durablePromisedEpoch = p.promisedEpoch;
      done++;
    }
    if (done === 0) return;
    pending.splice(0, done);
    this.#flushPromiseReplies();
    switch (this.#role) {
      case "follower":
        if (this.#ackPending && Math.min(this.#stableIndex, this.#matchLeader) > this.#ackedMatch) this.#sendAck();
        break;
      case "candidate":
        this.#maybeRecover();
        break;
      case "leader":
        this.#maybeCommit();
        break;
    }
  }

  #onSnapshotInstalled(index: number, epoch: number): void {
    assert(Number.isSafeInteger(index) && index > this.#snapshotIndex, `snapshot ${index} not after ${this.#snapshotIndex}`);
    const matched = index <= this.lastIndex && this.#epochAt(index) === epoch;
    assert(matched || index > this.#commitIndex, `snapshot (${index}, ${epoch}) contradicts committed entry ${index}`);
    if (epoch > this.#promisedEpoch) {
      // A committed entry of `epoch` means a majority promised it: every lower
      // epoch is fenced. Promise it too (deposing a lower candidate or leader).
      this.#raisePromise(epoch, undefined);
    } else if (!matched && this.#role === "leader") {
      // A current leader's log holds every committed entry: this one was deposed and did not know.
      this.#fenced(this.#promisedEpoch, "snapshot");
    }
    // Installing resets the host's log to the snapshot (writes handed out
    // before it are carried out first, then dropped). A suffix after a
    // matching (index, epoch) is still valid: it goes back to disk at once
    // (only a host that installs a snapshot it did not need causes that).
    const kept = matched ? this.#log.slice(index - this.#snapshotIndex) : [];
    this.#log = kept;
    this.#batchEntries = kept.slice();
    this.#batchTruncateAfter = -1;
    for (const pending of this.#pendingPersists) {
      if (pending.lastIndex > index) pending.lastIndex = index;
    }
    this.#stableIndex = index;
    this.#matchLeader = matched ? Math.max(this.#matchLeader, index) : index;
    this.#snapshotIndex = index;
    this.#snapshotEpoch = epoch;
    // The host's store is now the snapshot: committed entries not yet taken
    // are superseded, and those after the snapshot are emitted again. A
    // result naming a superseded entry cannot be given its apply outcome
    // (DELETED or NOT_FOUND): it becomes "unknown", which is always true.
    if (this.#committed.length > 0) {
      const firstSuperseded = this.#committed[0].index;
      const results = this.#results;
      for (let i = 0; i < results.length; i++) {
        const result = results[i];
        if ("index" in result && result.index >= firstSuperseded && result.index <= index) {
          results[i] = { id: result.id, failure: "unknown" };
        }
      }
    }
    this.#committed = NONE;
    this.#emittedIndex = index;
    if (this.#commitIndex < index) this.#commitIndex = index;
    this.#emitCommitted();
    this.#afterLeaderCommit();
    this.#event("snapshot_installed", { index, epoch, keptLog: matched });
    if (this.#role === "candidate" && (this.#recovery === "snapshot" || this.#recovery === "fetching")) {
      if (this.#commitIndex > this.#fetchTarget) {
        // Committed beyond the best log of our promises: a later epoch got there; ask again.
        this.#restartRecovery("snapshot beyond the recovery target");
      } else {
        this.#recovery = "fetching";
        this.#recoveryProgressAt = this.#now;
        this.#continueFetch(index + 1);
      }
    } else if (this.#role === "follower" && this.#leader !== undefined && this.#followEpoch === this.#promisedEpoch) {
      // Tell the leader at once where we are now (it waits for this to stop snapshotting).
      this.#sendAck();
    }
  }

  #onCompacted(index: number, epoch: number): void {
    assert(Number.isSafeInteger(index) && index >= 0, `compacted ${index}`);
    if (index <= this.#snapshotIndex) return;
    assert(index <= this.#emittedIndex, `compacted ${index} beyond applied ${this.#emittedIndex}`);
    assert(this.#epochAt(index) === epoch, `compacted (${index}, ${epoch}) differs from the log`);
    this.#log.splice(0, index - this.#snapshotIndex);
    this.#snapshotIndex = index;
    this.#snapshotEpoch = epoch;
    if (this.#stableIndex < index) this.#stableIndex = index;
  }

  #checkInvariants(): void {
    const last = this.lastIndex;
    assert(this.#snapshotIndex <= this.#commitIndex, "snapshot beyond commit");
    assert(this.#commitIndex <= last, `commit ${this.#commitIndex} beyond last ${last}`);
    assert(this.#emittedIndex === this.#commitIndex, "committed entries not all emitted");
    assert(this.#stableIndex >= this.#snapshotIndex && this.#stableIndex <= last, "durable index out of the log");
    assert(this.#durablePromisedEpoch <= this.#promisedEpoch, "durable promise above promise");
    assert(this.lastEpoch <= this.#promisedEpoch, "log epoch above promise");
    if (this.#role !== "follower") assert(this.#epoch === this.#promisedEpoch, "role epoch differs from promise");
    if (this.#role === "leader") assert(this.#serving === this.#commitIndex >= this.#noopIndex, "serving flag");
  }
}

function positive(value: number, name: string): number {
  assert(Number.isSafeInteger(value) && value > 0, `${name} must be a positive integer, got ${value}`);
  return value;
}

function descending(a: number, b: number): number {
  return b - a;
}

/** Entries must follow (prevIndex, prevEpoch) without gaps, epochs never decreasing and at most `maxEpoch`. */
function validEntries(entries: readonly LogEntry[], prevIndex: number, prevEpoch: number, maxEpoch: number): boolean {
  let epoch = prevEpoch;
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i];
    if (entry.index !== prevIndex + 1 + i || entry.epoch < epoch || entry.epoch > maxEpoch) return false;
    epoch = entry.epoch;
  }
  return true;
}

function checkRecovered(recovered: RecoveredState): void {
  const { promisedEpoch, entries, snapshotIndex, snapshotEpoch } = recovered;
  assert(Number.isSafeInteger(promisedEpoch) && promisedEpoch >= 0, "recovered promisedEpoch");
  assert(Number.isSafeInteger(snapshotIndex) && snapshotIndex >= 0, "recovered snapshotIndex");
  assert(Number.isSafeInteger(snapshotEpoch) && snapshotEpoch >= 0, "recovered snapshotEpoch");
  // The first entry may be of a lower epoch than the snapshot (see the constructor); the rest must chain.
  const first = entries.length > 0 ? entries[0].epoch : 0;
  assert(
    validEntries(entries, snapshotIndex, Math.min(snapshotEpoch, first), promisedEpoch),
    "recovered entries do not chain",
  );
}

