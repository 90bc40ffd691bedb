/**
 * The replication core's contract, test by test: fencing, durability before
 * acknowledgement, commit rules, recovery, results, reads, snapshots.
 * Pure logic: the cores are driven by hand (what is durable, what is
 * delivered), no I/O.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { InvariantError, ReplicaCore } from "../../src/replication/core.ts";
import type { CoreOptions, LogEntry, PeerMessage, Ready, RecoveredState } from "../../src/replication/types.ts";

const P = "p1";

function entry(epoch: number, index: number, op: LogEntry["op"] = "put", key = `k${index}`, value = `v${index}`): LogEntry {
  return {
    epoch,
    index,
    op,
    key: op === "noop" ? "" : key,
    value: op === "put" ? Buffer.from(value) : Buffer.alloc(0),
  };
}

function log(...epochs: number[]): LogEntry[] {
  return epochs.map((epoch, i) => entry(epoch, i + 1));
}

function makeCore(
  self: string,
  members: string[],
  recovered: Partial<RecoveredState> = {},
  options: Partial<CoreOptions> = {},
): ReplicaCore {
  return new ReplicaCore({
    partition: P,
    self,
    members,
    recovered: { promisedEpoch: 0, entries: [], snapshotIndex: 0, snapshotEpoch: 0, ...recovered },
    heartbeatMs: 10,
    ...options,
  });
}

function ofType<T extends PeerMessage["type"]>(ready: Ready, type: T): Array<Extract<PeerMessage, { type: T }>> {
  return ready.messages.filter((m) => m.type === type) as Array<Extract<PeerMessage, { type: T }>>;
}

function isInvariantError(error: unknown): boolean {
  return error instanceof InvariantError;
}

function kinds(ready: Ready): string[] {
  return ready.events.map((e) => e.kind);
}

/**
 * A hand-driven replica group: messages queue up until delivered, persists
 * until completed; Ready outputs are collected per node.
 */
class Group {
  readonly cores = new Map<string, ReplicaCore>();
  readonly queue: PeerMessage[] = [];
  readonly pending = new Map<string, number[]>();
  readonly committed = new Map<string, LogEntry[]>();
  readonly results = new Map<string, Ready["results"]>();
  readonly reads = new Map<string, Ready["reads"]>();
  readonly events = new Map<string, string[]>();
  readonly sendSnapshot = new Map<string, string[]>();
  readonly needSnapshotFrom = new Map<string, string[]>();
  now = 0;

  constructor(
    readonly members: string[],
    recovered: Record<string, Partial<RecoveredState>> = {},
    options: Partial<CoreOptions> = {},
  ) {
    for (const id of members) {
      this.cores.set(id, makeCore(id, members, recovered[id] ?? {}, options));
      this.pending.set(id, []);
      this.committed.set(id, []);
      this.results.set(id, []);
      this.reads.set(id, []);
      this.events.set(id, []);
      this.sendSnapshot.set(id, []);
      this.needSnapshotFrom.set(id, []);
    }
  }

  core(id: string): ReplicaCore {
    return this.cores.get(id)!;
  }

  /** Steps an event into `id` and collects its Ready. */
  step(id: string, event: Parameters<ReplicaCore["step"]>[0]): Ready {
    this.core(id).step(event);
    return this.pump(id);
  }

  pump(id: string): Ready {
    const ready = this.core(id).ready();
    if (ready.persist !== undefined) this.pending.get(id)!.push(ready.persist.persistId);
    this.queue.push(...ready.messages);
    this.committed.get(id)!.push(...ready.committed);
    this.results.get(id)!.push(...ready.results);
    this.reads.get(id)!.push(...ready.reads);
    this.events.get(id)!.push(...kinds(ready));
    this.sendSnapshot.get(id)!.push(...ready.sendSnapshot.map((s) => s.to));
    this.needSnapshotFrom.get(id)!.push(...ready.needSnapshotFrom.map((s) => s.from));
    return ready;
  }

  /** Completes every persist `id` handed out so far. */
  persist(id: string): void {
    const ids = this.pending.get(id)!;
    while (ids.length > 0) this.step(id, { type: "persisted", persistId: ids.shift()! });
  }

  /** Delivers (and removes) the queued messages matching `filter`; replies they cause stay queued. */
  deliver(filter: (m: PeerMessage) => boolean = () => true): number {
    const now = this.queue.splice(0, this.queue.length);
    let delivered = 0;
    for (const message of now) {
      if (!filter(message)) {
        this.queue.push(message);
        continue;
      }
      delivered++;
      if (this.cores.has(message.to)) this.step(message.to, { type: "message", message });
    }
    return delivered;
  }

  /** Drops queued messages matching `filter`. */
  drop(filter: (m: PeerMessage) => boolean): void {
    for (let i = this.queue.length - 1; i >= 0; i--) if (filter(this.queue[i])) this.queue.splice(i, 1);
  }

  /** Persists and delivers among `among` until nothing moves (bounded). */
  settle(among: string[] = this.members): void {
    for (let round = 0; round < 200; round++) {
      for (const id of among) this.persist(id);
      const moved = this.deliver((m) => among.includes(m.to) && among.includes(m.from));
      if (moved === 0 && among.every((id) => this.pending.get(id)!.length === 0)) return;
    }
    throw new Error("group did not settle");
  }

  tick(ms: number): void {
    this.now += ms;
    for (const id of this.members) this.step(id, { type: "tick", now: this.now });
  }

  /** Makes `id` the serving leader of `epoch` with everyone reachable. */
  elect(id: string, epoch: number, among: string[] = this.members): void {
    this.step(id, { type: "campaign", epoch });
    this.settle(among);
    assert.ok(this.core(id).status().serving, `${id} should serve epoch ${epoch}`);
  }
}

// ------------------------------------------------------------------ fencing

test("a member refuses a replicate from an epoch below its promise and says which epoch it promised", () => {
  const member = makeCore("b", ["a", "b", "c"], { promisedEpoch: 5, entries: log(1, 1) });
  member.step({
    type: "message",
    message: { type: "replicate", partition: P, from: "a", to: "b", epoch: 3, prevEpoch: 1, prevIndex: 2, entries: [entry(3, 3)], commitIndex: 2, readSeq: 1 },
  });
  const ready = member.ready();
  assert.is(ready.persist, undefined, "nothing of a stale leader is persisted");
  const [reply] = ofType(ready, "replicate_reply");
  assert.equal({ ok: reply.ok, promisedEpoch: reply.promisedEpoch, to: reply.to }, { ok: false, promisedEpoch: 5, to: "a" });
  assert.ok(kinds(ready).includes("fencing_rejection"));
  assert.is(member.status().lastIndex, 2);
});

test("a member that promised an epoch refuses promises and fetches from lower epochs", () => {
  const member = makeCore("b", ["a", "b", "c"], { promisedEpoch: 7 });
  member.step({ type: "message", message: { type: "promise", partition: P, from: "a", to: "b", epoch: 6 } });
  member.step({ type: "message", message: { type: "fetch", partition: P, from: "c", to: "b", epoch: 4, fromIndex: 1, maxEntries: 10 } });
  const ready = member.ready();
  assert.is(ready.persist, undefined);
  const [promiseReply] = ofType(ready, "promise_reply");
  assert.equal([promiseReply.ok, promiseReply.promisedEpoch], [false, 7]);
  const [fetchReply] = ofType(ready, "fetch_reply");
  assert.equal([fetchReply.ok, fetchReply.promisedEpoch, fetchReply.entries.length], [false, 7, 0]);
  assert.equal(kinds(ready).filter((k) => k === "fencing_rejection").length, 2);
});

test("a member replies to a promise only after the promise is durable, reporting its durable log", () => {
  const member = makeCore("b", ["a", "b", "c"], { promisedEpoch: 1, entries: log(1, 1, 1) });
  member.step({ type: "message", message: { type: "promise", partition: P, from: "a", to: "b", epoch: 4 } });
  const first = member.ready();
  assert.is(first.persist?.promisedEpoch, 4);
  assert.equal(first.messages, [], "no reply before the promise is on disk");
  member.step({ type: "persisted", persistId: first.persist!.persistId });
  const [reply] = ofType(member.ready(), "promise_reply");
  assert.equal(
    { ok: reply.ok, epoch: reply.epoch, promisedEpoch: reply.promisedEpoch, lastEpoch: reply.lastEpoch, lastIndex: reply.lastIndex, firstIndex: reply.firstIndex },
    { ok: true, epoch: 4, promisedEpoch: 4, lastEpoch: 1, lastIndex: 3, firstIndex: 1 },
  );
});

test("a promise to a higher epoch deposes a leader: its appended proposals fail unknown", () => {
  const g = new Group(["a", "b", "c"]);
  g.elect("a", 1);
  g.step("a", { type: "propose", id: 10, proposal: { op: "put", key: "x", value: Buffer.from("1") } });
  g.step("a", { type: "message", message: { type: "promise", partition: P, from: "c", to: "a", epoch: 2 } });
  assert.equal(g.results.get("a"), [{ id: 10, failure: "unknown" }]);
  assert.is(g.core("a").status().role, "follower");
  g.step("a", { type: "propose", id: 11, proposal: { op: "put", key: "x", value: Buffer.from("2") } });
  assert.equal(g.results.get("a")!.at(-1), { id: 11, failure: "unavailable" }, "never appended: safe to retry");
});

test("a paused leader that wakes up cannot commit: the fence rejects it and its writes fail unknown", () => {
  const g = new Group(["a", "b", "c"]);
  g.elect("a", 1);
  // a is paused; ZooKeeper elects b, which recovers with c.
  g.step("b", { type: "campaign", epoch: 2 });
  g.settle(["b", "c"]);
  assert.ok(g.core("b").status().serving);
  g.drop((m) => m.to === "a");
  // a wakes up still believing it leads and accepts a write.
  g.step("a", { type: "propose", id: 1, proposal: { op: "put", key: "k", value: Buffer.from("stale") } });
  g.settle();
  assert.equal(g.results.get("a"), [{ id: 1, failure: "unknown" }]);
  assert.ok(g.events.get("a")!.includes("fenced"));
  for (const id of ["a", "b", "c"]) {
    assert.not.ok(g.committed.get(id)!.some((e) => e.value.toString() === "stale"), `${id} never commits the stale write`);
  }
});

// ------------------------------------------------------------ replication

test("a member acknowledges entries only after they are durable", () => {
  const member = makeCore("b", ["a", "b", "c"]);
  member.step({
    type: "message",
    message: { type: "replicate", partition: P, from: "a", to: "b", epoch: 1, prevEpoch: 0, prevIndex: 0, entries: log(1, 1), commitIndex: 0, readSeq: 0 },
  });
  const first = member.ready();
  assert.equal(first.persist?.entries.map((e) => e.index), [1, 2]);
  assert.is(first.persist?.promisedEpoch, 1, "the new epoch is promised in the same write");
  assert.equal(ofType(first, "replicate_reply"), [], "no ack before fsync");
  member.step({ type: "persisted", persistId: first.persist!.persistId });
  const [ack] = ofType(member.ready(), "replicate_reply");
  assert.equal([ack.ok, ack.matchIndex, ack.epoch], [true, 2, 1]);
});

test("a member drops an ack whose entries became durable after it promised a higher epoch", () => {
  const member = makeCore("b", ["a", "b", "c"]);
  member.step({
    type: "message",
    message: { type: "replicate", partition: P, from: "a", to: "b", epoch: 1, prevEpoch: 0, prevIndex: 0, entries: log(1), commitIndex: 0, readSeq: 0 },
  });
  const first = member.ready();
  member.step({ type: "message", message: { type: "promise", partition: P, from: "c", to: "b", epoch: 2 } });
  const second = member.ready();
  member.step({ type: "persisted", persistId: first.persist!.persistId });
  assert.equal(ofType(member.ready(), "replicate_reply"), [], "epoch 1 can no longer count on this member");
  member.step({ type: "persisted", persistId: second.persist!.persistId });
  const [reply] = ofType(member.ready(), "promise_reply");
  assert.equal([reply.ok, reply.lastIndex], [true, 1], "the promise reports the entry it holds");
});

test("a conflicting suffix is truncated and replaced; the truncation is persisted before the new entries", () => {
  const member = makeCore("b", ["a", "b", "c"], { promisedEpoch: 1, entries: log(1, 1, 1, 1) });
  member.step({
    type: "message",
    message: { type: "replicate", partition: P, from: "a", to: "b", epoch: 2, prevEpoch: 1, prevIndex: 2, entries: [entry(2, 3)], commitIndex: 2, readSeq: 0 },
  });
  const ready = member.ready();
  assert.is(ready.persist?.truncateAfter, 2);
  assert.equal(ready.persist?.entries.map((e) => [e.epoch, e.index]), [[2, 3]]);
  assert.equal(member.status().lastIndex, 3);
  assert.equal(ready.committed.map((e) => e.index), [1, 2], "commit = min(leader commit, verified match)");
});

test("a log mismatch is answered with a hint and the leader backs up to it", () => {
  const g = new Group(["a", "b", "c"], { a: { promisedEpoch: 1, entries: log(1, 1, 1, 1, 1) } });
  g.step("a", { type: "campaign", epoch: 2 });
  g.persist("a");
  g.deliver((m) => m.type === "promise" && m.to === "b");
  g.persist("b");
  g.deliver((m) => m.type === "promise_reply");
  // a leads with noop at 6; b has nothing: the first probe fails.
  g.persist("a");
  g.deliver((m) => m.type === "replicate" && m.to === "b");
  const [nack] = g.queue.filter((m) => m.type === "replicate_reply" && m.from === "b") as Array<Extract<PeerMessage, { type: "replicate_reply" }>>;
  assert.equal([nack.ok, nack.lastIndex], [false, 0]);
  g.settle(["a", "b"]);
  assert.is(g.core("b").status().lastIndex, 6);
  assert.is(g.core("a").status().commitIndex, 6);
});

test("a follower whose committed entry is contradicted throws instead of corrupting data", () => {
  const member = makeCore("b", ["a", "b", "c"], { promisedEpoch: 1, entries: log(1, 1) });
  member.step({
    type: "message",
    message: { type: "replicate", partition: P, from: "a", to: "b", epoch: 1, prevEpoch: 1, prevIndex: 2, entries: [], commitIndex: 2, readSeq: 0 },
  });
  member.ready();
  assert.throws(
    () =>
      member.step({
        type: "message",
        message: { type: "replicate", partition: P, from: "c", to: "b", epoch: 3, prevEpoch: 0, prevIndex: 0, entries: [entry(3, 1)], commitIndex: 0, readSeq: 0 },
      }),
    (error: unknown) => error instanceof InvariantError && /below commit/.test((error as Error).message),
  );
});

test("malformed replicate entries (gaps, epochs above the leader's) are ignored with an event", () => {
  const member = makeCore("b", ["a", "b", "c"]);
  member.step({
    type: "message",
    message: { type: "replicate", partition: P, from: "a", to: "b", epoch: 1, prevEpoch: 0, prevIndex: 0, entries: [entry(1, 1), entry(1, 3)], commitIndex: 0, readSeq: 0 },
  });
  member.step({
    type: "message",
    message: { type: "replicate", partition: P, from: "a", to: "b", epoch: 1, prevEpoch: 0, prevIndex: 0, entries: [entry(2, 1)], commitIndex: 0, readSeq: 0 },
  });
  member.step({
    type: "message",
    message: { type: "replicate", partition: "other", from: "a", to: "b", epoch: 1, prevEpoch: 0, prevIndex: 0, entries: [], commitIndex: 0, readSeq: 0 },
  });
  const ready = member.ready();
  assert.is(ready.persist, undefined);
  assert.equal(kinds(ready), ["invalid_message", "invalid_message", "invalid_message"]);
  assert.is(member.status().promisedEpoch, 0, "garbage raises no promise");
});

// ----------------------------------------------------------------- commit

test("the leader's own entries count only after its own persist", () => {
  const g = new Group(["a", "b", "c"]);
  g.elect("a", 1);
  g.step("a", { type: "propose", id: 1, proposal: { op: "put", key: "x", value: Buffer.from("1") } });
  g.deliver((m) => m.to === "b");
  g.persist("b");
  g.deliver((m) => m.from === "b" && m.to === "a");
  assert.is(g.core("a").status().commitIndex, 1, "b alone is not a majority of three");
  g.persist("a");
  assert.is(g.core("a").status().commitIndex, 2);
  assert.equal(g.results.get("a"), [{ id: 1, index: 2 }]);
});

test("commit needs a majority and an entry of the leader's own epoch (Raft figure 8)", () => {
  // a holds an uncommitted entry of epoch 2 at index 2; b and c stop at index 1.
  const g = new Group(
    ["a", "b", "c"],
    {
      a: { promisedEpoch: 2, entries: log(1, 2) },
      b: { promisedEpoch: 2, entries: log(1) },
      c: { promisedEpoch: 3, entries: [...log(1), entry(3, 2)] },
    },
    { maxBatchEntries: 1 },
  );
  g.step("a", { type: "campaign", epoch: 4 });
  g.persist("a");
  g.deliver((m) => m.type === "promise" && m.to === "b");
  g.persist("b");
  g.deliver((m) => m.type === "promise_reply" && m.from === "b");
  g.persist("a"); // a leads epoch 4 with its log: [1:e1, 2:e2, 3:noop e4]
  g.drop((m) => m.to === "c");
  // Probe with the noop fails; a backs up and sends the epoch-2 entry alone (batch of 1).
  g.deliver((m) => m.type === "replicate" && m.to === "b");
  g.deliver((m) => m.type === "replicate_reply");
  g.deliver((m) => m.type === "replicate" && m.to === "b" && m.entries.length === 1 && m.entries[0].index === 2);
  g.persist("b");
  g.deliver((m) => m.type === "replicate_reply" && m.from === "b");
  assert.is(g.core("b").status().lastIndex, 2);
  assert.is(
    g.core("a").status().commitIndex,
    0,
    "index 2 is on a majority (a, b) but is of epoch 2: committing it could be undone by c's epoch-3 log",
  );
  g.settle(["a", "b"]);
  assert.is(g.core("a").status().commitIndex, 3, "the noop of epoch 4 commits everything before it");
  assert.equal(g.committed.get("a")!.map((e) => [e.index, e.epoch]), [[1, 1], [2, 2], [3, 4]]);
});

test("followers learn the commit index from the leader and emit each committed entry once, in order", () => {
  const g = new Group(["a", "b", "c"]);
  g.elect("a", 1);
  for (let id = 1; id <= 5; id++) {
    g.step("a", { type: "propose", id, proposal: { op: "put", key: `k${id}`, value: Buffer.from(`v${id}`) } });
    g.settle();
  }
  g.tick(20); // a heartbeat carries the last commit index
  g.settle();
  for (const id of ["a", "b", "c"]) {
    assert.equal(g.committed.get(id)!.map((e) => e.index), [1, 2, 3, 4, 5, 6], `${id} applies 1..6 exactly once`);
  }
});

test("all proposals of one turn become one persist and one replicate message per follower", () => {
  const g = new Group(["a", "b", "c"]);
  g.elect("a", 1);
  for (let id = 1; id <= 100; id++) {
    g.core("a").step({ type: "propose", id, proposal: { op: "put", key: "k", value: Buffer.from(String(id)) } });
  }
  const ready = g.core("a").ready();
  assert.is(ready.persist?.entries.length, 100);
  const replicates = ofType(ready, "replicate");
  assert.equal(replicates.map((m) => [m.to, m.entries.length]), [["b", 100], ["c", 100]]);
});

test("proposals and reads before the leader's noop is committed fail unavailable at once", () => {
  const g = new Group(["a", "b", "c"]);
  g.step("a", { type: "campaign", epoch: 1 });
  g.step("a", { type: "propose", id: 1, proposal: { op: "put", key: "x", value: Buffer.from("1") } });
  g.step("a", { type: "read", id: 2 });
  assert.equal(g.results.get("a"), [{ id: 1, failure: "unavailable" }]);
  assert.equal(g.reads.get("a"), [{ id: 2, failure: "unavailable" }]);
  g.step("b", { type: "propose", id: 3, proposal: { op: "delete", key: "x", value: Buffer.alloc(0) } });
  assert.equal(g.results.get("b"), [{ id: 3, failure: "unavailable" }], "followers do not take writes");
});

test("a leader takes at most maxUncommittedEntries before failing proposals unavailable", () => {
  const g = new Group(["a", "b", "c"], {}, { maxUncommittedEntries: 3 });
  g.elect("a", 1);
  for (let id = 1; id <= 5; id++) {
    g.step("a", { type: "propose", id, proposal: { op: "put", key: "k", value: Buffer.from("v") } });
  }
  assert.equal(g.results.get("a"), [{ id: 4, failure: "unavailable" }, { id: 5, failure: "unavailable" }]);
});

// --------------------------------------------------------------- recovery

test("a candidate counts its own promise only once it is durable", () => {
  const g = new Group(["a", "b", "c"]);
  g.step("a", { type: "campaign", epoch: 1 });
  g.deliver((m) => m.type === "promise");
  g.persist("b");
  g.persist("c");
  g.deliver((m) => m.type === "promise_reply");
  assert.is(g.core("a").status().role, "candidate", "two promises, but its own is not on disk yet");
  g.persist("a");
  assert.is(g.core("a").status().role, "leader");
});

test("a new leader with a shorter log fetches the longer one before its noop", () => {
  const g = new Group(["a", "b", "c"], {
    a: { promisedEpoch: 1, entries: log(1, 1) },
    b: { promisedEpoch: 2, entries: log(1, 1, 2, 2, 2) },
    c: { promisedEpoch: 1, entries: log(1, 1) },
  });
  g.step("a", { type: "campaign", epoch: 3 });
  g.persist("a");
  g.deliver((m) => m.type === "promise" && m.to === "b");
  g.persist("b");
  g.deliver((m) => m.type === "promise_reply");
  assert.ok(g.events.get("a")!.includes("promised"));
  const fetches = g.queue.filter((m) => m.type === "fetch");
  assert.equal(fetches.map((m) => [m.to, (m as Extract<PeerMessage, { type: "fetch" }>).fromIndex]), [["b", 2]], "probe at a's last index");
  g.settle(["a", "b"]);
  const status = g.core("a").status();
  assert.equal([status.role, status.serving, status.lastIndex, status.commitIndex], ["leader", true, 6, 6]);
  assert.equal(g.committed.get("a")!.map((e) => [e.index, e.epoch]), [[1, 1], [2, 1], [3, 2], [4, 2], [5, 2], [6, 3]]);
});

test("a candidate replaces its conflicting uncommitted suffix with the best log's", () => {
  const g = new Group(["a", "b", "c"], {
    a: { promisedEpoch: 2, entries: [...log(1, 1), entry(2, 3, "put", "stale", "x")] },
    b: { promisedEpoch: 3, entries: [...log(1, 1), entry(3, 3), entry(3, 4)] },
  });
  g.step("a", { type: "campaign", epoch: 5 });
  g.settle(["a", "b"]);
  assert.ok(g.core("a").status().serving);
  assert.equal(g.committed.get("a")!.map((e) => [e.index, e.epoch]), [[1, 1], [2, 1], [3, 3], [4, 3], [5, 5]]);
  assert.not.ok(g.committed.get("a")!.some((e) => e.key === "stale"));
});

test("a candidate whose source compacted past what it needs asks for a snapshot, then fetches the rest", () => {
  const g = new Group(["a", "b", "c"], {
    a: { promisedEpoch: 1, entries: log(1) },
    b: { promisedEpoch: 1, entries: log(1, 1, 1, 1, 1, 1), snapshotIndex: 0 },
  });
  g.step("b", { type: "compacted", index: 0, epoch: 0 }); // nothing applied yet: no-op
  // b applied and compacted through 4 in an earlier life: restart it that way.
  g.cores.set("b", makeCore("b", ["a", "b", "c"], { promisedEpoch: 1, entries: log(1, 1, 1, 1, 1, 1).slice(4), snapshotIndex: 4, snapshotEpoch: 1 }));
  g.step("a", { type: "campaign", epoch: 2 });
  g.settle(["a", "b"]);
  assert.equal(g.needSnapshotFrom.get("a"), ["b"]);
  assert.is(g.core("a").status().role, "candidate");
  // The host streams b's snapshot (through 4) and installs it.
  g.step("a", { type: "snapshot_installed", index: 4, epoch: 1 });
  g.settle(["a", "b"]);
  const status = g.core("a").status();
  assert.equal([status.serving, status.snapshotIndex, status.lastIndex, status.commitIndex], [true, 4, 7, 7]);
  assert.equal(g.committed.get("a")!.map((e) => e.index), [5, 6, 7], "the store is the snapshot, then 5..7");
});

test("the campaign of an epoch already promised to another candidate is refused", () => {
  const member = makeCore("b", ["a", "b", "c"]);
  member.step({ type: "message", message: { type: "promise", partition: P, from: "a", to: "b", epoch: 3 } });
  member.step({ type: "campaign", epoch: 3 });
  member.step({ type: "campaign", epoch: 2 });
  const ready = member.ready();
  assert.equal(kinds(ready), ["campaign_refused", "campaign_refused"]);
  assert.is(member.status().role, "follower");
});

test("leading the same epoch again after a step-down keeps serving reads", () => {
  const g = new Group(["a", "b", "c"]);
  g.elect("a", 1);
  g.step("a", { type: "read", id: 1 });
  g.settle();
  g.step("a", { type: "step_down" });
  g.elect("a", 1); // ZooKeeper session survived: still the lowest candidate
  g.step("a", { type: "read", id: 2 });
  g.settle();
  assert.equal(g.reads.get("a"), [{ id: 1 }, { id: 2 }]);
});

test("quorumSilenceMs: a leader hearing from a majority stays at 0; cut off from every replica it grows; a follower has none", () => {
  const g = new Group(["a", "b", "c"]);
  g.elect("a", 1);
  assert.is(g.core("b").quorumSilenceMs(), undefined, "not leading");
  for (let i = 0; i < 10; i++) {
    g.tick(10);
    g.settle();
  }
  assert.ok(g.core("a").quorumSilenceMs()! <= 10, `heard from b and c: ${g.core("a").quorumSilenceMs()}`);
  // c is gone, b still answers: b and a are a majority.
  for (let i = 0; i < 10; i++) {
    g.tick(10);
    g.drop((m) => m.from === "c" || m.to === "c");
    g.settle(["a", "b"]);
  }
  assert.ok(g.core("a").quorumSilenceMs()! <= 10, "b alone with a is a majority");
  // Now nobody answers: silence grows with time.
  const before = g.now;
  for (let i = 0; i < 10; i++) {
    g.tick(10);
    g.drop(() => true);
  }
  assert.ok(g.core("a").quorumSilenceMs()! >= g.now - before, `silence ${g.core("a").quorumSilenceMs()} after ${g.now - before} ms`);
});

// ------------------------------------------------------------------ reads

test("reads wait for a heartbeat round acknowledged by a majority; one round serves every waiting read", () => {
  const g = new Group(["a", "b", "c"]);
  g.elect("a", 1);
  g.core("a").step({ type: "read", id: 1 });
  g.core("a").step({ type: "read", id: 2 });
  const ready = g.pump("a");
  assert.equal(ready.reads, [], "not before the round");
  const rounds = new Set(ofType(ready, "replicate").map((m) => m.readSeq));
  assert.is(rounds.size, 1);
  g.deliver((m) => m.to === "b");
  g.persist("b");
  g.deliver((m) => m.from === "b");
  assert.equal(g.reads.get("a"), [{ id: 1 }, { id: 2 }], "a and b are a majority");
});

test("an acknowledgement of an older round does not release a newer read", () => {
  const g = new Group(["a", "b", "c"]);
  g.elect("a", 1);
  g.step("a", { type: "read", id: 1 });
  g.deliver((m) => m.to === "b"); // round 1 reaches b...
  g.step("a", { type: "read", id: 2 }); // ...read 2 arrives: it needs round 2
  g.deliver((m) => m.from === "b" && m.type === "replicate_reply" && m.readSeq === 1);
  assert.equal(g.reads.get("a"), [{ id: 1 }]);
  g.settle();
  assert.equal(g.reads.get("a"), [{ id: 1 }, { id: 2 }]);
});

test("pending reads fail unavailable when the leader steps down", () => {
  const g = new Group(["a", "b", "c"]);
  g.elect("a", 1);
  g.step("a", { type: "read", id: 1 });
  g.step("a", { type: "step_down" });
  assert.equal(g.reads.get("a"), [{ id: 1, failure: "unavailable" }]);
});

test("a single-member group serves reads and commits on its own fsync", () => {
  const g = new Group(["solo"]);
  g.elect("solo", 1);
  g.step("solo", { type: "propose", id: 1, proposal: { op: "put", key: "k", value: Buffer.from("v") } });
  g.step("solo", { type: "read", id: 2 });
  assert.equal(g.reads.get("solo"), [{ id: 2 }]);
  assert.equal(g.results.get("solo"), []);
  g.persist("solo");
  assert.equal(g.results.get("solo"), [{ id: 1, index: 2 }]);
});

// -------------------------------------------------------------- snapshots

test("a leader sends a snapshot to a member behind its log start; the member acks on installation", () => {
  const g = new Group(["a", "b", "c"]);
  g.elect("a", 1, ["a", "c"]);
  for (let id = 1; id <= 4; id++) {
    g.step("a", { type: "propose", id, proposal: { op: "put", key: `k${id}`, value: Buffer.from("v") } });
    g.settle(["a", "c"]);
  }
  g.step("a", { type: "compacted", index: 4, epoch: 1 });
  g.drop((m) => m.to === "b" || m.from === "b");
  g.tick(20);
  g.settle(); // b answers the heartbeat; a finds it needs entries before its log start
  assert.equal(g.sendSnapshot.get("a"), ["b"]);
  g.step("b", { type: "snapshot_installed", index: 4, epoch: 1 });
  const [ack] = g.queue.filter((m) => m.type === "replicate_reply" && m.from === "b") as Array<Extract<PeerMessage, { type: "replicate_reply" }>>;
  assert.equal([ack.ok, ack.matchIndex], [true, 4], "acked from the snapshot at once");
  g.settle();
  g.tick(20);
  g.settle();
  assert.equal(g.core("b").status().lastIndex, 5);
  assert.equal(g.committed.get("b")!.map((e) => e.index), [5], "the store was the snapshot; then 5");
  assert.equal(g.core("a").progress().find((p) => p.id === "b")?.matchIndex, 5);
});

test("a snapshot is wanted only beyond the commit index, and when the log lacks its last entry", () => {
  const member = makeCore("b", ["a", "b", "c"], { promisedEpoch: 2, entries: log(1, 1, 2, 2), snapshotIndex: 0 });
  member.step({
    type: "message",
    message: { type: "replicate", partition: P, from: "a", to: "b", epoch: 2, prevEpoch: 1, prevIndex: 2, entries: [], commitIndex: 2, readSeq: 0 },
  });
  member.ready();
  assert.is(member.status().commitIndex, 2);
  assert.not.ok(member.wantsSnapshot(2, 1), "at the commit index: useless");
  assert.not.ok(member.wantsSnapshot(4, 2), "the log holds (4, e2): installing would only throw it away");
  assert.ok(member.wantsSnapshot(4, 3), "the log's entry 4 is stale");
  assert.ok(member.wantsSnapshot(9, 3), "beyond the log");
});

test("installing a snapshot resets the log; it continues after the snapshot without any truncation", () => {
  const member = makeCore("b", ["a", "b", "c"], { promisedEpoch: 2, entries: log(1, 1, 2, 2) });
  member.step({ type: "snapshot_installed", index: 6, epoch: 3 });
  const ready = member.ready();
  assert.equal(
    { truncateAfter: ready.persist?.truncateAfter, entries: ready.persist?.entries.length },
    { truncateAfter: undefined, entries: 0 },
    "the host's installation already reset the log",
  );
  const status = member.status();
  assert.equal([status.snapshotIndex, status.lastIndex, status.commitIndex, status.durableIndex], [6, 6, 6, 6]);
  member.step({
    type: "message",
    message: { type: "replicate", partition: P, from: "a", to: "b", epoch: 3, prevEpoch: 3, prevIndex: 6, entries: [entry(3, 7)], commitIndex: 7, readSeq: 0 },
  });
  const next = member.ready();
  assert.equal([next.persist?.truncateAfter, next.persist?.entries.map((e) => e.index)], [undefined, [7]]);
  assert.equal(next.committed.map((e) => e.index), [7]);
});

test("a snapshot of a later epoch fences every lower one: a candidate steps down, a stale leader is refused", () => {
  const g = new Group(["a", "b", "c"]);
  g.step("a", { type: "campaign", epoch: 3 });
  g.step("a", { type: "snapshot_installed", index: 5, epoch: 4 });
  assert.equal([g.core("a").status().role, g.core("a").status().promisedEpoch], ["follower", 4]);
  assert.ok(g.events.get("a")!.includes("step_down"));
  assert.is(g.pending.get("a")!.length, 2, "the promise of epoch 4 is persisted");
  g.step("a", {
    type: "message",
    message: { type: "replicate", partition: P, from: "b", to: "a", epoch: 3, prevEpoch: 4, prevIndex: 5, entries: [entry(3, 6)], commitIndex: 5, readSeq: 0 },
  });
  assert.ok(g.events.get("a")!.includes("fencing_rejection"));
  assert.is(g.core("a").status().lastIndex, 5);
});

test("a restarted member that declines a snapshot it does not need is recognized by the leader's probing heartbeat", () => {
  const members = ["a", "b", "c"];
  const g = new Group(members, { a: { promisedEpoch: 1, entries: log(1, 1, 1, 1) }, b: { promisedEpoch: 1, entries: log(1, 1, 1, 1) } });
  g.elect("a", 2, ["a", "c"]);
  g.drop((m) => m.to === "b" || m.from === "b");
  // b had received the noop (2, 5) before it restarted: it knows nothing of a's progress.
  g.cores.set("b", makeCore("b", members, { promisedEpoch: 2, entries: [...log(1, 1, 1, 1), entry(2, 5, "noop")] }));
  g.step("a", { type: "compacted", index: 5, epoch: 2 });
  for (let i = 0; i < 30 && g.sendSnapshot.get("a")!.length === 0; i++) {
    g.tick(10);
    g.settle();
  }
  assert.equal(g.sendSnapshot.get("a"), ["b"], "a cannot send entry 5 after compacting 4");
  assert.not.ok(g.core("b").wantsSnapshot(5, 2), "b holds (5, e2): it declines");
  for (let i = 0; i < 30; i++) {
    g.tick(10);
    g.settle();
  }
  assert.equal(g.sendSnapshot.get("a"), ["b"], "one snapshot request, then a probe settles it");
  assert.is(g.core("a").progress().find((p) => p.id === "b")!.matchIndex, 5);
});

test("a snapshot installed over a matching suffix (a host that did not ask) puts the suffix back on disk", () => {
  const member = makeCore("b", ["a", "b", "c"], { promisedEpoch: 2, entries: log(1, 1, 2, 2) });
  member.step({ type: "snapshot_installed", index: 2, epoch: 1 });
  const ready = member.ready();
  assert.equal(ready.persist?.entries.map((e) => e.index), [3, 4]);
  assert.is(member.status().durableIndex, 2, "not durable again until that write is");
  member.step({ type: "persisted", persistId: ready.persist!.persistId });
  assert.is(member.status().durableIndex, 4);
});

test("compaction forgets entries through the index, and never beyond what was applied", () => {
  const core = makeCore("a", ["a"], { promisedEpoch: 1, entries: log(1, 1, 1) });
  assert.throws(() => core.step({ type: "compacted", index: 2, epoch: 1 }), isInvariantError);
  const g = new Group(["a"], { a: { promisedEpoch: 1, entries: log(1, 1, 1) } });
  g.elect("a", 2);
  g.step("a", { type: "compacted", index: 3, epoch: 1 });
  assert.equal([g.core("a").status().snapshotIndex, g.core("a").entry(3), g.core("a").entry(4)?.op], [3, undefined, "noop"]);
});

test("a restarted member emits committed entries after its snapshot again, as it learns them", () => {
  const g = new Group(["a", "b"], {
    a: { promisedEpoch: 1, entries: log(1, 1, 1) },
    b: { promisedEpoch: 1, entries: log(1, 1, 1).slice(1), snapshotIndex: 1, snapshotEpoch: 1 },
  });
  g.elect("a", 2);
  g.tick(20); // the next heartbeat tells b the commit index
  g.settle();
  assert.equal(g.committed.get("b")!.map((e) => e.index), [2, 3, 4]);
});

test("a recovered log tail staler than the snapshot is dropped, durably", () => {
  // Crash after installing snapshot (5, e3) and before truncating the old tail.
  const core = makeCore("b", ["a", "b", "c"], { promisedEpoch: 3, entries: [entry(2, 6), entry(2, 7)], snapshotIndex: 5, snapshotEpoch: 3 });
  const ready = core.ready();
  assert.is(ready.persist?.truncateAfter, 5);
  assert.equal(kinds(ready), ["stale_tail_dropped"]);
  assert.is(core.status().lastIndex, 5);
});

test("the recovered state must chain: a gap is refused loudly", () => {
  assert.throws(() => makeCore("a", ["a"], { promisedEpoch: 1, entries: [entry(1, 1), entry(1, 3)] }), isInvariantError);
  assert.throws(() => makeCore("a", ["a"], { promisedEpoch: 1, entries: [entry(2, 1)] }), isInvariantError);
  assert.throws(() => makeCore("z", ["a"]), isInvariantError);
});

test("persisted ids that were never handed out are a host bug", () => {
  const core = makeCore("a", ["a"]);
  assert.throws(() => core.step({ type: "persisted", persistId: 1 }), isInvariantError);
});

test.run();
