/**
 * A node's membership in the cluster: registration, startup barrier, ring,
 * per-partition elections, leader publication, and its own session lease.
 *
 * All ZooKeeper work runs as named tasks, one at a time (a lock), each
 * re-reading what it needs and re-arming its watch; a failed task is
 * retried with backoff; every watch event just marks its task dirty. One
 * session = one {@linkcode ZkConnection}; on expiry every role is dropped
 * and a new connection re-registers (new candidates, higher epochs).
 *
 * @module
 */

import { addressOf, checkNodeInfo, encodeLeaderInfo, encodeNodeInfo, parseLeaderInfo, parseNodeInfo, sameLeader } from "./codec.ts";
import { candidatePrefix, decideElection, epochOf, preferredLeaders, sortCandidates } from "./election.ts";
import {
  assertRoot,
  electionPath,
  isValidName,
  type Layout,
  layoutOf,
  leaderPath,
  membersPath,
  nodePath,
  partitionPath,
} from "./layout.ts";
import { buildRing, encodeRing, parseRing, pendingPartitions, type RingDoc, ringView, sameRingView, withPartition } from "./ring_doc.ts";
import { backoffMs, DEADLINE_TICK_MS, leaseMs, probeIntervalMs, RECOVERY_FRACTION, requestTimeoutMs } from "./timing.ts";
import type {
  CandidateView,
  Cluster,
  ClusterHandlers,
  ClusterOptions,
  ClusterState,
  LeaderInfo,
  NodeInfo,
  RingView,
  SessionEvent,
  SessionState,
} from "./types.ts";
import { isZkError, type Watcher, type WatchEvent, ZkConnection, type ZkState } from "./zk_client.ts";

/** Shortest session timeout accepted (ZooKeeper grants 2–20 ticks anyway). */
export const MIN_SESSION_TIMEOUT_MS = 400;
/** Longest session timeout accepted. */
export const MAX_SESSION_TIMEOUT_MS = 60_000;
/** Most nodes a cluster may have (bounds the barrier and the nodes listing). */
export const MAX_NODES = 1024;
/** Longest pause between two retries of a failed task. */
export const MAX_TASK_BACKOFF_MS = 2_000;
/** Longest pause before building a new client after an expiry. */
export const MAX_REBUILD_BACKOFF_MS = 2_000;
/** Attempts of one publishLeader before it gives up (races on the leader znode). */
export const MAX_PUBLISH_ATTEMPTS = 3;
/** Unanswered requests above which no probe is added (a frozen server must not grow a queue). */
export const MAX_OUTSTANDING_FOR_PROBE = 8;
/** API operations (withdraw, rejoin, retract, activate) retry transient failures for at most this long... */
export const MIN_OPERATION_TIMEOUT_MS = 5_000;
/** ...or this many session timeouts, whichever is longer. */
export const OPERATION_TIMEOUT_SESSIONS = 3;

/**
 * Head start a partition's preferred leader gets when a node first stands in
 * its election: the others wait this long before creating their candidates,
 * so that a cluster started together spreads leadership over its nodes
 * instead of one node leading everything. Only while the preferred node is
 * registered, and only for a process's first candidacy in a partition.
 */
export const PREFERRED_HEAD_START_MS = 400;

/** An error an API operation must not retry. */
class PermanentError extends Error {}

/** The session changed under a running task; its results belong to nobody. */
class StaleSessionError extends Error {}

/** Election state of one partition this node is a member of. */
interface Candidacy {
  partition: string;
  /** Withdrawn by the node (`withdraw`), until `rejoin`. */
  withdrawn: boolean;
  /** Name of our candidate znode in this session. */
  znode?: string;
  /** Its sequence number. */
  epoch?: number;
  /** Last check found it lowest. */
  lowest: boolean;
  /** Epoch last announced through onCandidate (undefined: told to stop, or never told). */
  announced?: number;
  /**
   * How many times leading was announced. A retract asked for before the
   * latest announcement is about an earlier leadership and must not remove
   * the publication of the current one (it may have the same epoch: a lease
   * that recovered in the same session leads again with its candidate).
   */
  announcements: number;
  /** This process has created a candidate for the partition (in any session). */
  stood: boolean;
  /** Until when a first candidacy waits for the preferred leader (performance.now()). */
  headStartUntil?: number;
}

/** Task names, in the order the runner prefers them. */
const TASK_ORDER = ["register", "election:", "ring", "nodes", "leader:"] as const;

/** Starts a node's membership: connects, registers, and resolves once registered (see {@linkcode Cluster}). */
export async function joinCluster(options: ClusterOptions, handlers: ClusterHandlers): Promise<Cluster> {
  const member = new ClusterMember(options, handlers);
  await member.start();
  return member;
}

class ClusterMember implements Cluster {
  readonly ready: Promise<void>;
  readonly #handlers: ClusterHandlers;
  readonly #node: NodeInfo;
  readonly #connect: string;
  readonly #layout: Layout;
  readonly #requestedTimeoutMs: number;
  readonly #expectNodes: number;
  readonly #startTimeoutMs: number;
  #resolveReady!: () => void;
  #rejectReady!: (error: Error) => void;
  #readyDone = false;
  #resolveRegistered?: () => void;

  #conn?: ZkConnection;
  #connection: "connecting" | "connected" | "disconnected" | "expired" = "connecting";
  #reported: SessionState = "connecting";
  #registered = false;
  #closed = false;
  #overdue = false;
  /** performance.now() at which the last answered request was sent, this session. */
  #lastContact = -Infinity;
  #lastProbe = -Infinity;
  #expiries = 0;
  #rebuildFailures = 0;
  #tick?: ReturnType<typeof setInterval>;
  /** Fires exactly when the lease runs out (the tick is the backstop). */
  #deadlineTimer?: ReturnType<typeof setTimeout>;
  #rebuildTimer?: ReturnType<typeof setTimeout>;

  readonly #candidacies = new Map<string, Candidacy>();
  /** Partitions whose leader znode we created in this session (and may still be serving). */
  readonly #published = new Set<string>();
  /** Published before a deadline: the znode may still name us, but we stopped; retract before leading again. */
  readonly #stalePublished = new Set<string>();
  #nodes = new Map<string, NodeInfo>();
  #nodesKnown = false;
  #ring?: RingDoc;
  #view?: RingView;
  readonly #leaders = new Map<string, LeaderInfo | undefined>();
  readonly #leaderWatched = new Set<string>();

  readonly #dirty = new Set<string>();
  readonly #failures = new Map<string, number>();
  readonly #retryTimers = new Map<string, ReturnType<typeof setTimeout>>();
  #pumping = false;
  #lock: Promise<void> = Promise.resolve();

  readonly #watchNodes: Watcher;
  readonly #watchRing: Watcher;
  readonly #leaderWatchers = new Map<string, Watcher>();
  readonly #electionWatchers = new Map<string, Watcher>();

  constructor(options: ClusterOptions, handlers: ClusterHandlers) {
    const problem = checkNodeInfo(options.node);
    if (problem !== undefined) throw new Error(`joinCluster: invalid node: ${problem}`);
    const root = options.root ?? "/ringkv";
    assertRoot(root);
    const timeout = options.sessionTimeoutMs ?? 2000;
    if (!Number.isInteger(timeout) || timeout < MIN_SESSION_TIMEOUT_MS || timeout > MAX_SESSION_TIMEOUT_MS) {
      throw new Error(`joinCluster: sessionTimeoutMs must be ${MIN_SESSION_TIMEOUT_MS}..${MAX_SESSION_TIMEOUT_MS}, got ${timeout}`);
    }
    const expect = options.expectNodes ?? 1;
    if (!Number.isInteger(expect) || expect < 1 || expect > MAX_NODES) {
      throw new Error(`joinCluster: expectNodes must be 1..${MAX_NODES}, got ${expect}`);
    }
    if (typeof options.connect !== "string" || options.connect.length === 0) throw new Error("joinCluster: connect string missing");
    this.#handlers = handlers;
    this.#node = { ...options.node, partitions: [...options.node.partitions] };
    this.#connect = options.connect;
    this.#layout = layoutOf(root);
    this.#requestedTimeoutMs = timeout;
    this.#expectNodes = expect;
    this.#startTimeoutMs = options.startTimeoutMs ?? 30_000;
    for (const partition of this.#node.partitions) {
      this.#candidacies.set(partition, { partition, withdrawn: false, lowest: false, announcements: 0, stood: false });
      this.#electionWatchers.set(partition, (event) => this.#onWatch(`election:${partition}`, event));
    }
    this.#watchNodes = (event) => this.#onWatch("nodes", event);
    this.#watchRing = (event) => this.#onWatch("ring", event);
    this.ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    // Nobody may be awaiting `ready` when close() rejects it: that must not be an unhandled rejection.
    this.ready.catch(() => {});
  }

  /** Connects and waits for the first registration (or the start timeout). */
  async start(): Promise<void> {
    const registered = new Promise<void>((resolve) => {
      this.#resolveRegistered = resolve;
    });
    this.#tick = setInterval(() => this.#onTick(), DEADLINE_TICK_MS);
    this.#tick.unref();
    this.#newConnection();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.#startTimeoutMs);
    });
    const result = await Promise.race([registered.then(() => "registered" as const), timedOut]);
    clearTimeout(timer);
    if (result === "timeout") {
      await this.close();
      throw new Error(`joinCluster: could not register with ZooKeeper at ${this.#connect} within ${this.#startTimeoutMs} ms`);
    }
  }

  // ---------------------------------------------------------------- API

  async publishLeader(partition: string, epoch: number): Promise<boolean> {
    try {
      return await this.#exclusive(() => this.#publish(partition, epoch));
    } catch (error) {
      this.#log("publish_failed", { partition, epoch, error: String(error) });
      return false;
    }
  }

  async retractLeader(partition: string): Promise<void> {
    if (!isValidName(partition)) throw new Error(`bad partition name ${JSON.stringify(partition)}`);
    const candidacy = this.#candidacies.get(partition);
    const announcements = candidacy?.announcements;
    await this.#operate("retractLeader", async () => {
      if (candidacy !== undefined && candidacy.announcements !== announcements) {
        // Retried past a new announcement (ZooKeeper was away): that leadership is not the one to retract.
        this.#log("retract_superseded", { partition, epoch: candidacy.announced });
        return;
      }
      const conn = this.#conn;
      if (conn === undefined || !this.#registered) {
        // No session (its ephemerals are gone) or a fresh one (never published).
        this.#published.delete(partition);
        this.#stalePublished.delete(partition);
        return;
      }
      await this.#retract(conn, partition);
    });
  }

  async withdraw(partition: string): Promise<void> {
    const candidacy = this.#candidacyOf(partition);
    candidacy.withdrawn = true;
    // Stop leading now, before any ZooKeeper round trip.
    this.#stopAnnouncing(candidacy);
    await this.#operate("withdraw", async () => {
      if (!candidacy.withdrawn) {
        // Retried past a rejoin: leaving now would only cost the new candidacy its place.
        this.#log("withdraw_superseded", { partition });
        return;
      }
      const conn = this.#conn;
      if (conn === undefined || !this.#registered) return; // Nothing of ours exists in this session.
      await this.#leave(conn, partition, candidacy);
      await this.#electionStep(conn, partition);
    });
  }

  async rejoin(partition: string): Promise<void> {
    const candidacy = this.#candidacyOf(partition);
    candidacy.withdrawn = false;
    await this.#operate("rejoin", async () => {
      const conn = this.#conn;
      if (conn === undefined || !this.#registered) {
        // Registration of the coming session enters every election.
        return;
      }
      await this.#electionStep(conn, partition);
    });
  }

  async activatePartition(partition: string): Promise<void> {
    if (!isValidName(partition)) throw new Error(`bad partition name ${JSON.stringify(partition)}`);
    await this.#operate("activatePartition", async () => {
      const conn = this.#requireSession();
      const got = await conn.getData(this.#layout.ring);
      if (got === undefined) throw new Error("no ring yet");
      const doc = parseRing(got.data);
      if (Object.hasOwn(doc.partitions, partition)) return; // Already in: nothing to do.
      this.#assertCurrent(conn);
      if (!pendingPartitions(doc, this.#nodes.values()).includes(partition)) {
        throw new PermanentError(`partition ${partition} is not pending (no registered node declares it)`);
      }
      const members = ((await conn.getChildren(membersPath(this.#layout, partition))) ?? []).filter(isValidName);
      if (members.length === 0) throw new PermanentError(`partition ${partition} has no members`);
      const next = withPartition(doc, { partition, members });
      // Compare-and-set on the znode version read above (Client.setData honours version 0).
      await conn.setData(this.#layout.ring, encodeRing(next), { version: got.stat.version });
      this.#log("partition_activated", { partition, members: next.partitions[partition], ringVersion: next.version });
      this.#schedule("ring");
    });
  }

  async candidates(partition: string): Promise<CandidateView[]> {
    if (!isValidName(partition)) throw new Error(`bad partition name ${JSON.stringify(partition)}`);
    const conn = this.#requireSession();
    const children = (await conn.getChildren(electionPath(this.#layout, partition))) ?? [];
    const { candidates } = sortCandidates(children);
    const views: CandidateView[] = [];
    for (const candidate of candidates) {
      if (candidate.id !== undefined) views.push({ id: candidate.id, epoch: epochOf(candidate.seq) });
    }
    return views;
  }

  state(): ClusterState {
    const conn = this.#conn;
    const timeout = conn?.sessionTimeoutMs() ?? this.#requestedTimeoutMs;
    const age = performance.now() - this.#lastContact;
    return {
      session: this.#reported,
      sessionId: conn?.sessionId(),
      lastContactMs: Math.round(age),
      // Never positive while leading is not allowed (overdue, not yet recovered, or no session).
      leaseRemainingMs: Math.round(this.#leaseFresh() ? leaseMs(timeout) - age : Math.min(0, leaseMs(timeout) - age)),
      sessionTimeoutMs: timeout,
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#reported = "closed";
    clearInterval(this.#tick);
    clearTimeout(this.#deadlineTimer);
    clearTimeout(this.#rebuildTimer);
    for (const timer of this.#retryTimers.values()) clearTimeout(timer);
    this.#retryTimers.clear();
    this.#dirty.clear();
    if (!this.#readyDone) {
      this.#readyDone = true;
      this.#rejectReady(new Error("cluster closed before ready"));
    }
    const conn = this.#conn;
    this.#conn = undefined;
    this.#registered = false;
    this.#log("closed", {});
    await conn?.close();
  }

  // ------------------------------------------------------- session & lease

  #newConnection(): void {
    if (this.#closed) return;
    const timeout = this.#requestedTimeoutMs;
    // The connection's events name it, so events of a replaced one are ignored.
    const conn: ZkConnection = new ZkConnection(this.#connect, {
      onState: (state) => this.#onState(conn, state),
      onContact: (sentAt) => this.#onContact(conn, sentAt),
      onFault: (event, detail) => this.#log(event, detail),
    }, { sessionTimeoutMs: timeout, requestTimeoutMs: requestTimeoutMs(timeout) });
    this.#conn = conn;
    this.#connection = "connecting";
    this.#registered = false;
    this.#lastContact = -Infinity;
    this.#overdue = false;
    this.#log("connecting", { connect: this.#connect, sessionTimeoutMs: timeout });
    try {
      conn.start();
    } catch (error) {
      this.#log("connect_threw", { error: String(error) });
      this.#conn = undefined;
      this.#scheduleRebuild();
    }
  }

  #scheduleRebuild(): void {
    if (this.#closed) return;
    this.#rebuildFailures += 1;
    const delay = backoffMs(this.#rebuildFailures, MAX_REBUILD_BACKOFF_MS);
    clearTimeout(this.#rebuildTimer);
    this.#rebuildTimer = setTimeout(() => this.#newConnection(), delay);
  }

  #onState(conn: ZkConnection, state: ZkState): void {
    if (conn !== this.#conn || this.#closed) return;
    this.#log("session_state", { state, sessionId: conn.sessionId(), sessionTimeoutMs: conn.sessionTimeoutMs() });
    if (state === "expired") {
      this.#onExpired(conn);
      return;
    }
    this.#connection = state;
    if (state === "connected") {
      this.#rebuildFailures = 0;
      this.#sendProbe(conn);
      if (!this.#registered) {
        this.#schedule("register");
      } else {
        // Same session back: watches were re-set by the library, but re-check everything anyway.
        this.#scheduleEverything();
      }
    }
    this.#evaluateLease();
    this.#refreshReported();
    void this.#pump();
  }

  #onExpired(conn: ZkConnection): void {
    this.#expiries += 1;
    this.#log("session_expired", { sessionId: conn.sessionId(), expiries: this.#expiries });
    this.#conn = undefined;
    this.#connection = "expired";
    this.#registered = false;
    this.#overdue = false;
    this.#lastContact = -Infinity;
    this.#published.clear();
    this.#stalePublished.clear();
    this.#leaderWatched.clear();
    for (const candidacy of this.#candidacies.values()) {
      candidacy.znode = undefined;
      candidacy.epoch = undefined;
      candidacy.lowest = false;
      candidacy.announced = undefined;
    }
    this.#reported = "expired";
    this.#emitSession("expired");
    for (const partition of this.#candidacies.keys()) this.#callCandidate(partition, undefined);
    void conn.close();
    this.#rebuildFailures = 0;
    this.#scheduleRebuild();
  }

  #onContact(conn: ZkConnection, sentAt: number): void {
    if (conn !== this.#conn || this.#closed) return;
    if (sentAt > this.#lastContact) {
      this.#lastContact = sentAt;
      clearTimeout(this.#deadlineTimer);
      const due = sentAt + leaseMs(conn.sessionTimeoutMs()) - performance.now();
      this.#deadlineTimer = setTimeout(() => this.#evaluateLease(), Math.max(0, Math.ceil(due)));
      this.#deadlineTimer.unref();
    }
    this.#evaluateLease();
  }

  #onTick(): void {
    if (this.#closed) return;
    this.#evaluateLease();
    const conn = this.#conn;
    if (conn !== undefined && performance.now() - this.#lastProbe >= probeIntervalMs(conn.sessionTimeoutMs())) {
      this.#sendProbe(conn);
    }
  }

  /** A cheap read whose answer proves the session alive at its send time; a frozen server gives no other sign. */
  #sendProbe(conn: ZkConnection): void {
    if (conn.state() !== "connected" || conn.outstanding() >= MAX_OUTSTANDING_FOR_PROBE) return;
    this.#lastProbe = performance.now();
    conn.exists(this.#layout.root).catch(() => {
      // Counted as contact or not inside the connection; nothing else to do.
    });
  }

  /** True while leading is allowed: contact in this session within the lease. */
  #leaseFresh(): boolean {
    const conn = this.#conn;
    if (conn === undefined || this.#overdue) return false;
    return performance.now() - this.#lastContact < leaseMs(conn.sessionTimeoutMs());
  }

  #evaluateLease(): void {
    const conn = this.#conn;
    if (conn === undefined || this.#closed || this.#lastContact === -Infinity) return;
    const lease = leaseMs(conn.sessionTimeoutMs());
    const age = performance.now() - this.#lastContact;
    if (!this.#overdue && age >= lease) {
      this.#enterDeadline(age, lease);
    } else if (this.#overdue && age < lease * RECOVERY_FRACTION && conn.state() === "connected") {
      this.#recover(age);
    }
  }

  #enterDeadline(age: number, lease: number): void {
    this.#overdue = true;
    this.#log("deadline", { sinceContactMs: Math.round(age), leaseMs: lease });
    for (const partition of this.#published) this.#stalePublished.add(partition);
    this.#published.clear();
    for (const candidacy of this.#candidacies.values()) candidacy.announced = undefined;
    this.#refreshReported();
    // Every member partition, announced or not: handlers are idempotent, and "stop" must not be missed.
    for (const partition of this.#candidacies.keys()) this.#callCandidate(partition, undefined);
  }

  #recover(age: number): void {
    this.#overdue = false;
    this.#log("lease_recovered", { sinceContactMs: Math.round(age) });
    this.#refreshReported();
    // Still the lowest candidate in this session? The election steps re-check and re-announce.
    this.#scheduleEverything();
  }

  #refreshReported(): void {
    if (this.#closed) return;
    const next: SessionState = this.#overdue ? "deadline" : this.#connection;
    if (next === this.#reported) return;
    this.#reported = next;
    if (next === "connected" || next === "disconnected" || next === "deadline") this.#emitSession(next);
  }

  // ------------------------------------------------------------- runner

  #onWatch(task: string, event: WatchEvent): void {
    this.#log("watch_fired", { task, type: event.type, path: event.path });
    this.#evaluateLease();
    this.#schedule(task);
  }

  #schedule(task: string): void {
    if (this.#closed) return;
    this.#dirty.add(task);
    void this.#pump();
  }

  #scheduleEverything(): void {
    this.#schedule("nodes");
    this.#schedule("ring");
    for (const partition of this.#candidacies.keys()) this.#schedule(`election:${partition}`);
    for (const partition of this.#watchedPartitions()) this.#schedule(`leader:${partition}`);
  }

  #nextTask(): string | undefined {
    for (const prefix of TASK_ORDER) {
      if (prefix !== "register" && !this.#registered) return undefined;
      for (const task of this.#dirty) {
        if (prefix.endsWith(":") ? task.startsWith(prefix) : task === prefix) return task;
      }
    }
    return undefined;
  }

  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (!this.#closed && this.#conn?.state() === "connected") {
        const task = this.#nextTask();
        if (task === undefined) break;
        this.#dirty.delete(task);
        await this.#exclusive(() => this.#runTask(task));
      }
    } finally {
      this.#pumping = false;
    }
  }

  async #runTask(task: string): Promise<void> {
    const conn = this.#conn;
    if (conn === undefined || this.#closed) return;
    try {
      if (task === "register") await this.#register(conn);
      else if (task === "nodes") await this.#readNodes(conn);
      else if (task === "ring") await this.#readRing(conn);
      else if (task.startsWith("election:")) await this.#electionStep(conn, task.slice("election:".length));
      else if (task.startsWith("leader:")) await this.#readLeader(conn, task.slice("leader:".length));
      else throw new Error(`unknown task ${task}`);
      this.#failures.delete(task);
    } catch (error) {
      if (error instanceof StaleSessionError || this.#closed || conn !== this.#conn) return;
      const failures = (this.#failures.get(task) ?? 0) + 1;
      this.#failures.set(task, failures);
      const delay = backoffMs(failures, MAX_TASK_BACKOFF_MS);
      this.#log("task_failed", { task, failures, retryInMs: delay, error: String(error) });
      if (!this.#retryTimers.has(task)) {
        const timer = setTimeout(() => {
          this.#retryTimers.delete(task);
          this.#schedule(task);
        }, delay);
        this.#retryTimers.set(task, timer);
      }
    }
  }

  /** Runs `fn` after everything queued before it: tasks and API operations never interleave. */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.#lock.then(fn);
    this.#lock = result.then(() => {}, () => {});
    return result;
  }

  /** Runs an API operation under the lock, retrying transient failures with backoff for a bounded time. */
  async #operate(name: string, fn: () => Promise<void>): Promise<void> {
    const timeout = Math.max(MIN_OPERATION_TIMEOUT_MS, OPERATION_TIMEOUT_SESSIONS * this.#requestedTimeoutMs);
    const deadline = performance.now() + timeout;
    for (let attempt = 1;; attempt += 1) {
      if (this.#closed) throw new Error(`${name}: cluster closed`);
      try {
        await this.#exclusive(fn);
        return;
      } catch (error) {
        if (error instanceof PermanentError || performance.now() >= deadline) {
          this.#log("operation_failed", { operation: name, attempt, error: String(error) });
          throw error instanceof PermanentError ? new Error(`${name}: ${error.message}`) : error;
        }
        this.#log("operation_retry", { operation: name, attempt, error: String(error) });
        await sleep(backoffMs(attempt, MAX_TASK_BACKOFF_MS));
      }
    }
  }

  #requireSession(): ZkConnection {
    const conn = this.#conn;
    if (conn === undefined || !this.#registered || conn.state() !== "connected") throw new Error("not connected to ZooKeeper");
    return conn;
  }

  #assertCurrent(conn: ZkConnection): void {
    if (conn !== this.#conn || this.#closed) throw new StaleSessionError("session replaced");
  }

  // -------------------------------------------------------------- tasks

  async #register(conn: ZkConnection): Promise<void> {
    const layout = this.#layout;
    const parents = [...ancestors(layout.root), layout.root, layout.nodes, layout.partitionsDir];
    for (const partition of this.#node.partitions) {
      parents.push(partitionPath(layout, partition), membersPath(layout, partition), electionPath(layout, partition));
    }
    for (const path of parents) await this.#ensurePersistent(conn, path);
    // Declared membership first, so whoever sees our node also sees it in the member lists.
    for (const partition of this.#node.partitions) {
      await this.#ensurePersistent(conn, `${membersPath(layout, partition)}/${this.#node.id}`);
    }
    const path = nodePath(layout, this.#node.id);
    try {
      await conn.create(path, encodeNodeInfo(this.#node), { mode: "ephemeral" });
    } catch (error) {
      if (!isZkError(error, "NODE_EXISTS")) throw error;
      const existing = await conn.getData(path);
      if (existing !== undefined && existing.stat.ephemeralOwner !== conn.sessionId()) {
        throw new Error(`node id ${this.#node.id} is registered by another session (${existing.stat.ephemeralOwner})`);
      }
      if (existing === undefined) throw new Error(`node znode ${path} vanished during registration`);
    }
    this.#assertCurrent(conn);
    this.#registered = true;
    this.#log("registered", { sessionId: conn.sessionId(), sessionTimeoutMs: conn.sessionTimeoutMs() });
    this.#resolveRegistered?.();
    this.#resolveRegistered = undefined;
    this.#scheduleEverything();
  }

  async #ensurePersistent(conn: ZkConnection, path: string): Promise<void> {
    try {
      await conn.create(path, Buffer.alloc(0), { mode: "persistent" });
    } catch (error) {
      if (!isZkError(error, "NODE_EXISTS")) throw error;
    }
  }

  async #readNodes(conn: ZkConnection): Promise<void> {
    const names = (await conn.getChildren(this.#layout.nodes, this.#watchNodes)) ?? [];
    if (names.length > MAX_NODES) throw new Error(`${names.length} registered nodes is over the limit of ${MAX_NODES}`);
    const read = await Promise.all(names.sort().map(async (name) => {
      const got = await conn.getData(nodePath(this.#layout, name));
      return { name, got };
    }));
    this.#assertCurrent(conn);
    const next = new Map<string, NodeInfo>();
    for (const { name, got } of read) {
      if (got === undefined) continue; // Left between the listing and the read.
      try {
        const info = parseNodeInfo(got.data);
        if (info.id !== name) throw new Error(`id ${info.id} under name ${name}`);
        next.set(info.id, info);
      } catch (error) {
        this.#log("bad_node_info", { name, error: String(error) });
      }
    }
    this.#nodesKnown = true;
    if (!sameNodes(this.#nodes, next)) {
      this.#nodes = next;
      this.#log("nodes", { ids: [...next.keys()] });
      this.#call("onNodes", () => this.#handlers.onNodes(new Map([...next].map(([id, info]) => [id, cloneNode(info)]))));
    }
    this.#afterClusterChange();
  }

  async #readRing(conn: ZkConnection): Promise<void> {
    const ringPath = this.#layout.ring;
    const got = await conn.getData(ringPath, this.#watchRing);
    if (got === undefined) {
      // Not there yet: watch for its creation, and create it ourselves once past the barrier.
      const stat = await conn.exists(ringPath, this.#watchRing);
      if (stat !== undefined) {
        this.#schedule("ring");
        return;
      }
      if (this.#nodesKnown && this.#nodes.size >= this.#expectNodes) {
        await this.#createRing(conn);
        this.#schedule("ring");
      }
      return;
    }
    this.#assertCurrent(conn);
    let doc: RingDoc;
    try {
      doc = parseRing(got.data);
    } catch (error) {
      // Keep the last good ring; the watch is armed for a fix.
      this.#log("ring_invalid", { error: String(error) });
      return;
    }
    const changed = this.#ring === undefined || this.#ring.version !== doc.version;
    this.#ring = doc;
    if (changed) {
      this.#log("ring", { version: doc.version, partitions: doc.partitions });
      // Eligibility for elections depends on the ring.
      for (const partition of this.#candidacies.keys()) this.#schedule(`election:${partition}`);
    }
    this.#afterClusterChange();
  }

  async #createRing(conn: ZkConnection): Promise<void> {
    const nodes = [...this.#nodes.values()];
    const partitions = new Set(nodes.flatMap((node) => node.partitions));
    const members = new Map<string, string[]>();
    for (const partition of partitions) {
      const names = (await conn.getChildren(membersPath(this.#layout, partition))) ?? [];
      members.set(partition, names.filter(isValidName));
    }
    const doc = buildRing(nodes, members);
    try {
      await conn.create(this.#layout.ring, encodeRing(doc), { mode: "persistent" });
      this.#log("ring_created", { partitions: doc.partitions });
    } catch (error) {
      // Someone else was first: we read theirs.
      if (!isZkError(error, "NODE_EXISTS")) throw error;
    }
  }

  /** Emits a changed ring view, watches new partitions' leaders, checks the barrier. */
  #afterClusterChange(): void {
    const ring = this.#ring;
    if (ring === undefined) {
      if (this.#nodesKnown && this.#nodes.size >= this.#expectNodes) this.#schedule("ring");
      return;
    }
    const view = ringView(ring, pendingPartitions(ring, this.#nodes.values()));
    if (!sameRingView(this.#view, view)) {
      this.#view = view;
      this.#log("ring_view", { version: view.version, pending: view.pending });
      this.#call("onRing", () => this.#handlers.onRing(ringView(ring, view.pending)));
    }
    for (const partition of this.#watchedPartitions()) {
      if (!this.#leaderWatched.has(partition)) {
        this.#leaderWatched.add(partition);
        this.#schedule(`leader:${partition}`);
      }
    }
    if (!this.#readyDone && this.#nodes.size >= this.#expectNodes) {
      this.#readyDone = true;
      this.#log("ready", { nodes: this.#nodes.size, ringVersion: ring.version });
      this.#resolveReady();
    }
  }

  /** Ring partitions, pending ones, and our own. */
  #watchedPartitions(): string[] {
    const set = new Set<string>(this.#candidacies.keys());
    if (this.#ring !== undefined) for (const partition of Object.keys(this.#ring.partitions)) set.add(partition);
    if (this.#view !== undefined) for (const partition of this.#view.pending) set.add(partition);
    return [...set].sort();
  }

  async #readLeader(conn: ZkConnection, partition: string): Promise<void> {
    let watcher = this.#leaderWatchers.get(partition);
    if (watcher === undefined) {
      watcher = (event) => this.#onWatch(`leader:${partition}`, event);
      this.#leaderWatchers.set(partition, watcher);
    }
    const path = leaderPath(this.#layout, partition);
    const got = await conn.getData(path, watcher);
    let leader: LeaderInfo | undefined;
    if (got === undefined) {
      // A data watch is only set on an existing znode: watch for creation instead.
      const stat = await conn.exists(path, watcher);
      if (stat !== undefined) {
        this.#schedule(`leader:${partition}`);
        return;
      }
    } else {
      try {
        leader = parseLeaderInfo(got.data);
      } catch (error) {
        this.#log("bad_leader_info", { partition, error: String(error) });
      }
    }
    this.#assertCurrent(conn);
    if (!this.#leaders.has(partition) || !sameLeader(this.#leaders.get(partition), leader)) {
      this.#leaders.set(partition, leader);
      this.#log("leader", { partition, leader });
      this.#call("onLeader", () => this.#handlers.onLeader(partition, leader === undefined ? undefined : { ...leader }));
    }
  }

  /** May this node stand in `partition`'s election? Undefined while the ring is unknown. */
  #eligible(partition: string): boolean | undefined {
    const ring = this.#ring;
    if (ring === undefined) return undefined;
    const members = ring.partitions[partition];
    // A pending partition may elect (nothing routes to it yet); an active one only among its ring members.
    return members === undefined || members.includes(this.#node.id);
  }

  /** One check of the election recipe for `partition`: create, re-list, lead or watch the predecessor. */
  async #electionStep(conn: ZkConnection, partition: string): Promise<void> {
    const candidacy = this.#candidacyOf(partition);
    const session = conn.sessionId();
    if (session === undefined) throw new Error("no session id");
    const self = { id: this.#node.id, session };
    const dir = electionPath(this.#layout, partition);
    const watcher = this.#electionWatchers.get(partition);
    if (watcher === undefined) throw new Error(`no election watcher for ${partition}`);
    this.#log("election_check", { partition });

    if (this.#stalePublished.has(partition)) await this.#retract(conn, partition);

    const eligible = this.#eligible(partition);
    if (eligible === undefined) return; // The ring task reschedules us.
    if (candidacy.withdrawn || !eligible) {
      if (!eligible) this.#log("not_a_ring_member", { partition });
      const children = (await conn.getChildren(dir)) ?? [];
      for (const name of children) {
        if (name.startsWith(candidatePrefix(self.id, session))) await conn.remove(`${dir}/${name}`, -1);
      }
      this.#assertCurrent(conn);
      candidacy.znode = undefined;
      candidacy.epoch = undefined;
      candidacy.lowest = false;
      this.#stopAnnouncing(candidacy);
      return;
    }

    let children = await conn.getChildren(dir);
    if (children === undefined) {
      await this.#ensurePersistent(conn, partitionPath(this.#layout, partition));
      await this.#ensurePersistent(conn, dir);
      children = [];
    }
    let decision = decideElection(children, { ...self, known: candidacy.znode });
    if (decision.kind === "absent") {
      if (candidacy.znode !== undefined) {
        this.#log("candidate_lost", { partition, znode: candidacy.znode });
        candidacy.znode = undefined;
        candidacy.epoch = undefined;
        candidacy.lowest = false;
        this.#stopAnnouncing(candidacy);
      }
      if (this.#waitForPreferred(partition, candidacy)) return;
      candidacy.stood = true;
      const created = await conn.create(`${dir}/${candidatePrefix(self.id, session)}`, Buffer.from(self.id), {
        mode: "ephemeral_sequential",
        onLate: (late) => {
          // Created after we gave up on it: the next check deletes it as an extra (or adopts it).
          if (late !== undefined) {
            this.#log("candidate_created_late", { partition, path: late });
            this.#schedule(`election:${partition}`);
          }
        },
      });
      this.#assertCurrent(conn);
      candidacy.znode = created.slice(created.lastIndexOf("/") + 1);
      this.#log("candidate_created", { partition, znode: candidacy.znode });
      children = (await conn.getChildren(dir)) ?? [];
      decision = decideElection(children, { ...self, known: candidacy.znode });
      if (decision.kind === "absent") throw new Error(`own candidate ${candidacy.znode} missing right after creating it`);
    }
    for (const extra of decision.extras) {
      await conn.remove(`${dir}/${extra.name}`, -1);
      this.#log("candidate_extra_removed", { partition, znode: extra.name });
    }
    this.#assertCurrent(conn);
    if (candidacy.znode !== decision.own.name) {
      this.#stopAnnouncing(candidacy);
      candidacy.znode = decision.own.name;
    }
    const epoch = epochOf(decision.own.seq);
    candidacy.epoch = epoch;
    const ownPath = `${dir}/${decision.own.name}`;
    if (decision.kind === "lead") {
      candidacy.lowest = true;
      // Watch our own znode: if someone deletes it, we must notice.
      const own = await conn.getData(ownPath, watcher);
      this.#assertCurrent(conn);
      if (own === undefined) {
        this.#schedule(`election:${partition}`);
        return;
      }
      if (!candidacy.withdrawn && this.#leaseFresh() && candidacy.announced !== epoch) {
        candidacy.announced = epoch;
        candidacy.announcements += 1;
        this.#log("candidate", { partition, epoch, lowest: true });
        this.#callCandidate(partition, { epoch });
      }
      return;
    }
    candidacy.lowest = false;
    if (candidacy.announced !== undefined) {
      // Cannot happen in the recipe (nothing lower appears later); stop anyway.
      this.#log("lost_lowest", { partition, epoch: candidacy.announced });
      this.#stopAnnouncing(candidacy);
    }
    const predecessor = await conn.getData(`${dir}/${decision.predecessor.name}`, watcher);
    if (predecessor === undefined) {
      this.#schedule(`election:${partition}`);
      return;
    }
    await conn.getData(ownPath, watcher);
    this.#assertCurrent(conn);
    this.#log("candidate_waiting", { partition, epoch, predecessor: decision.predecessor.name });
  }

  /**
   * True (and the election step rescheduled) while a first candidacy gives
   * the partition's preferred leader its head start; see
   * {@linkcode PREFERRED_HEAD_START_MS}.
   */
  #waitForPreferred(partition: string, candidacy: Candidacy): boolean {
    if (candidacy.stood) return false;
    const members = this.#ring?.partitions ?? {};
    const preferred = preferredLeaders(members).get(partition);
    if (preferred === undefined || preferred === this.#node.id || !this.#nodes.has(preferred)) return false;
    const now = performance.now();
    candidacy.headStartUntil ??= now + PREFERRED_HEAD_START_MS;
    const remaining = candidacy.headStartUntil - now;
    if (remaining <= 0) return false;
    const task = `election:${partition}`;
    if (!this.#retryTimers.has(task)) {
      this.#log("candidate_deferred", { partition, preferred, ms: Math.round(remaining) });
      const timer = setTimeout(() => {
        this.#retryTimers.delete(task);
        this.#schedule(task);
      }, remaining);
      this.#retryTimers.set(task, timer);
    }
    return true;
  }

  async #publish(partition: string, epoch: number): Promise<boolean> {
    const candidacy = this.#candidacies.get(partition);
    const conn = this.#conn;
    const refuse = (reason: string) => {
      this.#log("publish_refused", { partition, epoch, reason });
      return false;
    };
    for (let attempt = 1; attempt <= MAX_PUBLISH_ATTEMPTS; attempt += 1) {
      if (candidacy === undefined) return refuse("not a member");
      if (conn === undefined || conn !== this.#conn || !this.#registered) return refuse("no session");
      if (candidacy.withdrawn) return refuse("withdrawn");
      if (candidacy.znode === undefined || candidacy.epoch !== epoch) return refuse(`epoch is not ours (ours: ${candidacy.epoch})`);
      if (!candidacy.lowest || candidacy.announced !== epoch) return refuse("not the lowest candidate");
      if (!this.#leaseFresh()) return refuse("lease ran out");
      const info: LeaderInfo = { id: this.#node.id, epoch, address: addressOf(this.#node) };
      const path = leaderPath(this.#layout, partition);
      const ownPath = `${electionPath(this.#layout, partition)}/${candidacy.znode}`;
      const existing = await conn.getData(path);
      this.#assertCurrent(conn);
      if (existing !== undefined && existing.stat.ephemeralOwner === conn.sessionId()) {
        try {
          if (sameLeader(parseLeaderInfo(existing.data), info)) {
            this.#published.add(partition);
            return true;
          }
        } catch {
          // Replace it below.
        }
      }
      try {
        // Atomic: only while our candidate exists (then nothing lower can: we are still the lowest).
        await conn.multi([
          { op: "check", path: ownPath },
          ...(existing === undefined ? [] : [{ op: "remove" as const, path }]),
          { op: "create", path, data: encodeLeaderInfo(info), mode: "ephemeral" },
        ]);
      } catch (error) {
        if (!isZkError(error, "NO_NODE", "NODE_EXISTS")) throw error;
        // Either our candidate is gone or the leader znode changed under us: find out which.
        const own = await conn.exists(ownPath);
        if (own === undefined) return refuse("candidate znode gone");
        continue;
      }
      this.#assertCurrent(conn);
      if (!this.#leaseFresh() || candidacy.announced !== epoch) {
        // Told to stop while the write was in flight: it names us, but we are not serving.
        this.#stalePublished.add(partition);
        return refuse("lost the lease while publishing");
      }
      this.#published.add(partition);
      this.#stalePublished.delete(partition);
      this.#log("leader_published", { partition, epoch });
      return true;
    }
    return refuse("leader znode kept changing");
  }

  /**
   * Retracts our leader znode and deletes our candidate in one transaction:
   * one ZooKeeper write instead of two, which is most of a planned handover's
   * gap. The election step after it removes whatever this missed.
   */
  async #leave(conn: ZkConnection, partition: string, candidacy: Candidacy): Promise<void> {
    const znode = candidacy.znode;
    if (znode === undefined) {
      // No candidate of ours on record: a leader znode of ours may still exist.
      await this.#retract(conn, partition);
      return;
    }
    const path = leaderPath(this.#layout, partition);
    const got = await conn.getData(path);
    this.#assertCurrent(conn);
    const ours = got !== undefined && got.stat.ephemeralOwner === conn.sessionId();
    try {
      await conn.multi([
        ...(ours ? [{ op: "remove" as const, path, version: got.stat.version }] : []),
        { op: "remove", path: `${electionPath(this.#layout, partition)}/${znode}` },
      ]);
    } catch (error) {
      // Changed under us (already gone, say): the slow path sorts it out.
      if (!isZkError(error, "NO_NODE", "BAD_VERSION")) throw error;
      await this.#retract(conn, partition);
      return;
    }
    this.#assertCurrent(conn);
    if (ours) this.#log("leader_retracted", { partition });
    this.#published.delete(partition);
    this.#stalePublished.delete(partition);
    candidacy.znode = undefined;
    candidacy.epoch = undefined;
    candidacy.lowest = false;
  }

  async #retract(conn: ZkConnection, partition: string): Promise<void> {
    const path = leaderPath(this.#layout, partition);
    const got = await conn.getData(path);
    if (got !== undefined && got.stat.ephemeralOwner === conn.sessionId()) {
      await conn.remove(path, got.stat.version);
      this.#log("leader_retracted", { partition });
    }
    this.#assertCurrent(conn);
    this.#published.delete(partition);
    this.#stalePublished.delete(partition);
  }

  // ------------------------------------------------------------ helpers

  #candidacyOf(partition: string): Candidacy {
    const candidacy = this.#candidacies.get(partition);
    if (candidacy === undefined) throw new Error(`node ${this.#node.id} is not a member of partition ${JSON.stringify(partition)}`);
    return candidacy;
  }

  #stopAnnouncing(candidacy: Candidacy): void {
    if (candidacy.announced === undefined) return;
    candidacy.announced = undefined;
    this.#log("candidate", { partition: candidacy.partition, epoch: undefined });
    this.#callCandidate(candidacy.partition, undefined);
  }

  #callCandidate(partition: string, state: { epoch: number } | undefined): void {
    this.#call("onCandidate", () => this.#handlers.onCandidate(partition, state));
  }

  #emitSession(state: SessionEvent): void {
    this.#log("session", { state });
    this.#call("onSession", () => this.#handlers.onSession(state));
  }

  #call(name: string, fn: () => void): void {
    if (this.#closed) return;
    try {
      fn();
    } catch (error) {
      this.#log("handler_threw", { handler: name, error: String(error) });
    }
  }

  #log(event: string, detail: Record<string, unknown>): void {
    try {
      this.#handlers.log(event, { node: this.#node.id, ...detail });
    } catch {
      // A broken logger must not break the cluster layer.
    }
  }
}

function ancestors(root: string): string[] {
  const parts = root.split("/").filter((part) => part.length > 0);
  const result: string[] = [];
  for (let i = 1; i < parts.length; i += 1) result.push("/" + parts.slice(0, i).join("/"));
  return result;
}

function sameNodes(a: ReadonlyMap<string, NodeInfo>, b: ReadonlyMap<string, NodeInfo>): boolean {
  if (a.size !== b.size) return false;
  for (const [id, info] of a) {
    const other = b.get(id);
    if (other === undefined || JSON.stringify(other) !== JSON.stringify(info)) return false;
  }
  return true;
}

function cloneNode(info: NodeInfo): NodeInfo {
  return { ...info, partitions: [...info.partitions] };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
