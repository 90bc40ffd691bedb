/**
 * The cluster layer's contract: what a node tells ZooKeeper about itself,
 * and the callbacks through which it learns about the ring, elections,
 * leaders and its own session.
 *
 * @module
 */

/** A node as registered under `<root>/nodes/<id>` (ephemeral JSON). */
export interface NodeInfo {
  /** Unique node id: 1–64 of `[A-Za-z0-9._-]`, starting with a letter or digit. */
  id: string;
  /** Address peers and forwarding clients connect to. */
  host: string;
  /** Client/peer port on `host`. */
  port: number;
  /** Partitions this node is a replica of (same name rules as `id`). */
  partitions: string[];
}

/** The serving leader of a partition, as published in `<root>/partitions/<p>/leader`. */
export interface LeaderInfo {
  /** Leader node id. */
  id: string;
  /** The leader's epoch: the sequence number of its election candidate znode. */
  epoch: number;
  /** "host:port" to forward requests to. */
  address: string;
}

/** The ring as agreed in ZooKeeper plus what is waiting to get in. */
export interface RingView {
  /** Active partitions and each one's replica set (node ids, sorted). */
  partitions: Map<string, string[]>;
  /** Partitions declared by registered nodes but not (yet) in the ring, sorted. */
  pending: string[];
  /** The ring document's version: 1 at creation, +1 for every change. */
  version: number;
}

/** Session states reported to {@linkcode ClusterHandlers.onSession}. */
export type SessionEvent = "connected" | "disconnected" | "deadline" | "expired";

/** What `state()` reports; "connecting" before the first connect, "closed" after `close()`. */
export type SessionState = SessionEvent | "connecting" | "closed";

/**
 * Callbacks from the cluster layer. They are called synchronously from the
 * ZooKeeper event handling; exceptions they throw are caught and logged.
 * Every callback must be idempotent: the same news may arrive twice.
 */
export interface ClusterHandlers {
  /** Live registered nodes changed (the whole map, keyed by node id). */
  onNodes(nodes: Map<string, NodeInfo>): void;
  /** The ring or the pending list changed. Not called before the ring exists. */
  onRing(ring: RingView): void;
  /**
   * `state` set: this node is the lowest candidate of `partition`; `epoch` is
   * its candidate sequence number: campaign, then `publishLeader`. After a
   * deadline recovered within the same session the same epoch comes again.
   * `undefined`: stop leading `partition` now. Sent for every member
   * partition on "deadline" and "expired", and on `withdraw`.
   */
  onCandidate(partition: string, state: { epoch: number } | undefined): void;
  /** The published leader of `partition` changed (or is first seen); `undefined` = none. */
  onLeader(partition: string, leader: LeaderInfo | undefined): void;
  /**
   * "connected": talking to ZooKeeper (also after recovering from "deadline").
   * "disconnected": the connection dropped; the session may still be alive.
   * "deadline": no contact for sessionTimeout − margin: stop leading everything NOW.
   * "expired": the session is gone, every role dropped, a new client is being built.
   */
  onSession(state: SessionEvent): void;
  /** Anything notable, as a structured log line. */
  log(event: string, detail: Record<string, unknown>): void;
}

/** Options for {@linkcode joinCluster}. */
export interface ClusterOptions {
  /** ZooKeeper connection string, e.g. "127.0.0.1:2181" or "h1:2181,h2:2181". */
  connect: string;
  /** This node. */
  node: NodeInfo;
  /** Requested session timeout in ms (ZooKeeper may adjust it). Defaults to 2000. */
  sessionTimeoutMs?: number;
  /** Startup barrier: `ready` waits for this many registered nodes. Defaults to 1. */
  expectNodes?: number;
  /** Root znode of this cluster. Defaults to "/ringkv"; tests use unique roots. */
  root?: string;
  /** `joinCluster` rejects if the node cannot register within this many ms. Defaults to 30000. */
  startTimeoutMs?: number;
}

/** What `state()` returns, for INFO and metrics. */
export interface ClusterState {
  /** Current session state. */
  session: SessionState;
  /** ZooKeeper session id as 16 hex digits, once connected. */
  sessionId?: string;
  /** Milliseconds since the last proven contact with ZooKeeper (Infinity before the first). */
  lastContactMs: number;
  /** Milliseconds left before the deadline (≤ 0: overdue, must not lead). */
  leaseRemainingMs: number;
  /** The session timeout ZooKeeper granted (or the requested one before connecting). */
  sessionTimeoutMs: number;
}

/** A candidate in a partition's election, as read from ZooKeeper. */
export interface CandidateView {
  /** Node id of the candidate. */
  id: string;
  /** Its sequence number, which is the epoch it would lead with. */
  epoch: number;
}

/** A node's membership in the cluster; created by {@linkcode joinCluster}. */
export interface Cluster {
  /** Resolves once `expectNodes` nodes are registered and the ring exists (the barrier). Rejects if closed first. */
  ready: Promise<void>;
  /**
   * Publishes this node as the serving leader of `partition` (ephemeral
   * `<root>/partitions/<p>/leader` = {id, epoch, address}). Call once the
   * no-op of `epoch` committed. Resolves false, writing nothing, if this node
   * is not the lowest candidate, `epoch` is not its candidate sequence, or
   * its lease ran out.
   */
  publishLeader(partition: string, epoch: number): Promise<boolean>;
  /** Deletes the leader znode of `partition` if this session owns it. */
  retractLeader(partition: string): Promise<void>;
  /** Leaves the election of `partition` (retracts leadership, deletes own candidate znode). */
  withdraw(partition: string): Promise<void>;
  /** Re-enters the election of `partition` after `withdraw` (with a new, higher sequence). */
  rejoin(partition: string): Promise<void>;
  /**
   * Moves a pending partition into the ring with its current members, by a
   * compare-and-set on the ring znode. Call only once no data would be left
   * behind by the key ranges it takes over. Rejects if it is not pending.
   */
  activatePartition(partition: string): Promise<void>;
  /** Reads the candidates of `partition`'s election, lowest first (for INFO, tools and tests). */
  candidates(partition: string): Promise<CandidateView[]>;
  /** Session state for INFO/metrics. */
  state(): ClusterState;
  /** Closes the session (ephemeral znodes vanish at once) and stops all timers. No callbacks after it. */
  close(): Promise<void>;
}
