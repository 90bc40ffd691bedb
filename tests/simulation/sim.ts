/**
 * The deterministic simulation of one partition's replica group, driving the
 * REAL {@linkcode ReplicaCore} (FoundationDB / TigerBeetle style): a seeded
 * PRNG decides the network (loss, delay, reordering, duplication,
 * partitions), the disks (fsync latency; a crash keeps a random prefix of the
 * writes not yet acknowledged), crashes and restarts, pauses (SIGSTOP), a
 * ZooKeeper-like election (ephemeral-sequential candidates, session expiry)
 * and clients (put/delete/get on random nodes).
 *
 * Invariants are checked as the run goes: one leader per epoch; a committed
 * entry never changes; every node's store is the fold of the committed
 * prefix; every committed index is durable on a majority; at the end the
 * cluster heals and must converge; the client history must be linearizable.
 *
 * @module
 */
import { ReplicaCore } from "../../src/replication/core.ts";
import { decodeMessage, encodeMessage } from "../../src/replication/codec.ts";
import type { CoreEvent, LogEntry, PeerMessage, Ready, RecoveredState } from "../../src/replication/types.ts";
import { checkLinearizable, type HistoryOp } from "../../src/check/linearizability.ts";
import { Prng } from "./prng.ts";

/** Simulated milliseconds per step. */
export const STEP_MS = 10;
/** Default steps with faults per seed. */
export const DEFAULT_FAULT_STEPS = 250;
/** Default steps of healed, quiet cluster at the end (it must converge). */
export const DEFAULT_QUIET_STEPS = 300;
/** Trace lines kept for a failure report. */
export const DEFAULT_TRACE_LINES = 200;
/** Linearizability search budget per key. */
const MAX_CHECK_STATES = 200_000;
/** Apply outcomes a node remembers for results not yet taken. */
const MAX_APPLY_OUTCOMES = 1024;

/** Options for {@linkcode runSeed}. */
export interface SimOptions {
  /** Steps with faults (default {@linkcode DEFAULT_FAULT_STEPS}). */
  faultSteps?: number;
  /** Quiet steps at the end (default {@linkcode DEFAULT_QUIET_STEPS}). */
  quietSteps?: number;
  /** Keep a trace (the last `traceLines` lines, or everything with `verbose`). */
  trace?: boolean;
  traceLines?: number;
  /** Keep the whole trace. */
  verbose?: boolean;
}

/** What one seed did. */
export interface SimResult {
  seed: number;
  config: string;
  steps: number;
  commits: number;
  faults: number;
  ops: number;
  messages: number;
  /** The linearizability check ran out of budget (counted as a pass). */
  inconclusive: boolean;
  violations: string[];
  trace: string[];
}

interface SimConfig {
  n: number;
  heartbeatMs: number;
  maxBatchEntries: number;
  maxInflightEntries: number;
  maxUncommittedEntries: number;
  loss: number;
  duplicate: number;
  maxDelay: number;
  diskMaxDelay: number;
  crash: number;
  pause: number;
  partition: number;
  expire: number;
  sessionTimeout: number;
  compactEvery: number;
  clients: number;
  keys: number;
  opRate: number;
  /** Probability that a client sends to the node it last used (a cached, maybe stale, leader). */
  sticky: number;
  /**
   * Probability of a targeted fault at a dangerous moment (FoundationDB's
   * "buggify"): a new leader crashes or pauses soon after taking over, a
   * member crashes right after promising, a paused leader wakes up cut off.
   */
  buggify: number;
  codec: boolean;
}

interface Snapshot {
  index: number;
  epoch: number;
  state: Map<string, string>;
}

interface Disk {
  promisedEpoch: number;
  /** Increasing indexes; may have a gap below the snapshot index. */
  log: LogEntry[];
  snapshot: Snapshot;
}

interface PendingWrite {
  persistId: number;
  persist: NonNullable<Ready["persist"]>;
}

interface ClientOp {
  history: HistoryOp;
  client: Client;
  /** Core id on the node that took it. */
  id: number;
}

interface Client {
  name: string;
  /** The node this client used last. */
  node: SimNode | undefined;
  busy: ClientOp | undefined;
  timeoutAt: number;
  counter: number;
}

interface SimNode {
  id: string;
  core: ReplicaCore | undefined;
  incarnation: number;
  paused: boolean;
  pauseId: number;
  sessionExpired: boolean;
  /** ZooKeeper notifications waiting while the node is cut off from ZooKeeper (its group is not 0). */
  zkHeld: Array<CoreEvent | "expired">;
  zkCutId: number;
  registerPending: boolean;
  held: SimEvent[];
  disk: Disk;
  pending: PendingWrite[];
  diskFreeAt: number;
  store: Map<string, string>;
  appliedIndex: number;
  appliedEpoch: number;
  applyOutcomes: Map<number, boolean>;
  ops: Map<number, ClientOp>;
  group: number;
  zkNextAt: number;
  dirty: boolean;
  lastCommit: number;
}

type SimEvent =
  | { kind: "msg"; at: number; to: string; message: PeerMessage }
  | { kind: "snap"; at: number; to: string; from: string; image: Snapshot }
  | { kind: "snapreq"; at: number; to: string; from: string }
  | { kind: "disk"; at: number; to: string; incarnation: number; persistId: number }
  | { kind: "zk"; at: number; to: string; incarnation: number; event: CoreEvent | "expired" }
  | { kind: "client"; at: number; to: string; op: ClientOp }
  | { kind: "restart"; at: number; to: string }
  | { kind: "resume"; at: number; to: string; pauseId: number }
  | { kind: "expire"; at: number; to: string; incarnation: number; cause: "crash" | "pause" | "cut"; token: number }
  | { kind: "zkdeadline"; at: number; to: string; incarnation: number; token: number }
  | { kind: "register"; at: number; to: string; incarnation: number }
  | { kind: "heal"; at: number }
  | { kind: "fault"; at: number; to: string; incarnation: number; action: "crash" | "pause" | "isolate" };

/** A binary heap of events ordered by (time, insertion order): deterministic. */
class EventQueue {
  #items: SimEvent[] = [];
  #order: number[] = [];
  #seq = 0;

  get size(): number {
    return this.#items.length;
  }

  peekTime(): number {
    return this.#items.length > 0 ? this.#items[0].at : Infinity;
  }

  push(event: SimEvent): void {
    const items = this.#items;
    const order = this.#order;
    let i = items.length;
    items.push(event);
    order.push(this.#seq++);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#less(i, parent)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  pop(): SimEvent {
    const items = this.#items;
    const top = items[0];
    const last = items.length - 1;
    this.#swap(0, last);
    items.pop();
    this.#order.pop();
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < items.length && this.#less(left, smallest)) smallest = left;
      if (right < items.length && this.#less(right, smallest)) smallest = right;
      if (smallest === i) break;
      this.#swap(i, smallest);
      i = smallest;
    }
    return top;
  }

  #less(a: number, b: number): boolean {
    const ta = this.#items[a].at;
    const tb = this.#items[b].at;
    return ta < tb || (ta === tb && this.#order[a] < this.#order[b]);
  }

  #swap(a: number, b: number): void {
    const items = this.#items;
    const order = this.#order;
    const t = items[a];
    items[a] = items[b];
    items[b] = t;
    const o = order[a];
    order[a] = order[b];
    order[b] = o;
  }
}

/** Thrown inside the world when an invariant breaks; caught by {@linkcode runSeed}. */
class Violation extends Error {}

const PARTITION = "p0";

function pickConfig(rng: Prng): SimConfig {
  const n = rng.pick([1, 3, 3, 3, 3, 3, 5, 5, 5, 5]);
  const profile = rng.float();
  if (profile < 0.25 && n > 1) {
    // Chaos: many short epochs, one entry per message, faults everywhere.
    return {
      n,
      heartbeatMs: rng.pick([20, 30]),
      maxBatchEntries: rng.pick([1, 1, 2]),
      maxInflightEntries: rng.pick([8, 16]),
      maxUncommittedEntries: rng.pick([8, 64]),
      loss: rng.pick([0, 0.05, 0.15]),
      duplicate: rng.pick([0, 0.05]),
      maxDelay: rng.pick([5, 20, 40]),
      diskMaxDelay: rng.pick([5, 20, 40]),
      crash: rng.pick([0.002, 0.005]),
      pause: rng.pick([0.002, 0.005]),
      partition: rng.pick([0, 0.005]),
      expire: rng.pick([0.002, 0.005]),
      sessionTimeout: rng.pick([100, 150]),
      compactEvery: rng.pick([3, 10, 1_000_000]),
      clients: rng.range(2, 4),
      keys: rng.range(1, 2),
      opRate: rng.pick([0.2, 0.5]),
      sticky: rng.pick([0.5, 0.9]),
      buggify: rng.pick([0.3, 0.6]),
      codec: rng.chance(0.1),
    };
  }
  const calm = profile > 0.85;
  return {
    n,
    heartbeatMs: rng.pick([20, 30, 50]),
    maxBatchEntries: rng.pick([1, 2, 4, 8, 64]),
    // Below the number of clients a lagging follower may never catch up (legal, but the
    // end-of-run convergence check could not hold).
    maxInflightEntries: rng.pick([8, 16, 256]),
    maxUncommittedEntries: rng.pick([8, 64, 1000]),
    loss: calm ? 0 : rng.pick([0, 0.01, 0.05, 0.1, 0.25]),
    duplicate: calm ? 0 : rng.pick([0, 0.02, 0.1]),
    maxDelay: rng.pick([2, 10, 30, 80]),
    diskMaxDelay: rng.pick([1, 5, 20, 60]),
    crash: calm ? 0 : rng.pick([0, 0.002, 0.006, 0.015]),
    pause: calm ? 0 : rng.pick([0, 0.002, 0.006, 0.015]),
    partition: calm ? 0 : rng.pick([0, 0.003, 0.01]),
    expire: calm ? 0 : rng.pick([0, 0.002, 0.008]),
    sessionTimeout: rng.pick([150, 300, 600]),
    compactEvery: rng.pick([3, 10, 40, 1_000_000]),
    clients: rng.range(1, 4),
    keys: rng.range(1, 3),
    opRate: rng.pick([0.05, 0.15, 0.4]),
    sticky: rng.pick([0, 0.5, 0.9]),
    buggify: calm ? 0 : rng.pick([0, 0, 0.05]),
    codec: rng.chance(0.25),
  };
}

function describe(c: SimConfig): string {
  return `n=${c.n} hb=${c.heartbeatMs} batch=${c.maxBatchEntries} inflight=${c.maxInflightEntries} ` +
    `uncommitted=${c.maxUncommittedEntries} loss=${c.loss} dup=${c.duplicate} delay<=${c.maxDelay} ` +
    `disk<=${c.diskMaxDelay} crash=${c.crash} pause=${c.pause} partition=${c.partition} expire=${c.expire} ` +
    `session=${c.sessionTimeout} compact=${c.compactEvery} clients=${c.clients} keys=${c.keys} ` +
    `rate=${c.opRate} sticky=${c.sticky} buggify=${c.buggify} codec=${c.codec}`;
}

/** The world of one seed. */
class World {
  readonly rng: Prng;
  readonly config: SimConfig;
  readonly nodes: SimNode[] = [];
  readonly byId = new Map<string, SimNode>();
  readonly queue = new EventQueue();
  readonly clients: Client[] = [];
  readonly history: HistoryOp[] = [];
  readonly traceOn: boolean;
  readonly traceLimit: number;
  readonly trace: string[] = [];
  now = 0;
  quiet = false;
  inconclusive = false;
  faults = 0;
  messages = 0;
  nextOpId = 1;
  /** The committed log as first seen: index → entry. */
  readonly committed: Array<{ epoch: number; op: string; key: string; value: string }> = [];
  /** Committed put values → index (client values are unique). */
  readonly committedValues = new Map<string, number>();
  /** epoch → the node that led it. */
  readonly epochLeader = new Map<number, string>();
  /** ZooKeeper: candidates by increasing sequence number. */
  candidates: Array<{ node: string; seq: number; incarnation: number }> = [];
  zkSeq = 0;
  zkLeaderSeq = -1;

  constructor(seed: number, options: SimOptions) {
    this.rng = new Prng(seed);
    this.config = pickConfig(this.rng);
    this.traceOn = options.trace === true || options.verbose === true;
    this.traceLimit = options.verbose ? Infinity : options.traceLines ?? DEFAULT_TRACE_LINES;
    const ids = Array.from({ length: this.config.n }, (_, i) => `n${i + 1}`);
    for (const id of ids) {
      const node: SimNode = {
        id,
        core: undefined,
        incarnation: 0,
        paused: false,
        pauseId: 0,
        sessionExpired: false,
        zkHeld: [],
        zkCutId: 0,
        registerPending: false,
        held: [],
        disk: { promisedEpoch: 0, log: [], snapshot: { index: 0, epoch: 0, state: new Map() } },
        pending: [],
        diskFreeAt: 0,
        store: new Map(),
        appliedIndex: 0,
        appliedEpoch: 0,
        applyOutcomes: new Map(),
        ops: new Map(),
        group: 0,
        zkNextAt: 0,
        dirty: false,
        lastCommit: 0,
      };
      this.nodes.push(node);
      this.byId.set(id, node);
    }
    for (let i = 0; i < this.config.clients; i++) {
      this.clients.push({ name: `c${i + 1}`, node: undefined, busy: undefined, timeoutAt: 0, counter: 0 });
    }
    for (const node of this.nodes) this.#boot(node);
  }

  log(line: string): void {
    if (!this.traceOn) return;
    this.trace.push(`${String(this.now).padStart(6)} ${line}`);
    if (this.trace.length > this.traceLimit * 2) this.trace.splice(0, this.trace.length - this.traceLimit);
  }

  fail(message: string): never {
    throw new Violation(`t=${this.now}: ${message}`);
  }

  // ---------------------------------------------------------------- nodes

  #boot(node: SimNode): void {
    const disk = node.disk;
    const entries = disk.log.filter((e) => e.index > disk.snapshot.index);
    for (let i = 0; i < entries.length; i++) {
      if (entries[i].index !== disk.snapshot.index + 1 + i) {
        this.fail(`${node.id} disk log has a gap after snapshot ${disk.snapshot.index}`);
      }
    }
    const recovered: RecoveredState = {
      promisedEpoch: disk.promisedEpoch,
      entries,
      snapshotIndex: disk.snapshot.index,
      snapshotEpoch: disk.snapshot.epoch,
    };
    node.core = new ReplicaCore({
      partition: PARTITION,
      self: node.id,
      members: this.nodes.map((n) => n.id),
      recovered,
      heartbeatMs: this.config.heartbeatMs,
      maxBatchEntries: this.config.maxBatchEntries,
      maxInflightEntries: this.config.maxInflightEntries,
      maxUncommittedEntries: this.config.maxUncommittedEntries,
    });
    node.store = new Map(disk.snapshot.state);
    node.appliedIndex = disk.snapshot.index;
    node.appliedEpoch = disk.snapshot.epoch;
    node.lastCommit = disk.snapshot.index;
    node.applyOutcomes.clear();
    node.sessionExpired = false;
    this.log(`${node.id} boot #${node.incarnation} promised=${disk.promisedEpoch} snapshot=${disk.snapshot.index} entries=${entries.length}`);
    node.dirty = true;
    this.queue.push({ kind: "register", at: this.now + this.rng.range(1, 30), to: node.id, incarnation: node.incarnation });
  }

  #step(node: SimNode, event: CoreEvent): void {
    const core = node.core!;
    try {
      core.step(event);
    } catch (error) {
      this.fail(`${node.id} core threw on ${event.type}: ${(error as Error).stack}`);
    }
    node.dirty = true;
  }

  #crash(node: SimNode): void {
    this.faults++;
    // Writes handed to the disk but not acknowledged: a random prefix reached
    // the platter, possibly with part of the next one (torn batch, ordered).
    const keep = this.rng.int(node.pending.length + 1);
    for (let i = 0; i < keep; i++) this.#applyWrite(node, node.pending[i].persist, Infinity);
    if (keep < node.pending.length && this.rng.chance(0.5)) {
      const persist = node.pending[keep].persist;
      this.#applyWrite(node, persist, this.rng.int(persist.entries.length + 1));
    }
    this.log(`${node.id} CRASH (kept ${keep}/${node.pending.length} unacknowledged writes)`);
    node.pending = [];
    node.core = undefined;
    node.paused = false;
    node.held = [];
    node.incarnation++;
    node.store = new Map();
    node.ops.clear(); // their clients time out: outcome unknown

    node.zkHeld = [];
    node.registerPending = false;
    this.queue.push({ kind: "expire", at: this.now + this.config.sessionTimeout, to: node.id, incarnation: node.incarnation - 1, cause: "crash", token: 0 });
    this.queue.push({ kind: "restart", at: this.now + this.rng.range(50, 800), to: node.id });
  }

  #applyWrite(node: SimNode, persist: NonNullable<Ready["persist"]>, entryCount: number): void {
    const disk = node.disk;
    if (persist.promisedEpoch !== undefined) {
      if (persist.promisedEpoch < disk.promisedEpoch) this.fail(`${node.id} promise went down on disk`);
      disk.promisedEpoch = persist.promisedEpoch;
    }
    if (persist.truncateAfter !== undefined) {
      const t = persist.truncateAfter;
      while (disk.log.length > 0 && disk.log[disk.log.length - 1].index > t) disk.log.pop();
    }
    const count = Math.min(entryCount, persist.entries.length);
    for (let i = 0; i < count; i++) {
      const entry = persist.entries[i];
      const last = disk.log.length > 0 ? disk.log[disk.log.length - 1].index : 0;
      if (entry.index !== last + 1 && !(entry.index > last && entry.index - 1 <= disk.snapshot.index)) {
        this.fail(`${node.id} disk append ${entry.index} after ${last} (snapshot ${disk.snapshot.index})`);
      }
      if (entry.epoch > disk.promisedEpoch) this.fail(`${node.id} disk entry epoch ${entry.epoch} above promise`);
      disk.log.push(entry);
    }
  }

  // ------------------------------------------------------------- network

  #send(message: PeerMessage): void {
    this.messages++;
    if (this.config.codec) {
      const line = encodeMessage(message);
      if (line.includes("\n")) this.fail("encoded message contains a newline");
      message = decodeMessage(line.slice("REPLICATE ".length));
    }
    const copies = this.rng.chance(this.config.duplicate) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      if (!this.quiet && this.rng.chance(this.config.loss)) continue;
      const at = this.now + this.rng.range(1, this.config.maxDelay);
      this.queue.push({ kind: "msg", at, to: message.to, message });
    }
  }

  #linked(a: SimNode, b: SimNode): boolean {
    return a.group === b.group;
  }

  // ---------------------------------------------------------------- ZooKeeper

  #zkNotify(node: SimNode, event: CoreEvent | "expired"): void {
    if (node.group !== 0) {
      // Cut off from ZooKeeper (which lives in group 0): told after reconnecting.
      node.zkHeld.push(event);
      return;
    }
    // One session's notifications arrive in order.
    const at = Math.max(node.zkNextAt, this.now + this.rng.range(1, 20));
    node.zkNextAt = at;
    this.queue.push({ kind: "zk", at, to: node.id, incarnation: node.incarnation, event });
  }

  #zkEvaluate(): void {
    const lowest = this.candidates[0];
    const seq = lowest?.seq ?? -1;
    if (seq === this.zkLeaderSeq) return;
    const old = this.zkLeaderSeq;
    this.zkLeaderSeq = seq;
    this.log(`zk leader seq ${old} -> ${seq} (${lowest?.node ?? "none"})`);
    if (lowest !== undefined) {
      const node = this.byId.get(lowest.node)!;
      if (node.incarnation === lowest.incarnation) this.#zkNotify(node, { type: "campaign", epoch: lowest.seq });
    }
    for (const node of this.nodes) {
      if (node.core !== undefined) this.#zkNotify(node, { type: "leader_hint", leader: lowest?.node });
    }
  }

  #zkRemove(nodeId: string, incarnation: number): void {
    const before = this.candidates.length;
    this.candidates = this.candidates.filter((c) => !(c.node === nodeId && c.incarnation === incarnation));
    if (this.candidates.length !== before) {
      this.log(`zk session of ${nodeId}#${incarnation} expired`);
      this.#zkEvaluate();
    }
  }

  /** Moves nodes between network groups; ZooKeeper is reachable from group 0 only. */
  #regroup(groups: number[]): void {
    for (let i = 0; i < this.nodes.length; i++) {
      const node = this.nodes[i];
      const wasCut = node.group !== 0;
      node.group = groups[i];
      const cut = node.group !== 0;
      if (!wasCut && cut && node.core !== undefined) {
        node.zkCutId++;
        const deadline = Math.floor(this.config.sessionTimeout * 2 / 3);
        this.queue.push({ kind: "zkdeadline", at: this.now + deadline, to: node.id, incarnation: node.incarnation, token: node.zkCutId });
        this.queue.push({ kind: "expire", at: this.now + this.config.sessionTimeout, to: node.id, incarnation: node.incarnation, cause: "cut", token: node.zkCutId });
      } else if (wasCut && !cut) {
        this.#reconnectZk(node);
      }
    }
  }

  #reconnectZk(node: SimNode): void {
    const held = node.zkHeld;
    node.zkHeld = [];
    if (node.core === undefined) return;
    this.log(`${node.id} reconnects to zk${node.sessionExpired ? " (session expired)" : ""}`);
    if (node.sessionExpired) {
      if (!node.paused) {
        node.sessionExpired = false;
        this.#zkNotify(node, "expired");
      }
      return;
    }
    for (const event of held) this.#zkNotify(node, event);
    if (node.registerPending) {
      node.registerPending = false;
      this.queue.push({ kind: "register", at: this.now + 1, to: node.id, incarnation: node.incarnation });
    }
    // It may have stepped down at its own deadline while still the lowest candidate: lead again.
    const lowest = this.candidates[0];
    if (lowest !== undefined && lowest.node === node.id && lowest.incarnation === node.incarnation) {
      this.#zkNotify(node, { type: "campaign", epoch: lowest.seq });
    }
  }

  zkLeader(): SimNode | undefined {
    const lowest = this.candidates[0];
    return lowest === undefined ? undefined : this.byId.get(lowest.node);
  }

  // -------------------------------------------------------------- dispatch

  #deliver(event: SimEvent): void {
    if (event.kind === "heal") {
      this.log("network healed");
      this.#regroup(this.nodes.map(() => 0));
      return;
    }
    const node = this.byId.get(event.to)!;
    switch (event.kind) {
      case "fault":
        if (event.action === "isolate" && node.core !== undefined && node.incarnation === event.incarnation) {
          this.faults++;
          this.log(`${node.id} ISOLATED (alone in group 1)`);
          this.#regroup(this.nodes.map((n) => (n === node ? 1 : 0)));
          this.queue.push({ kind: "heal", at: this.now + this.rng.range(100, 600) });
          return;
        }
        if (node.core === undefined || node.paused || node.incarnation !== event.incarnation) return;
        this.log(`${node.id} BUGGIFY ${event.action}`);
        if (event.action === "crash") this.#crash(node);
        else this.#pause(node, this.config.sessionTimeout + this.rng.range(10, 400));
        return;
      case "restart":
        if (node.core === undefined) this.#boot(node);
        return;
      case "register":
        if (node.core === undefined || node.incarnation !== event.incarnation) return;
        if (node.paused) {
          node.held.push(event);
          return;
        }
        if (node.group !== 0) {
          node.registerPending = true;
          return;
        }
        this.candidates.push({ node: node.id, seq: ++this.zkSeq, incarnation: node.incarnation });
        this.log(`zk ${node.id} registered candidate ${this.zkSeq}`);
        this.#zkEvaluate();
        return;
      case "expire":
        if (event.cause === "pause") {
          // A pause outlived the session.
          if (!node.paused || node.pauseId !== event.token || node.incarnation !== event.incarnation) return;
          node.sessionExpired = true;
        } else if (event.cause === "cut") {
          if (node.group === 0 || node.zkCutId !== event.token || node.incarnation !== event.incarnation) return;
          node.sessionExpired = true;
        }
        this.#zkRemove(node.id, event.incarnation);
        return;
      case "zkdeadline":
        // The host's own deadline: no word from ZooKeeper for 2/3 of the session, stop leading.
        if (node.group === 0 || node.zkCutId !== event.token || node.incarnation !== event.incarnation) return;
        if (node.core === undefined) return;
        if (node.paused) {
          node.held.push(event);
          return;
        }
        this.log(`${node.id} zk deadline passed: step down`);
        this.#step(node, { type: "step_down" });
        return;
      case "resume":
        if (!node.paused || node.pauseId !== event.pauseId) return;
        node.paused = false;
        this.log(`${node.id} RESUME (${node.held.length} held events)`);
        for (const held of node.held) this.queue.push({ ...held, at: this.now });
        node.held = [];
        if (node.sessionExpired) {
          node.sessionExpired = false;
          this.#zkNotify(node, "expired");
        }
        return;
    }
    if (node.core === undefined) {
      if (event.kind === "client") this.#finishOp(event.op, "failed", undefined); // connection refused
      return;
    }
    if (node.paused) {
      node.held.push(event);
      return;
    }
    switch (event.kind) {
      case "msg": {
        const from = this.byId.get(event.message.from)!;
        if (!this.#linked(from, node)) return;
        if (this.traceOn) this.log(`${node.id} <- ${describeMessage(event.message)}`);
        this.#step(node, { type: "message", message: event.message });
        return;
      }
      case "disk": {
        // Already carried out (a snapshot installation flushes the queue first)?
        if (event.incarnation !== node.incarnation || node.pending[0]?.persistId !== event.persistId) return;
        const write = node.pending.shift()!;
        this.#applyWrite(node, write.persist, Infinity);
        this.#step(node, { type: "persisted", persistId: write.persistId });
        return;
      }
      case "zk": {
        if (event.incarnation !== node.incarnation) return;
        if (event.event === "expired") {
          // The resumed node learns its session is gone: drop roles, re-register.
          this.log(`${node.id} learns its zk session expired`);
          this.#step(node, { type: "step_down" });
          this.queue.push({ kind: "register", at: this.now + this.rng.range(1, 30), to: node.id, incarnation: node.incarnation });
          return;
        }
        if (event.event.type === "campaign" || event.event.type === "step_down") {
          this.log(`${node.id} zk ${event.event.type} ${event.event.type === "campaign" ? event.event.epoch : ""}`);
        }
        this.#step(node, event.event);
        return;
      }
      case "snapreq": {
        const requester = this.byId.get(event.from)!;
        if (!this.#linked(node, requester)) return;
        this.#sendImage(node, requester);
        return;
      }
      case "snap": {
        const from = this.byId.get(event.from)!;
        if (!this.#linked(from, node)) return;
        this.#install(node, event.image);
        return;
      }
      case "client":
        this.#startOp(node, event.op);
        return;
    }
  }

  #sendImage(from: SimNode, to: SimNode): void {
    const image: Snapshot = { index: from.appliedIndex, epoch: from.appliedEpoch, state: new Map(from.store) };
    if (!this.quiet && this.rng.chance(this.config.loss)) return;
    this.log(`${from.id} sends snapshot @${image.index} to ${to.id}`);
    this.queue.push({ kind: "snap", at: this.now + this.rng.range(1, this.config.maxDelay * 2), to: to.id, from: from.id, image });
  }

  #install(node: SimNode, image: Snapshot): void {
    const core = node.core!;
    if (!core.wantsSnapshot(image.index, image.epoch)) {
      this.log(`${node.id} ignores snapshot @${image.index} (commit ${core.status().commitIndex})`);
      return;
    }
    this.#checkFold(image.state, image.index, `snapshot @${image.index} sent to ${node.id}`);
    // The storage carries out the writes queued before the install, then resets the log to the snapshot.
    while (node.pending.length > 0) {
      const write = node.pending.shift()!;
      this.#applyWrite(node, write.persist, Infinity);
      this.#step(node, { type: "persisted", persistId: write.persistId });
    }
    node.disk.log = [];
    node.disk.snapshot = { index: image.index, epoch: image.epoch, state: new Map(image.state) };
    node.store = new Map(image.state);
    node.appliedIndex = image.index;
    node.appliedEpoch = image.epoch;
    this.log(`${node.id} installs snapshot @${image.index}/${image.epoch}`);
    this.#step(node, { type: "snapshot_installed", index: image.index, epoch: image.epoch });
  }

  // --------------------------------------------------------------- ready

  #flush(node: SimNode): void {
    node.dirty = false;
    const core = node.core;
    if (core === undefined || node.paused) return;
    const ready = core.ready();
    if (ready.persist !== undefined) {
      const at = Math.max(node.diskFreeAt, this.now + this.rng.range(0, this.config.diskMaxDelay));
      node.diskFreeAt = at;
      node.pending.push({ persistId: ready.persist.persistId, persist: ready.persist });
      this.queue.push({ kind: "disk", at, to: node.id, incarnation: node.incarnation, persistId: ready.persist.persistId });
    }
    for (const message of ready.messages) {
      this.#send(message);
      if (message.type === "promise_reply" && message.ok && !this.quiet && this.rng.chance(this.config.buggify / 2)) {
        this.queue.push({ kind: "fault", at: this.now, to: node.id, incarnation: node.incarnation, action: "crash" });
      }
    }
    for (const entry of ready.committed) this.#apply(node, entry);
    for (const result of ready.results) {
      const op = node.ops.get(result.id);
      if (op === undefined) continue;
      node.ops.delete(result.id);
      if ("failure" in result) {
        this.#finishOp(op, result.failure === "unknown" ? "unknown" : "failed", undefined);
      } else {
        const entry = this.committed[result.index];
        if (entry === undefined || entry.key !== op.history.key || entry.op !== op.history.op) {
          this.fail(`${node.id} result for op ${result.id} names index ${result.index} holding another entry`);
        }
        if (op.history.op === "put") {
          if (entry.value !== op.history.value) this.fail(`result index ${result.index} holds another value`);
          this.#finishOp(op, "ok", undefined);
        } else {
          const existed = node.applyOutcomes.get(result.index);
          if (existed === undefined) this.fail(`${node.id} has no apply outcome for ${result.index}`);
          this.#finishOp(op, existed ? "deleted" : "not_found", undefined);
        }
      }
    }
    for (const read of ready.reads) {
      const op = node.ops.get(read.id);
      if (op === undefined) continue;
      node.ops.delete(read.id);
      if ("failure" in read) {
        this.#finishOp(op, "failed", undefined);
      } else {
        const value = node.store.get(op.history.key);
        this.#finishOp(op, value === undefined ? "not_found" : "ok", value);
      }
    }
    for (const request of ready.sendSnapshot) {
      const to = this.byId.get(request.to)!;
      if (this.#linked(node, to)) this.#sendImage(node, to);
    }
    for (const request of ready.needSnapshotFrom) {
      if (!this.quiet && this.rng.chance(this.config.loss)) continue;
      this.queue.push({ kind: "snapreq", at: this.now + this.rng.range(1, this.config.maxDelay), to: request.from, from: node.id });
    }
    for (const event of ready.events) this.#onCoreEvent(node, event);
    this.#checkCommit(node);
    if (node.appliedIndex - node.disk.snapshot.index >= this.config.compactEvery) this.#compact(node);
  }

  #onCoreEvent(node: SimNode, event: Ready["events"][number]): void {
    if (this.traceOn) this.log(`${node.id} event ${event.kind} ${JSON.stringify(event.detail)}`);
    if (event.kind === "leading") {
      const epoch = event.detail.epoch as number;
      const other = this.epochLeader.get(epoch);
      if (other !== undefined && other !== node.id) this.fail(`two leaders in epoch ${epoch}: ${other} and ${node.id}`);
      this.epochLeader.set(epoch, node.id);
      if (!this.quiet && this.rng.chance(this.config.buggify)) {
        const roll = this.rng.float();
        const at = this.now + this.rng.range(0, 3 * this.config.heartbeatMs);
        const action = roll < 0.5 ? "crash" : "pause";
        this.queue.push({ kind: "fault", at, to: node.id, incarnation: node.incarnation, action });
      }
    }
  }

  #apply(node: SimNode, entry: LogEntry): void {
    if (entry.index !== node.appliedIndex + 1) {
      this.fail(`${node.id} applies ${entry.index} after ${node.appliedIndex}`);
    }
    const value = entry.value.toString();
    const known = this.committed[entry.index];
    if (known === undefined) {
      if (entry.index > 1 && this.committed[entry.index - 1] === undefined) {
        this.fail(`${node.id} commits ${entry.index} before anyone committed ${entry.index - 1}`);
      }
      this.committed[entry.index] = { epoch: entry.epoch, op: entry.op, key: entry.key, value };
      if (entry.op === "put") this.committedValues.set(value, entry.index);
      this.log(`COMMIT ${entry.index} e${entry.epoch} ${entry.op} ${entry.key} ${value} (first seen on ${node.id})`);
    } else if (
      known.epoch !== entry.epoch || known.op !== entry.op || known.key !== entry.key || known.value !== value
    ) {
      this.fail(
        `${node.id} committed ${entry.index} as e${entry.epoch} ${entry.op} ${entry.key}=${value}, ` +
          `but it was committed as e${known.epoch} ${known.op} ${known.key}=${known.value}`,
      );
    }
    let existed = false;
    if (entry.op === "put") {
      node.store.set(entry.key, value);
    } else if (entry.op === "delete") {
      existed = node.store.delete(entry.key);
    }
    node.applyOutcomes.set(entry.index, existed);
    if (node.applyOutcomes.size > MAX_APPLY_OUTCOMES) node.applyOutcomes.delete(node.applyOutcomes.keys().next().value!);
    node.appliedIndex = entry.index;
    node.appliedEpoch = entry.epoch;
  }

  /** Every index a node learns is committed must be durable on a majority (or under their snapshots). */
  #checkCommit(node: SimNode): void {
    const status = node.core!.status();
    if (status.commitIndex <= node.lastCommit) return;
    node.lastCommit = status.commitIndex;
    if (node.appliedIndex !== status.commitIndex) {
      this.fail(`${node.id} applied ${node.appliedIndex} but commit is ${status.commitIndex}`);
    }
    const index = status.commitIndex;
    const entry = this.committed[index];
    if (entry === undefined) this.fail(`${node.id} commit ${index} unknown`);
    let durable = 0;
    for (const other of this.nodes) {
      if (other.disk.snapshot.index >= index || hasEntry(other.disk.log, index, entry.epoch)) durable++;
    }
    if (durable < Math.floor(this.nodes.length / 2) + 1) {
      this.fail(`${node.id} has commit ${index} durable on only ${durable} of ${this.nodes.length}`);
    }
    if (status.role === "leader") {
      const other = this.epochLeader.get(status.epoch);
      if (other !== undefined && other !== node.id) this.fail(`${node.id} commits in epoch ${status.epoch} led by ${other}`);
    }
  }

  #compact(node: SimNode): void {
    const index = node.appliedIndex;
    node.disk.snapshot = { index, epoch: node.appliedEpoch, state: new Map(node.store) };
    let drop = 0;
    while (drop < node.disk.log.length && node.disk.log[drop].index <= index) drop++;
    node.disk.log.splice(0, drop);
    this.log(`${node.id} compacts through ${index}`);
    this.#step(node, { type: "compacted", index, epoch: node.appliedEpoch });
  }

  /** The fold of the committed log through `index` must equal `state`. */
  #checkFold(state: Map<string, string>, index: number, what: string): void {
    const expected = new Map<string, string>();
    for (let i = 1; i <= index; i++) {
      const entry = this.committed[i];
      if (entry === undefined) this.fail(`${what}: committed entry ${i} unknown`);
      if (entry.op === "put") expected.set(entry.key, entry.value);
      else if (entry.op === "delete") expected.delete(entry.key);
    }
    if (expected.size !== state.size) this.fail(`${what}: ${state.size} keys, the committed log gives ${expected.size}`);
    for (const [key, value] of expected) {
      if (state.get(key) !== value) this.fail(`${what}: ${key}=${state.get(key)}, the committed log gives ${value}`);
    }
  }

  // -------------------------------------------------------------- clients

  #issue(client: Client): void {
    const keys = this.config.keys;
    const key = `k${this.rng.int(keys)}`;
    const roll = this.rng.float();
    const op: HistoryOp["op"] = roll < 0.55 ? "put" : roll < 0.85 ? "get" : "delete";
    const history: HistoryOp = { client: client.name, op, key, start: this.now, end: Infinity, outcome: "unknown" };
    if (op === "put") history.value = `${client.name}.${++client.counter}`;
    this.history.push(history);
    const leader = this.zkLeader();
    let target: SimNode;
    if (client.node !== undefined && this.rng.chance(this.config.sticky)) target = client.node;
    else target = leader !== undefined && this.rng.chance(0.8) ? leader : this.rng.pick(this.nodes);
    client.node = target;
    const clientOp: ClientOp = { history, client, id: this.nextOpId++ };
    client.busy = clientOp;
    client.timeoutAt = this.now + 1000;
    this.queue.push({ kind: "client", at: this.now + this.rng.range(1, 5), to: target.id, op: clientOp });
  }

  #startOp(node: SimNode, op: ClientOp): void {
    node.ops.set(op.id, op);
    const h = op.history;
    if (this.traceOn) this.log(`${node.id} client ${h.client} ${h.op} ${h.key} ${h.value ?? ""} (#${op.id})`);
    if (h.op === "get") {
      this.#step(node, { type: "read", id: op.id });
    } else {
      const value = Buffer.from(h.value ?? "");
      this.#step(node, { type: "propose", id: op.id, proposal: { op: h.op, key: h.key, value } });
    }
  }

  #finishOp(op: ClientOp, outcome: HistoryOp["outcome"], result: string | undefined): void {
    if (op.client.busy !== op) return; // the client gave up already
    const h = op.history;
    h.outcome = outcome;
    h.end = outcome === "unknown" ? Infinity : this.now;
    if (result !== undefined) h.result = result;
    op.client.busy = undefined;
    if (this.traceOn) this.log(`client ${h.client} ${h.op} ${h.key} ${h.value ?? ""} -> ${outcome} ${result ?? ""}`);
  }

  // ----------------------------------------------------------------- faults

  #pause(node: SimNode, length: number): void {
    this.faults++;
    node.paused = true;
    node.pauseId++;
    this.log(`${node.id} PAUSE for ${length}ms`);
    this.queue.push({ kind: "resume", at: this.now + length, to: node.id, pauseId: node.pauseId });
    const expireAt = this.now + this.config.sessionTimeout;
    this.queue.push({ kind: "expire", at: expireAt, to: node.id, incarnation: node.incarnation, cause: "pause", token: node.pauseId });
  }

  /**
   * A leader pauses past its session, and just before it wakes up the network
   * cuts it off from everyone (peers and ZooKeeper): it resumes believing it
   * leads, until its own ZooKeeper deadline.
   */
  #isolatedPause(node: SimNode): void {
    const length = this.config.sessionTimeout + this.rng.range(100, 400);
    this.#pause(node, length);
    const cutAt = this.now + length - this.rng.range(1, 30);
    this.queue.push({ kind: "fault", at: cutAt, to: node.id, incarnation: node.incarnation, action: "isolate" });
  }

  #nemesis(): void {
    const c = this.config;
    const rng = this.rng;
    // Half of the faults hit the leader: that is where the interesting interleavings are.
    const victim = (): SimNode | undefined => {
      const live = this.nodes.filter((n) => n.core !== undefined && !n.paused);
      if (live.length === 0) return undefined;
      const leader = live.find((n) => n.core!.status().role === "leader");
      return leader !== undefined && rng.chance(0.5) ? leader : rng.pick(live);
    };
    if (rng.chance(c.crash)) {
      const node = victim();
      if (node !== undefined) this.#crash(node);
    }
    if (rng.chance(c.pause)) {
      const node = victim();
      if (node !== undefined) this.#pause(node, rng.pick([50, 200, c.sessionTimeout + rng.range(10, 400)]));
    }
    if (rng.chance(c.buggify * 0.03)) {
      const leader = this.nodes.find((n) => n.core !== undefined && !n.paused && n.core.status().serving);
      if (leader !== undefined) this.#isolatedPause(leader);
    }
    if (rng.chance(c.partition)) {
      this.faults++;
      const groups = this.nodes.map(() => rng.int(2));
      this.#regroup(groups);
      this.log(`PARTITION ${this.nodes.map((n) => `${n.id}:${n.group}`).join(" ")} (zookeeper in 0)`);
      this.queue.push({ kind: "heal", at: this.now + rng.range(50, 1500) });
    }
    if (rng.chance(c.expire)) {
      // A node loses its ZooKeeper session (cut off from ZooKeeper, not from peers).
      const node = rng.pick(this.nodes);
      if (node.core !== undefined && !node.paused) {
        this.faults++;
        this.log(`${node.id} ZK SESSION EXPIRED`);
        this.#zkRemove(node.id, node.incarnation);
        this.#zkNotify(node, "expired");
      }
    }
  }

  // ------------------------------------------------------------------- run

  run(faultSteps: number, quietSteps: number): number {
    let steps = 0;
    for (; steps < faultSteps + quietSteps; steps++) {
      if (steps === faultSteps) this.#heal();
      const end = this.now + STEP_MS;
      while (this.queue.peekTime() <= end) {
        const event = this.queue.pop();
        if (event.at > this.now) this.now = event.at;
        this.#deliver(event);
        // Everything that happens at one instant is one event-loop turn.
        if (this.queue.peekTime() !== this.now) this.#flushAll();
      }
      this.now = end;
      for (const node of this.nodes) {
        if (node.core !== undefined && !node.paused) this.#step(node, { type: "tick", now: this.now });
      }
      this.#flushAll();
      if (!this.quiet) this.#nemesis();
      this.#clients(steps < faultSteps + Math.min(50, quietSteps / 2));
    }
    return steps;
  }

  #flushAll(): void {
    // Flushing can make more work at the same instant (e.g. a snapshot install): loop until quiet.
    for (let round = 0; round < 4; round++) {
      let any = false;
      for (const node of this.nodes) {
        if (node.dirty) {
          any = true;
          this.#flush(node);
        }
      }
      if (!any) return;
    }
  }

  #clients(issue: boolean): void {
    for (const client of this.clients) {
      if (client.busy !== undefined && this.now >= client.timeoutAt) {
        // No answer in time: the outcome is unknown to this client.
        const op = client.busy;
        op.history.outcome = "unknown";
        op.history.end = Infinity;
        client.busy = undefined;
        if (this.traceOn) this.log(`client ${client.name} gives up on ${op.history.op} ${op.history.key}`);
      }
      if (issue && client.busy === undefined && this.rng.chance(this.config.opRate)) {
        // Sometimes a burst on one turn: batching of proposals.
        this.#issue(client);
      }
    }
  }

  #heal(): void {
    this.quiet = true;
    this.log("HEAL: network healed, paused nodes resumed, crashed nodes restarted");
    this.#regroup(this.nodes.map(() => 0));
    for (const node of this.nodes) {
      if (node.paused) this.queue.push({ kind: "resume", at: this.now + 1, to: node.id, pauseId: node.pauseId });
      if (node.core === undefined) this.queue.push({ kind: "restart", at: this.now + 1, to: node.id });
    }
  }

  /** End of run: the healed cluster converged, and the history is linearizable. */
  finalChecks(): void {
    const max = this.committed.length - 1;
    const serving = this.nodes.filter((n) => n.core?.status().serving);
    if (serving.length !== 1) this.fail(`after healing, ${serving.length} serving leaders`);
    for (const node of this.nodes) {
      if (node.core === undefined) this.fail(`${node.id} still down after healing`);
      if (node.appliedIndex < max) {
        this.fail(`${node.id} applied ${node.appliedIndex} of ${max} committed after healing`);
      }
      this.#checkFold(node.store, node.appliedIndex, `${node.id}'s store`);
    }
    for (const op of this.history) {
      if (op.op !== "put") continue;
      const index = this.committedValues.get(op.value!);
      if (op.outcome === "ok" && index === undefined) this.fail(`acknowledged put ${op.key}=${op.value} is not committed`);
      if (op.outcome === "failed" && index !== undefined) this.fail(`failed put ${op.key}=${op.value} was committed at ${index}`);
    }
    const result = checkLinearizable(this.history, { maxStates: MAX_CHECK_STATES });
    if (!result.ok && !result.inconclusive) this.fail(`not linearizable: key ${result.key}: ${result.message}`);
    this.inconclusive = result.inconclusive === true;
  }
}

function hasEntry(log: readonly LogEntry[], index: number, epoch: number): boolean {
  let lo = 0;
  let hi = log.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const at = log[mid].index;
    if (at === index) return log[mid].epoch === epoch;
    if (at < index) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}

function describeMessage(m: PeerMessage): string {
  const head = `${m.type} ${m.from}->${m.to} e${m.epoch}`;
  switch (m.type) {
    case "promise":
      return head;
    case "promise_reply":
      return `${head} ok=${m.ok} promised=${m.promisedEpoch} last=(${m.lastEpoch},${m.lastIndex}) commit=${m.commitIndex} first=${m.firstIndex}`;
    case "fetch":
      return `${head} from=${m.fromIndex} max=${m.maxEntries}`;
    case "fetch_reply":
      return `${head} ok=${m.ok} n=${m.entries.length}${m.entries.length ? `@${m.entries[0].index}` : ""} last=${m.lastIndex} snap=${m.snapshotNeeded} promised=${m.promisedEpoch}`;
    case "replicate":
      return `${head} prev=(${m.prevEpoch},${m.prevIndex}) n=${m.entries.length} commit=${m.commitIndex} readSeq=${m.readSeq}`;
    case "replicate_reply":
      return `${head} ok=${m.ok} match=${m.matchIndex} last=${m.lastIndex} promised=${m.promisedEpoch} readSeq=${m.readSeq}`;
  }
}

/** Runs one seed; never throws for a protocol violation (it is reported in `violations`). */
export function runSeed(seed: number, options: SimOptions = {}): SimResult {
  const world = new World(seed, options);
  const violations: string[] = [];
  let steps = 0;
  try {
    steps = world.run(options.faultSteps ?? DEFAULT_FAULT_STEPS, options.quietSteps ?? DEFAULT_QUIET_STEPS);
    world.finalChecks();
  } catch (error) {
    if (!(error instanceof Violation)) violations.push(`t=${world.now}: exception: ${(error as Error).stack}`);
    else violations.push(error.message);
  }
  return {
    seed,
    config: describe(world.config),
    steps,
    commits: world.committed.length === 0 ? 0 : world.committed.length - 1,
    faults: world.faults,
    ops: world.history.length,
    messages: world.messages,
    inconclusive: world.inconclusive,
    violations,
    trace: world.trace.slice(-world.traceLimit),
  };
}

/** Summary of many seeds; see {@linkcode runSeeds}. */
export interface SeedsSummary {
  seeds: number;
  steps: number;
  commits: number;
  faults: number;
  ops: number;
  messages: number;
  /** Seeds whose linearizability check ran out of budget. */
  inconclusive: number;
  failures: SimResult[];
  ms: number;
}

/** Options for {@linkcode runSeeds}. */
export interface RunSeedsOptions extends SimOptions {
  /** Stop after this many failing seeds (default 1). */
  maxFailures?: number;
}

/** Runs seeds `start` .. `start + count - 1`; failing seeds are re-run with a trace. */
export function runSeeds(start: number, count: number, options: RunSeedsOptions = {}): SeedsSummary {
  const began = performance.now();
  const summary: SeedsSummary = {
    seeds: 0,
    steps: 0,
    commits: 0,
    faults: 0,
    ops: 0,
    messages: 0,
    inconclusive: 0,
    failures: [],
    ms: 0,
  };
  for (let seed = start; seed < start + count; seed++) {
    const result = runSeed(seed, { ...options, trace: false });
    summary.seeds++;
    summary.steps += result.steps;
    summary.commits += result.commits;
    summary.faults += result.faults;
    summary.ops += result.ops;
    summary.messages += result.messages;
    if (result.inconclusive) summary.inconclusive++;
    if (result.violations.length > 0) {
      summary.failures.push(runSeed(seed, { ...options, trace: true }));
      if (summary.failures.length >= (options.maxFailures ?? 1)) break;
    }
  }
  summary.ms = performance.now() - began;
  return summary;
}

/** A failing seed as a readable report: the violation, the configuration, the trace's tail. */
export function formatFailure(result: SimResult): string {
  return [
    `seed ${result.seed} FAILED (reproduce: npm run sim -- --seed ${result.seed} --verbose)`,
    `config: ${result.config}`,
    ...result.violations.map((v) => `violation: ${v}`),
    `last ${result.trace.length} trace lines:`,
    ...result.trace,
  ].join("\n");
}
