/**
 * Failover with a real ZooKeeper and real node processes: a killed leader, a
 * paused leader that wakes up deposed, and a ZooKeeper outage.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { startTestCluster, type TestCluster } from "../support/cluster.ts";

const SESSION_MS = 2000;
/** Failover budget: the session timeout plus a generous margin for a loaded 2-core CI machine. */
const FAILOVER_BUDGET_MS = SESSION_MS + 6000;

let cluster: TestCluster;

test.before(async () => {
  cluster = await startTestCluster({ nodes: 3, partitions: 3, replicas: 3, sessionTimeoutMs: SESSION_MS });
});

test.after(async () => {
  await cluster?.stop();
});

/** Writes until one is acknowledged through `node`; returns the ms it took. */
async function writeUntilOk(node: string, key: string, value: string, budgetMs: number): Promise<number> {
  const started = Date.now();
  let last = "";
  while (Date.now() - started < budgetMs) {
    last = await cluster.send(node, `PUT ${key} ${value}`, 6000).catch((e: Error) => `(${e.message})`);
    if (last === "OK") return Date.now() - started;
    assert.match(last, /^(ERR (UNAVAILABLE|TIMEOUT)|\()/, `only UNAVAILABLE/TIMEOUT are acceptable while failing over, got ${last}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no write acknowledged through ${node} within ${budgetMs} ms (last reply: ${last})`);
}

test("SIGKILL of a leader: writes through every surviving node succeed again within the session timeout plus a margin, and nothing acknowledged is lost", async () => {
  const key = "kill-key";
  const partition = cluster.partitionOf(key);
  const leader = (await cluster.leaderOf(partition))!;
  assert.ok(leader, "the key's partition has a leader");
  const acked = new Map<string, string>();
  for (let i = 0; i < 30; i++) {
    const node = cluster.specs[i % 3].id;
    const reply = await cluster.send(node, `PUT ${key}-${i} value-${i}`);
    assert.is(reply, "OK", `write ${i} through ${node}`);
    acked.set(`${key}-${i}`, `value-${i}`);
  }
  await cluster.cluster.kill(leader, "SIGKILL");
  const survivors = cluster.others([leader]);
  for (const node of survivors) {
    const ms = await writeUntilOk(node, key, `after-${node}`, FAILOVER_BUDGET_MS);
    acked.set(key, `after-${node}`);
    console.log(`  write through ${node} acknowledged ${ms} ms after the kill (or after the previous survivor's)`);
  }
  const newLeader = await cluster.leaderOf(partition);
  assert.ok(newLeader !== undefined && newLeader !== leader, "a new leader took over");
  for (const node of survivors) {
    for (const [k, v] of acked) {
      assert.is(await cluster.send(node, `GET ${k}`), `VALUE ${v}`, `${k} through ${node}`);
    }
  }
  // The old leader comes back and catches up: its own replica (READONLY) has the latest value.
  await cluster.cluster.start(leader);
  await cluster.waitFor("the restarted node to catch up", async () => {
    const replies = await cluster.sendLines(leader, ["READONLY", `GET ${key}`], 3000).catch(() => ["", ""]);
    const reply = replies[1];
    return reply === `VALUE ${acked.get(key)}` ? true : undefined;
  }, 15_000);
});

test("a leader paused past its session timeout cannot acknowledge a write or serve a stale read when it wakes up", async () => {
  const key = "pause-key";
  const partition = cluster.partitionOf(key);
  await cluster.waitFor("a leader", () => cluster.leaderOf(partition), 15_000);
  const leader = (await cluster.leaderOf(partition))!;
  assert.is(await cluster.send(leader, `PUT ${key} v1`), "OK");
  cluster.cluster.pause(leader);
  try {
    const others = cluster.others([leader]);
    const newLeader = await cluster.waitFor("a new leader", async () => {
      for (const node of others) {
        const line = await cluster.send(node, "INFO", 2000).catch(() => "");
        if (!line.startsWith("{")) continue;
        const info = JSON.parse(line) as { partitions: Array<{ partition: string; role: string }> };
        if (info.partitions.some((p) => p.partition === partition && p.role === "leader")) return node;
      }
      return undefined;
    }, FAILOVER_BUDGET_MS);
    assert.is.not(newLeader, leader);
    assert.is(await cluster.send(newLeader, `PUT ${key} v2`), "OK");
  } finally {
    cluster.cluster.resume(leader);
  }
  // Straight after waking up, before it has heard anything: it must not acknowledge a write
  // the cluster lacks, and must not return the stale v1.
  const [write, read] = await Promise.all([
    cluster.send(leader, `PUT ${key} v3`, 15_000).catch((e: Error) => `(${e.message})`),
    cluster.send(leader, `GET ${key}`, 15_000).catch((e: Error) => `(${e.message})`),
  ]);
  assert.is.not(read, "VALUE v1", "no stale read through the deposed leader");
  const other = cluster.others([leader])[0];
  const seen = await cluster.send(other, `GET ${key}`);
  if (write === "OK") assert.is(seen, "VALUE v3", "an acknowledged write is in the cluster");
  else assert.match(write, /^(ERR (UNAVAILABLE|TIMEOUT)|\()/);
  assert.ok(["VALUE v2", "VALUE v3"].includes(seen), `cluster value ${seen}`);
});

test("losing ZooKeeper for longer than a session: no split brain, and service comes back", async () => {
  const key = "zk-key";
  const partition = cluster.partitionOf(key);
  await cluster.waitFor("a leader", () => cluster.leaderOf(partition), 15_000);
  assert.is(await cluster.send(cluster.specs[0].id, `PUT ${key} before`), "OK");
  cluster.zk.pause();
  const acked: string[] = [];
  try {
    // While ZooKeeper is frozen, writes may fail, but any acknowledged one must survive.
    const until = Date.now() + SESSION_MS * 2;
    let i = 0;
    while (Date.now() < until) {
      const value = `during-${i++}`;
      const reply = await cluster.send(cluster.specs[i % 3].id, `PUT ${key} ${value}`, 8000).catch((e: Error) => `(${e.message})`);
      if (reply === "OK") acked.push(value);
      else assert.match(reply, /^(ERR (UNAVAILABLE|TIMEOUT)|\()/, reply);
    }
  } finally {
    cluster.zk.resume();
  }
  await writeUntilOk(cluster.specs[1].id, key, "after", 20_000);
  // Exactly one leader per partition once things settle.
  await cluster.waitFor("one leader per partition", async () => {
    const leaders: Record<string, number> = {};
    for (const spec of cluster.specs) {
      const line = await cluster.send(spec.id, "INFO", 2000).catch(() => "");
      if (!line.startsWith("{")) return undefined;
      const info = JSON.parse(line) as { partitions: Array<{ partition: string; role: string }> };
      for (const p of info.partitions) if (p.role === "leader") leaders[p.partition] = (leaders[p.partition] ?? 0) + 1;
    }
    return Object.keys(cluster.cluster.layout).every((p) => leaders[p] === 1) ? true : undefined;
  }, 20_000);
  for (const spec of cluster.specs) assert.is(await cluster.send(spec.id, `GET ${key}`), "VALUE after");
});

test.run();
