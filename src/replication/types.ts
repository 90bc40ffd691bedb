/**
 * The contract between the pure replication core ({@linkcode ReplicaCore} in
 * core.ts) and its hosts: the real node (TCP, files, timers) and the
 * deterministic simulation (seeded fake network, disks, clock).
 *
 * @module
 */
import type { LogEntry } from "../storage/entry.ts";

export type { LogEntry };

/** A client write handed to the leader. */
export interface Proposal {
  op: "put" | "delete";
  key: string;
  value: Buffer;
}

/** Messages between the members of one partition's replica group. */
export type PeerMessage =
  /** Candidate → member: promise to refuse every epoch below `epoch`. */
  | { type: "promise"; partition: string; from: string; to: string; epoch: number }
  /** Member → candidate, sent only after `promisedEpoch` is durable. `ok` false: the member promised a higher epoch. */
  | {
    type: "promise_reply";
    partition: string;
    from: string;
    to: string;
    epoch: number;
    ok: boolean;
    promisedEpoch: number;
    lastEpoch: number;
    lastIndex: number;
    commitIndex: number;
    /** First index the member still has in its log (entries before it are in its snapshot). */
    firstIndex: number;
  }
  /** Candidate → most up-to-date member: send me your entries from `fromIndex` (recovery before serving). */
  | { type: "fetch"; partition: string; from: string; to: string; epoch: number; fromIndex: number; maxEntries: number }
  /** Reply to `fetch`; `entries` empty and `snapshotNeeded` true when the log no longer reaches back. */
  | {
    type: "fetch_reply";
    partition: string;
    from: string;
    to: string;
    epoch: number;
    /** The request's `fromIndex`: tells a reply from a stale duplicate. */
    fromIndex: number;
    ok: boolean;
    entries: LogEntry[];
    lastIndex: number;
    snapshotNeeded: boolean;
    /** The source's promised epoch: above `epoch` means the candidate is fenced. */
    promisedEpoch: number;
  }
  /**
   * Leader → member: append `entries` after (prevEpoch, prevIndex); also the
   * heartbeat (no entries). `readSeq` numbers heartbeat rounds for read-index.
   */
  | {
    type: "replicate";
    partition: string;
    from: string;
    to: string;
    epoch: number;
    prevEpoch: number;
    prevIndex: number;
    entries: LogEntry[];
    commitIndex: number;
    readSeq: number;
  }
  /**
   * Member → leader. `ok` true: everything up to `matchIndex` matches the
   * leader and is durable (sent only after fsync). `ok` false: stale epoch
   * (`promisedEpoch` says which) or log mismatch (`lastIndex` hints where to
   * back up to).
   */
  | {
    type: "replicate_reply";
    partition: string;
    from: string;
    to: string;
    epoch: number;
    ok: boolean;
    matchIndex: number;
    lastIndex: number;
    promisedEpoch: number;
    readSeq: number;
  };

/** Events a host feeds into {@linkcode ReplicaCore.step}. */
export type CoreEvent =
  /**
   * The election (ZooKeeper, or the simulation's) made this node the candidate
   * leader with `epoch` (an integer >= 1; every later leader gets a higher
   * one, e.g. the candidate znode's sequence number + 1). Campaigning again in
   * the same epoch after a `step_down` is allowed within one process (the
   * session survived); an epoch already promised to another is refused
   * (event `campaign_refused`).
   */
  | { type: "campaign"; epoch: number }
  /** This node must stop leading now (lost the election, ZooKeeper deadline passed, session expired, shutdown). */
  | { type: "step_down" }
  /** Informational: who leads now according to the election (undefined: nobody). */
  | { type: "leader_hint"; leader: string | undefined }
  | { type: "message"; message: PeerMessage }
  /** Time passed; `now` is milliseconds on the host's monotonic clock. Drives heartbeats and retries. */
  | { type: "tick"; now: number }
  /** A client write. Answered later in {@linkcode Ready.results} under the same `id`. */
  | { type: "propose"; id: number; proposal: Proposal }
  /** A linearizable read. Answered in {@linkcode Ready.reads} under `id` once it is safe to read applied state. */
  | { type: "read"; id: number }
  /**
   * The host made everything of the Ready with this `persistId` durable.
   * Persists complete in the order they were handed out; `persisted` for an id
   * also covers every earlier id.
   */
  | { type: "persisted"; persistId: number }
  /**
   * The host durably installed a snapshot of committed state through (index,
   * epoch): its store is that state and its log was reset to it (writes
   * handed out before were carried out first; the log continues at index +
   * 1). Install only when `ReplicaCore.wantsSnapshot(index, epoch)` said so.
   * Committed entries after `index` are then emitted again in
   * `Ready.committed`; committed entries not yet taken are superseded.
   */
  | { type: "snapshot_installed"; index: number; epoch: number }
  /**
   * The host durably wrote a snapshot through `index` (at most the last index
   * it applied from `Ready.committed`); the core may forget entries up to it.
   */
  | { type: "compacted"; index: number; epoch: number };

/** Why a proposal or read was not carried out. */
export type Failure =
  /** Never appended to the log: safe to retry, nothing changed. Maps to ERR UNAVAILABLE. */
  | "unavailable"
  /** Appended but leadership was lost before commit: it may or may not commit. Maps to ERR TIMEOUT. */
  | "unknown";

/** What the host must do after one or more events; take it with {@linkcode ReplicaCore.ready}. */
export interface Ready {
  /**
   * Durable work, in order: persist `promisedEpoch` (if set), drop log
   * entries after `truncateAfter` (if set), then append `entries`; fsync;
   * then step `{ type: "persisted", persistId }`. Undefined: nothing to persist.
   * Persists are carried out and acknowledged in the order handed out (a
   * crash may keep any prefix of them, even part of one). `entries` continue
   * the log the earlier persists (and a snapshot installation) leave.
   */
  persist?: {
    persistId: number;
    promisedEpoch?: number;
    truncateAfter?: number;
    entries: LogEntry[];
  };
  /** Send these now (they never depend on `persist` above: acks are only produced after `persisted`). */
  messages: PeerMessage[];
  /** Newly committed entries, in index order: apply them to the store. */
  committed: LogEntry[];
  /**
   * Outcomes of proposals: the id's entry is in `committed` (of this or an
   * earlier Ready) — apply first, then answer. A result whose entry an
   * installed snapshot superseded before it was handed out comes as
   * `failure: "unknown"` (its apply outcome cannot be known).
   */
  results: Array<{ id: number; index: number } | { id: number; failure: Failure }>;
  /** Reads that may now be served from applied state (everything in `committed` applied first). */
  reads: Array<{ id: number } | { id: number; failure: Failure }>;
  /**
   * Stream a snapshot of the applied state (committed, so any epoch's) to
   * member `to`: it needs entries before this log's start. Asked again after
   * SNAPSHOT_RETRY_HEARTBEATS without word; ignore a repeat while still
   * streaming to `to`. The receiving host installs it only if its core's
   * `wantsSnapshot(index, epoch)` is true, then steps `snapshot_installed`.
   * No epoch check is needed on snapshots: they hold committed state only.
   */
  sendSnapshot: Array<{ to: string }>;
  /**
   * Candidate recovery: ask member `from`'s host to stream its snapshot
   * (applied state) here; install it as above.
   */
  needSnapshotFrom: Array<{ from: string }>;
  /**
   * What happened, to log and report. Kinds: campaign, campaign_refused,
   * promised (a majority promised; detail.source holds the best log),
   * leading (noop appended), serving (noop committed), step_down, fenced
   * (a higher epoch exists: this leader is deposed), fencing_rejection (a
   * stale-epoch message refused), recovery_restart, snapshot_needed,
   * snapshot_send, snapshot_installed, stale_tail_dropped, invalid_message.
   */
  events: Array<{ kind: string; detail: Record<string, unknown> }>;
}

/** The durable state a core starts from (replayed from storage by the host). */
export interface RecoveredState {
  promisedEpoch: number;
  /** Log entries after the snapshot, in index order. */
  entries: LogEntry[];
  /** The snapshot the state machine was loaded from: index 0, epoch 0 when none. */
  snapshotIndex: number;
  snapshotEpoch: number;
}

/** Options for {@linkcode ReplicaCore}. */
export interface CoreOptions {
  partition: string;
  /** This node's id; must be in `members`. */
  self: string;
  /** The replica group, self included. A majority of it commits. */
  members: readonly string[];
  recovered: RecoveredState;
  /** Heartbeat interval in ms of the tick clock. */
  heartbeatMs?: number;
  /** Maximum entries in one replicate or fetch_reply message. */
  maxBatchEntries?: number;
  /** Maximum entries a leader keeps in flight to one member before waiting for acks. */
  maxInflightEntries?: number;
  /** Maximum appended-but-uncommitted entries on a leader; proposals beyond fail "unavailable". */
  maxUncommittedEntries?: number;
  /** Maximum reads waiting for a heartbeat round on a leader; reads beyond fail "unavailable". */
  maxPendingReads?: number;
}

/** A snapshot of the core's state for INFO, metrics and hosts' decisions; see {@linkcode ReplicaCore.status}. */
export interface CoreStatus {
  role: "follower" | "candidate" | "leader";
  /** True on a leader whose no-op of its epoch is committed: it accepts proposals and reads. */
  serving: boolean;
  /** The epoch this node leads or campaigns in (0 when it never did). */
  epoch: number;
  /** The highest epoch this node promised (in memory; durable once persisted). */
  promisedEpoch: number;
  /** The leader this node last accepted a replicate from in `promisedEpoch`, self when leading. */
  leader: string | undefined;
  /** The election's hint (from `leader_hint`). */
  leaderHint: string | undefined;
  commitIndex: number;
  lastIndex: number;
  lastEpoch: number;
  /** Highest index whose log prefix this node knows is durable. */
  durableIndex: number;
  snapshotIndex: number;
  snapshotEpoch: number;
}

/** A leader's view of one other member; see {@linkcode ReplicaCore.progress}. */
export interface MemberProgress {
  id: string;
  /** Highest index known to match the leader and be durable on that member. */
  matchIndex: number;
  /** Next index the leader will send it. */
  nextIndex: number;
  /** True while the leader waits for it to install a snapshot. */
  snapshotting: boolean;
}
