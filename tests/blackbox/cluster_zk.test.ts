/**
 * src/cluster against a real ZooKeeper: registration and barrier, ring
 * agreement, elections and failover, leader publication, the session lease
 * under a frozen or restarted ZooKeeper, expiry of a paused process, and
 * pending partitions. One server for the file; a unique root per test.
 */

import { execa, type ResultPromise } from "execa";
import { createInterface } from "node:readline";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { joinCluster } from "../../src/cluster/mod.ts";
import type { Cluster, LeaderInfo, NodeInfo, RingView } from "../../src/cluster/mod.ts";
import { freePort, startZooKeeper, type ZooKeeperServer } from "../support/zookeeper.ts";

const SESSION_TIMEOUT_MS = 2000;
/** Default wait for a condition. */
const WAIT_MS = 8000;

let zk: ZooKeeperServer;
let rootCounter = 0;
const started: Member[] = [];
const children: Child[] = [];

function uniqueRoot(name: string): string {
  rootCounter += 1;
  return `/t${process.pid}_${rootCounter}_${name}`;
}

function now(): number {
  return performance.now();
}

/** Polls `condition` until true; rejects naming `what` after `timeoutMs`. Returns the ms it took. */
async function until(what: string, condition: () => boolean, timeoutMs = WAIT_MS): Promise<number> {
  const start = now();
  while (!condition()) {
    if (now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return now() - start;
}

/** Like {@linkcode until} for a condition that needs a round trip. */
async function untilAsync(what: string, condition: () => Promise<boolean>, timeoutMs = WAIT_MS): Promise<void> {
  const start = now();
  while (!(await condition())) {
    if (now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** An in-process cluster member that records everything and, like a node, publishes when it becomes candidate. */
class Member {
  readonly id: string;
  cluster!: Cluster;
  readyDone = false;
  nodes = new Map<string, NodeInfo>();
  ring?: RingView;
  readonly leaders = new Map<string, LeaderInfo | undefined>();
  readonly candidate = new Map<string, number | undefined>();
  readonly serving = new Map<string, number>();
  readonly sessions: { state: string; at: number }[] = [];
  readonly candidateEvents: { partition: string; epoch: number | undefined; at: number }[] = [];
  readonly logs: { event: string; detail: Record<string, unknown>; at: number }[] = [];
  autoPublish: boolean;
  #joined: Promise<Cluster>;
  #resolveJoined!: (cluster: Cluster) => void;

  constructor(id: string, autoPublish: boolean) {
    this.id = id;
    this.autoPublish = autoPublish;
    this.#joined = new Promise((resolve) => {
      this.#resolveJoined = resolve;
    });
  }

  static async join(root: string, id: string, partitions: string[], options: { expectNodes?: number; autoPublish?: boolean } = {}) {
    const member = new Member(id, options.autoPublish ?? true);
    started.push(member);
    member.cluster = await joinCluster({
      connect: zk.connect,
      node: { id, host: "127.0.0.1", port: 17000 + Number(id.replace(/\D/g, "") || 0), partitions },
      sessionTimeoutMs: SESSION_TIMEOUT_MS,
      expectNodes: options.expectNodes ?? 1,
      root,
    }, {
      onNodes: (nodes) => {
        member.nodes = nodes;
      },
      onRing: (ring) => {
        member.ring = ring;
      },
      onCandidate: (partition, state) => member.#onCandidate(partition, state?.epoch),
      onLeader: (partition, leader) => {
        member.leaders.set(partition, leader);
      },
      onSession: (state) => {
        member.sessions.push({ state, at: now() });
      },
      log: (event, detail) => {
        member.logs.push({ event, detail, at: now() });
      },
    });
    member.#resolveJoined(member.cluster);
    member.cluster.ready.then(() => {
      member.readyDone = true;
    }, () => {});
    return member;
  }

  #onCandidate(partition: string, epoch: number | undefined): void {
    this.candidate.set(partition, epoch);
    this.candidateEvents.push({ partition, epoch, at: now() });
    if (epoch === undefined) {
      this.serving.delete(partition);
      return;
    }
    if (!this.autoPublish) return;
    void this.#joined.then((cluster) => cluster.publishLeader(partition, epoch)).then((ok) => {
      if (ok && this.candidate.get(partition) === epoch) this.serving.set(partition, epoch);
    });
  }

  lastSession(): string | undefined {
    return this.sessions.at(-1)?.state;
  }

  async close(): Promise<void> {
    await this.cluster.close();
  }
}

/** Exactly one member serves `partition`, and every member's onLeader names it with that epoch. */
function oneAgreedLeader(members: Member[], partition: string): boolean {
  const servers = members.filter((m) => m.serving.has(partition));
  if (servers.length !== 1) return false;
  const epoch = servers[0].serving.get(partition);
  return members.every((m) => {
    const leader = m.leaders.get(partition);
    return leader !== undefined && leader.id === servers[0].id && leader.epoch === epoch;
  });
}

function servingMember(members: Member[], partition: string): Member {
  const servers = members.filter((m) => m.serving.has(partition));
  assert.is(servers.length, 1, `one member serves ${partition}`);
  return servers[0];
}

/** A cluster member in its own process, reporting its callbacks as JSON lines. */
interface Child {
  id: string;
  pid: number;
  process: ResultPromise;
  lines: { at: number; ev: string; [key: string]: unknown }[];
}

const CHILD_SCRIPT = `
const { joinCluster } = await import(process.env.RINGKV_CLUSTER_MODULE);
const config = JSON.parse(process.env.RINGKV_CHILD_CONFIG);
const out = (line) => process.stdout.write(JSON.stringify(line) + "\\n");
let resolveJoined;
const joined = new Promise((resolve) => { resolveJoined = resolve; });
const cluster = await joinCluster(config, {
  onNodes: () => {},
  onRing: () => {},
  onCandidate: (p, state) => {
    out({ ev: "candidate", p, epoch: state?.epoch ?? null });
    if (state) joined.then((c) => c.publishLeader(p, state.epoch)).then((ok) => out({ ev: "published", p, epoch: state.epoch, ok }));
  },
  onLeader: (p, leader) => out({ ev: "leader", p, leader: leader ?? null }),
  onSession: (state) => out({ ev: "session", state }),
  log: (event, detail) => { if (event === "registered") out({ ev: "registered", sessionId: detail.sessionId }); },
});
resolveJoined(cluster);
out({ ev: "joined" });
`;

function clusterModuleUrl(): string {
  // Compiled tests import the compiled module; a TS-aware runner the source.
  const extension = import.meta.url.endsWith(".ts") ? "ts" : "js";
  return new URL(`../../src/cluster/mod.${extension}`, import.meta.url).href;
}

function spawnChild(root: string, id: string, partitions: string[], expectNodes: number): Child {
  const config = {
    connect: zk.connect,
    node: { id, host: "127.0.0.1", port: 18000 + Number(id.replace(/\D/g, "") || 0), partitions },
    sessionTimeoutMs: SESSION_TIMEOUT_MS,
    expectNodes,
    root,
  };
  const subprocess = execa("node", ["--input-type=module", "-e", CHILD_SCRIPT], {
    env: { RINGKV_CLUSTER_MODULE: clusterModuleUrl(), RINGKV_CHILD_CONFIG: JSON.stringify(config) },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "inherit",
    reject: false,
    cleanup: true,
  });
  if (subprocess.pid === undefined) throw new Error("child did not start");
  const child: Child = { id, pid: subprocess.pid, process: subprocess, lines: [] };
  createInterface({ input: subprocess.stdout! }).on("line", (line) => {
    child.lines.push({ at: now(), ...JSON.parse(line) });
  });
  children.push(child);
  return child;
}

function lastLine(child: Child, ev: string, filter: (line: Child["lines"][number]) => boolean = () => true) {
  return child.lines.filter((line) => line.ev === ev && filter(line)).at(-1);
}

async function killChild(child: Child, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
  try {
    process.kill(child.pid, signal);
  } catch {
    // Already gone.
  }
  if (signal === "SIGKILL") await child.process;
}

test.before(async () => {
  zk = await startZooKeeper({ tickTime: 200 });
});

test.after.each(async () => {
  // A failed test must not leave members or children running into the next one.
  for (const member of started.splice(0)) await member.close().catch(() => {});
  for (const child of children.splice(0)) await killChild(child);
});

test.after(async () => {
  await zk.stop();
});

test("barrier: nobody is ready before the third node registers; then all agree on one ring", async () => {
  const root = uniqueRoot("barrier");
  const n1 = await Member.join(root, "n1", ["p1", "p2"], { expectNodes: 3 });
  const n2 = await Member.join(root, "n2", ["p1", "p2"], { expectNodes: 3 });
  await until("n1 and n2 see each other registered", () => n1.nodes.size === 2 && n2.nodes.size === 2);
  // Both have seen the registrations the barrier counts, and still wait.
  assert.not.ok(n1.readyDone || n2.readyDone, "ready before the third node");
  assert.is(n1.ring, undefined, "no ring before the barrier");
  const n3 = await Member.join(root, "n3", ["p1", "p2"], { expectNodes: 3 });
  await until("all three ready", () => [n1, n2, n3].every((m) => m.readyDone));
  await until("all three see the ring", () => [n1, n2, n3].every((m) => m.ring !== undefined));
  for (const member of [n1, n2, n3]) {
    assert.equal([...member.ring!.partitions], [["p1", ["n1", "n2", "n3"]], ["p2", ["n1", "n2", "n3"]]]);
    assert.equal(member.ring!.pending, []);
    assert.is(member.ring!.version, 1);
    assert.equal([...member.nodes.keys()].sort(), ["n1", "n2", "n3"]);
  }
  const created = [n1, n2, n3].flatMap((m) => m.logs.filter((l) => l.event === "ring_created"));
  assert.is(created.length, 1, "exactly one node created the ring");
});

test("a cluster started together spreads leadership: each node first leads its preferred partition", async () => {
  const root = uniqueRoot("spread");
  const partitions = ["p1", "p2", "p3"];
  const members = [
    await Member.join(root, "n1", partitions, { expectNodes: 3 }),
    await Member.join(root, "n2", partitions, { expectNodes: 3 }),
    await Member.join(root, "n3", partitions, { expectNodes: 3 }),
  ];
  for (const p of partitions) await until(`one agreed leader of ${p}`, () => oneAgreedLeader(members, p));
  assert.equal(partitions.map((p) => servingMember(members, p).id), ["n1", "n2", "n3"]);
  const deferred = members.flatMap((m) => m.logs.filter((l) => l.event === "candidate_deferred"));
  assert.ok(deferred.length > 0, "non-preferred candidates waited");
});

test("election: the lowest leads; closing its session promotes only its watcher, with a higher epoch", async () => {
  const root = uniqueRoot("election");
  const members = [
    await Member.join(root, "n1", ["p1"], { expectNodes: 3 }),
    await Member.join(root, "n2", ["p1"], { expectNodes: 3 }),
    await Member.join(root, "n3", ["p1"], { expectNodes: 3 }),
  ];
  await until("one agreed leader of p1", () => oneAgreedLeader(members, "p1"));
  // The preferred leader (n1) got a head start; the others stand shortly after.
  await untilAsync("all three stand", async () => (await members[0].cluster.candidates("p1")).length === 3);
  const order = await members[0].cluster.candidates("p1");
  assert.is(order[0].id, "n1", "p1's preferred leader stood first");
  const byId = new Map(members.map((m) => [m.id, m]));
  const [first, second, third] = order.map((c) => byId.get(c.id)!);
  assert.ok(order[0].epoch < order[1].epoch && order[1].epoch < order[2].epoch, "epochs follow creation order");
  assert.is(servingMember(members, "p1"), first, "the lowest candidate leads");
  assert.is(first.serving.get("p1"), order[0].epoch);
  assert.is(second.candidateEvents.length + third.candidateEvents.length, 0, "the others were never candidates");

  const thirdWatchesBefore = third.logs.filter((l) => l.event === "watch_fired" && String(l.detail.task).startsWith("election:")).length;
  const thirdChecksBefore = third.logs.filter((l) => l.event === "election_check").length;
  const start = now();
  await first.close();
  const remaining = [second, third];
  const tookCandidate = await until("the second candidate takes over", () => second.candidate.get("p1") !== undefined);
  await until("one agreed leader after the close", () => oneAgreedLeader(remaining, "p1"));
  const tookAll = now() - start;
  assert.is(second.serving.get("p1"), order[1].epoch);
  assert.ok(order[1].epoch > order[0].epoch);
  const thirdWatchesAfter = third.logs.filter((l) => l.event === "watch_fired" && String(l.detail.task).startsWith("election:")).length;
  const thirdChecksAfter = third.logs.filter((l) => l.event === "election_check").length;
  assert.is(thirdWatchesAfter, thirdWatchesBefore, "the third candidate's watch did not fire (no herd)");
  assert.is(thirdChecksAfter, thirdChecksBefore, "the third candidate did not even re-check");
  assert.is(third.candidateEvents.length, 0);
  console.log(`  failover after a closed session: candidate in ${tookCandidate.toFixed(0)} ms, agreed leader in ${tookAll.toFixed(0)} ms`);
});

test("leader znode: publish and retract are seen by all; stale or foreign epochs are refused; withdraw hands over", async () => {
  const root = uniqueRoot("publish");
  const members = [
    await Member.join(root, "n1", ["p1"], { expectNodes: 3, autoPublish: false }),
    await Member.join(root, "n2", ["p1"], { expectNodes: 3, autoPublish: false }),
    await Member.join(root, "n3", ["p1"], { expectNodes: 3, autoPublish: false }),
  ];
  await until("a candidate for p1", () => members.some((m) => m.candidate.get("p1") !== undefined));
  await untilAsync("all three stand", async () => (await members[0].cluster.candidates("p1")).length === 3);
  await until("everyone has read the (absent) leader", () => members.every((m) => m.leaders.has("p1")));
  const leader = members.find((m) => m.candidate.get("p1") !== undefined)!;
  const others = members.filter((m) => m !== leader);
  const epoch = leader.candidate.get("p1")!;
  assert.ok(members.every((m) => m.leaders.get("p1") === undefined), "nobody published yet");
  const order = await leader.cluster.candidates("p1");
  const follower = others[0];
  const followerEpoch = order.find((c) => c.id === follower.id)!.epoch;

  assert.is(await follower.cluster.publishLeader("p1", epoch), false, "someone else's epoch");
  assert.is(await follower.cluster.publishLeader("p1", followerEpoch), false, "own epoch but not the lowest");
  assert.is(await leader.cluster.publishLeader("p1", epoch - 1), false, "stale epoch");
  assert.is(await leader.cluster.publishLeader("p1", epoch + 1), false, "future epoch");
  assert.is(await leader.cluster.publishLeader("nope", epoch), false, "not a member");
  assert.ok(members.every((m) => m.leaders.get("p1") === undefined), "refusals wrote nothing");

  assert.is(await leader.cluster.publishLeader("p1", epoch), true);
  await until("everyone sees the published leader", () =>
    members.every((m) => m.leaders.get("p1")?.id === leader.id && m.leaders.get("p1")?.epoch === epoch));
  assert.is(members[0].leaders.get("p1")!.address, `127.0.0.1:${17000 + Number(leader.id.slice(1))}`);
  assert.is(await leader.cluster.publishLeader("p1", epoch), true, "publishing again is idempotent");

  await leader.cluster.retractLeader("p1");
  await until("everyone sees the retraction", () => members.every((m) => m.leaders.has("p1") && m.leaders.get("p1") === undefined));

  // Graceful handover: the published leader withdraws (told to stop at once;
  // its leader znode and its candidate go in one write), the next candidate takes over.
  assert.is(await leader.cluster.publishLeader("p1", epoch), true);
  await until("everyone sees the leader again", () => members.every((m) => m.leaders.get("p1")?.id === leader.id));
  await leader.cluster.withdraw("p1");
  assert.is(leader.candidate.get("p1"), undefined);
  assert.not.ok((await leader.cluster.candidates("p1")).some((c) => c.id === leader.id), "its candidate is gone");
  await until("everyone sees the leader znode gone", () => members.every((m) => m.leaders.has("p1") && m.leaders.get("p1") === undefined));
  const next = members.find((m) => m.id === order[1].id)!;
  await until("the next candidate is told", () => next.candidate.get("p1") !== undefined);
  assert.is(next.candidate.get("p1"), order[1].epoch);
  await leader.cluster.rejoin("p1");
  const after = await leader.cluster.candidates("p1");
  assert.is(after.at(-1)!.id, leader.id, "a rejoined candidate queues at the end");
  assert.ok(after.at(-1)!.epoch > order[2].epoch, "with a new, higher epoch");
  assert.is(leader.candidate.get("p1"), undefined);
});

test("a SIGKILLed leader process: the next candidate leads after about one session timeout", async () => {
  const root = uniqueRoot("sigkill");
  const kids = [spawnChild(root, "n1", ["p1"], 3), spawnChild(root, "n2", ["p1"], 3), spawnChild(root, "n3", ["p1"], 3)];
  const observer = await Member.join(root, "n9", [], { expectNodes: 3 });
  await until("a child publishes itself as leader of p1", () =>
    kids.some((k) => lastLine(k, "published", (l) => l.ok === true) !== undefined) && observer.leaders.get("p1") !== undefined, 15_000);
  const before = observer.leaders.get("p1")!;
  const victim = kids.find((k) => k.id === before.id)!;
  const start = now();
  await killChild(victim);
  await until("the observer sees a new leader", () => {
    const leader = observer.leaders.get("p1");
    return leader !== undefined && leader.id !== before.id;
  }, 3 * SESSION_TIMEOUT_MS + 2000);
  const tookLeader = now() - start;
  const after = observer.leaders.get("p1")!;
  assert.ok(after.epoch > before.epoch, `epoch ${after.epoch} > ${before.epoch}`);
  const successor = kids.find((k) => k.id === after.id)!;
  const candidateLine = lastLine(successor, "candidate", (l) => l.epoch === after.epoch)!;
  const tookCandidate = candidateLine.at - start;
  // The session must really time out first (no early takeover), and not much later than that.
  assert.ok(tookCandidate > SESSION_TIMEOUT_MS * 0.5, `took over only after the session could expire (${tookCandidate.toFixed(0)} ms)`);
  assert.ok(tookLeader < SESSION_TIMEOUT_MS + 1500, `failover within timeout + 1.5 s (${tookLeader.toFixed(0)} ms)`);
  const others = kids.filter((k) => k !== victim && k !== successor);
  assert.is(lastLine(others[0], "candidate"), undefined, "the third child never became candidate");
  console.log(`  failover after SIGKILL (session ${SESSION_TIMEOUT_MS} ms): successor candidate at ${tookCandidate.toFixed(0)} ms, observer sees new leader at ${tookLeader.toFixed(0)} ms`);
});

test("ZooKeeper SIGSTOPped: everyone hits the deadline and stops leading within the session timeout; resumed, one leader each", async () => {
  const root = uniqueRoot("pause");
  const members = [
    await Member.join(root, "n1", ["p1", "p2"], { expectNodes: 3 }),
    await Member.join(root, "n2", ["p1", "p2"], { expectNodes: 3 }),
    await Member.join(root, "n3", ["p1", "p2"], { expectNodes: 3 }),
  ];
  await until("one leader per partition", () => oneAgreedLeader(members, "p1") && oneAgreedLeader(members, "p2"));
  const leader = servingMember(members, "p1");
  const start = now();
  zk.pause();
  try {
    await until("everyone reports the deadline", () => members.every((m) => m.sessions.some((s) => s.state === "deadline" && s.at > start)), 2 * SESSION_TIMEOUT_MS);
  } finally {
    zk.resume();
  }
  for (const member of members) {
    const deadline = member.sessions.find((s) => s.state === "deadline" && s.at > start)!;
    const took = deadline.at - start;
    assert.ok(took <= SESSION_TIMEOUT_MS, `${member.id}: deadline ${took.toFixed(0)} ms after the freeze, within the session timeout`);
    assert.ok(took >= 300, `${member.id}: not spuriously early (${took.toFixed(0)} ms)`);
  }
  const stop = leader.candidateEvents.find((e) => e.partition === "p1" && e.epoch === undefined && e.at > start);
  assert.ok(stop !== undefined, "the leader was told to stop leading p1");
  assert.is(leader.serving.size, 0, "nobody serves without a lease");
  const took = leader.sessions.find((s) => s.state === "deadline" && s.at > start)!.at - start;
  console.log(`  deadline after a ZooKeeper freeze: leader stopped ${took.toFixed(0)} ms after SIGSTOP (lease ${SESSION_TIMEOUT_MS - 500} ms)`);
  await until("after resume: one leader per partition again", () => oneAgreedLeader(members, "p1") && oneAgreedLeader(members, "p2"));
  await until("everyone connected", () => members.every((m) => m.lastSession() === "connected"));
});

test("a retract asked for before ZooKeeper came back does not remove the publication of the leadership that followed", async () => {
  // What a node does on a ZooKeeper freeze: its replica steps down at the
  // deadline and asks to retract; the request fails while ZooKeeper is away
  // and is retried. When ZooKeeper is back, the same session leads again
  // (same candidate, same epoch) and publishes; the retry must not delete that.
  const root = uniqueRoot("stale-retract");
  const members = [
    await Member.join(root, "n1", ["p1"], { expectNodes: 2 }),
    await Member.join(root, "n2", ["p1"], { expectNodes: 2 }),
  ];
  await until("one leader", () => oneAgreedLeader(members, "p1"));
  const leader = servingMember(members, "p1");
  const epoch = leader.serving.get("p1")!;
  const start = now();
  zk.pause();
  let retract: Promise<void>;
  try {
    await until("the leader is told to stop", () => leader.candidateEvents.some((e) => e.partition === "p1" && e.epoch === undefined && e.at > start), 2 * SESSION_TIMEOUT_MS);
    retract = leader.cluster.retractLeader("p1");
    await until(
      "the retract failed once (ZooKeeper away)",
      () => leader.logs.some((l) => l.at > start && l.event === "operation_retry" && l.detail.operation === "retractLeader"),
      2 * SESSION_TIMEOUT_MS,
    );
  } finally {
    zk.resume();
  }
  await until("the same session leads p1 again", () => leader.serving.get("p1") === epoch && oneAgreedLeader(members, "p1"));
  await retract;
  const events = leader.logs.filter((l) => l.at > start && l.detail.partition === "p1").map((l) => l.event);
  const published = events.lastIndexOf("leader_published");
  assert.ok(published >= 0, `published again (${events.join(",")})`);
  assert.is(events.indexOf("leader_retracted", published), -1, `nothing retracted after the new publication (${events.join(",")})`);
  const observer = members.find((m) => m !== leader)!;
  assert.equal(observer.leaders.get("p1")?.id, leader.id, "the other member still sees the leader");
});

test("ZooKeeper SIGKILLed and restarted on its data dir: sessions survive or expire, one leader per partition in the end", async () => {
  const root = uniqueRoot("restart");
  const members = [
    await Member.join(root, "n1", ["p1", "p2"], { expectNodes: 3 }),
    await Member.join(root, "n2", ["p1", "p2"], { expectNodes: 3 }),
    await Member.join(root, "n3", ["p1", "p2"], { expectNodes: 3 }),
  ];
  await until("one leader per partition", () => oneAgreedLeader(members, "p1") && oneAgreedLeader(members, "p2"));
  const sessionsBefore = members.map((m) => m.cluster.state().sessionId);
  const start = now();
  await zk.stop();
  await until("everyone noticed", () => members.every((m) => m.sessions.some((s) => (s.state === "disconnected" || s.state === "deadline") && s.at > start)));
  await zk.restart();
  await until("one leader per partition after the restart", () => oneAgreedLeader(members, "p1") && oneAgreedLeader(members, "p2"), 15_000);
  await until("everyone connected", () => members.every((m) => m.lastSession() === "connected")).catch((error) => {
    for (const m of members) console.log(m.id, JSON.stringify(m.sessions.map((s) => [s.state, Math.round(s.at - start)])), JSON.stringify(m.cluster.state()));
    for (const m of members) console.log(m.id, m.logs.filter((l) => l.at > start && !["election_check", "watch_fired"].includes(l.event)).map((l) => `${Math.round(l.at - start)} ${l.event} ${JSON.stringify(l.detail)}`).join("\n"));
    throw error;
  });
  const survived = members.filter((m, i) => m.cluster.state().sessionId === sessionsBefore[i]).length;
  const expired = members.filter((m) => m.sessions.some((s) => s.state === "expired" && s.at > start)).length;
  assert.is(survived + expired, members.length, "each session either survived or expired");
  console.log(`  ZooKeeper restart: ${survived} sessions survived, ${expired} expired; leaders agreed ${(now() - start).toFixed(0)} ms after the kill`);
});

test("a process paused past its session: on resume it stops leading first, then re-registers with a higher epoch", async () => {
  const root = uniqueRoot("expiry");
  const kid = spawnChild(root, "n1", ["p1"], 3);
  const n2 = await Member.join(root, "n2", ["p1"], { expectNodes: 3 });
  const n3 = await Member.join(root, "n3", ["p1"], { expectNodes: 3 });
  await until("p1 has a leader", () => n2.leaders.get("p1") !== undefined, 15_000);
  await untilAsync("all three are candidates", async () => (await n2.cluster.candidates("p1")).length === 3);
  // Make the child the leader: in-process leaders step aside (withdraw, rejoin at the back).
  for (let round = 0; round < 3 && n2.leaders.get("p1")?.id !== "n1"; round += 1) {
    const current = [n2, n3].find((m) => m.id === n2.leaders.get("p1")?.id);
    if (current === undefined) break;
    await current.cluster.withdraw("p1");
    await current.cluster.rejoin("p1");
    await until("a new leader is published", () => n2.leaders.get("p1")?.id !== current.id && n2.leaders.get("p1") !== undefined);
  }
  assert.is(n2.leaders.get("p1")?.id, "n1", "the child leads");
  const oldEpoch = n2.leaders.get("p1")!.epoch;
  const oldSession = lastLine(kid, "registered")!.sessionId;

  await killChild(kid, "SIGSTOP");
  const stopped = now();
  try {
    await until("the paused child's session expires (its node leaves)", () => !n2.nodes.has("n1"), 3 * SESSION_TIMEOUT_MS);
    await until("another node leads", () => n2.leaders.get("p1") !== undefined && n2.leaders.get("p1")!.id !== "n1");
  } finally {
    await killChild(kid, "SIGCONT");
  }
  const resumedAtIndex = kid.lines.length;
  const resumed = now();
  console.log(`  paused leader: replaced ${(now() - stopped).toFixed(0)} ms after SIGSTOP`);
  await until("the child re-registers with a new session", () => {
    const line = lastLine(kid, "registered");
    return line !== undefined && line.sessionId !== oldSession;
  });
  const after = kid.lines.slice(resumedAtIndex);
  assert.equal(after[0], { ...after[0], ev: "session", state: "deadline" }, "the first thing after resume is the deadline");
  const order = after.map((l) => l.ev === "session" ? l.state : l.ev);
  assert.ok(order.indexOf("expired") > 0 && order.indexOf("expired") < order.indexOf("registered"), `expired then re-registered: ${order.join(",")}`);
  await until("the child is registered again", () => n2.nodes.has("n1"));
  const candidates = await n2.cluster.candidates("p1");
  const mine = candidates.find((c) => c.id === "n1");
  assert.ok(mine !== undefined && mine.epoch > oldEpoch, `new candidate epoch ${mine?.epoch} > ${oldEpoch}`);
  assert.is(candidates.filter((c) => c.id === "n1").length, 1, "exactly one candidate of the child");
  assert.ok(now() - resumed < WAIT_MS);
});

test("a partition nobody had is pending on every node until activated, then in everyone's ring", async () => {
  const root = uniqueRoot("pending");
  const members = [
    await Member.join(root, "n1", ["p1"], { expectNodes: 2 }),
    await Member.join(root, "n2", ["p1"], { expectNodes: 2 }),
  ];
  await until("ring v1", () => members.every((m) => m.ring?.version === 1));
  const n4 = await Member.join(root, "n4", ["p8"]);
  const n5 = await Member.join(root, "n5", ["p9"]);
  const all = [...members, n4, n5];
  await until("everyone lists p8 and p9 as pending", () => all.every((m) => m.ring?.pending.join(",") === "p8,p9"));
  for (const member of all) {
    assert.equal([...member.ring!.partitions.keys()], ["p1"], "not silently added");
    assert.is(member.ring!.version, 1);
  }
  // Both activated at once: the compare-and-set makes one retry, and neither change is lost.
  await Promise.all([n4.cluster.activatePartition("p8"), n5.cluster.activatePartition("p9")]);
  await until("everyone has both in the ring", () => all.every((m) => m.ring?.version === 3 && m.ring.pending.length === 0));
  for (const member of all) {
    assert.equal([...member.ring!.partitions], [["p1", ["n1", "n2"]], ["p8", ["n4"]], ["p9", ["n5"]]]);
  }
  await n4.cluster.activatePartition("p8"); // Already active: no-op.
  await assert_rejects(() => n4.cluster.activatePartition("nope"), /not pending/);
  assert.is(members[0].ring!.version, 3);
});

test("handlers and a logger that throw cannot break the cluster layer", async () => {
  const root = uniqueRoot("throwing");
  let published: boolean | undefined;
  let resolveJoined!: (cluster: Cluster) => void;
  const joined = new Promise<Cluster>((resolve) => {
    resolveJoined = resolve;
  });
  const boom = (): never => {
    throw new Error("boom");
  };
  const cluster = await joinCluster({
    connect: zk.connect,
    node: { id: "n1", host: "127.0.0.1", port: 17001, partitions: ["p1"] },
    sessionTimeoutMs: SESSION_TIMEOUT_MS,
    root,
  }, {
    onNodes: boom,
    onRing: boom,
    onLeader: boom,
    onSession: boom,
    onCandidate: (partition, state) => {
      if (state !== undefined) {
        void joined.then((c) => c.publishLeader(partition, state.epoch)).then((ok) => {
          published = ok;
        });
      }
      boom();
    },
    log: boom,
  });
  resolveJoined(cluster);
  try {
    await cluster.ready;
    await until("published despite every handler throwing", () => published === true);
    assert.is(cluster.state().session, "connected");
  } finally {
    await cluster.close();
  }
});

test("joinCluster gives up in bounded time when ZooKeeper is unreachable, leaving nothing running", async () => {
  const port = await freePort();
  const start = now();
  await assert_rejects(() => joinCluster({
    connect: `127.0.0.1:${port}`,
    node: { id: "n1", host: "127.0.0.1", port: 17001, partitions: ["p1"] },
    startTimeoutMs: 1000,
    root: uniqueRoot("unreachable"),
  }, {
    onNodes: () => {},
    onRing: () => {},
    onCandidate: () => {},
    onLeader: () => {},
    onSession: () => {},
    log: () => {},
  }), /could not register/);
  const took = now() - start;
  assert.ok(took >= 1000 && took < 4000, `gave up after ${took.toFixed(0)} ms`);
});

async function assert_rejects(fn: () => Promise<unknown>, pattern: RegExp): Promise<void> {
  try {
    await fn();
  } catch (error) {
    assert.match(String(error), pattern);
    return;
  }
  assert.unreachable("expected a rejection");
}

test.run();
