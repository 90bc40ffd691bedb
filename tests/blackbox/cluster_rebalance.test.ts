/**
 * Leadership goes back to the preferred spread after a failover: a real
 * ZooKeeper and three real nodes (`--rebalance-after 1000`); the leader of a
 * partition is SIGKILLed, another node takes over, the old leader comes
 * back, and once things are calm it leads its partition again, through a
 * planned handover during which no client write fails.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { preferredLeaders } from "../../src/cluster/mod.ts";
import { startTestCluster, type TestCluster } from "../support/cluster.ts";

const REBALANCE_AFTER_MS = 1_000;
/** Calm period, a requeue and a handover (one check a second each), on 2 busy cores. */
const REBALANCED_WITHIN_MS = 30_000;

let cluster: TestCluster;

test.before(async () => {
  cluster = await startTestCluster({ nodes: 3, partitions: 3, args: ["--rebalance-after", String(REBALANCE_AFTER_MS)] });
});

test.after(async () => {
  await cluster?.stop();
});

/** Partition → the node serving it now, per the nodes' INFO. */
async function leaders(): Promise<Record<string, string | undefined>> {
  const result: Record<string, string | undefined> = {};
  for (const partition of Object.keys(cluster.cluster.layout)) result[partition] = await cluster.leaderOf(partition);
  return result;
}

test("a node back from a crash leads its preferred partition again, and no write fails on the way", async () => {
  // The nodes compute it from the ring, whose member lists are sorted.
  const members = Object.fromEntries(Object.entries(cluster.cluster.layout).map(([p, ids]) => [p, [...ids].sort()]));
  const preferred = preferredLeaders(members);
  const spread = Object.fromEntries(preferred);
  await cluster.waitFor("the preferred spread at start", async () => {
    const now = await leaders();
    return Object.keys(spread).every((p) => now[p] === spread[p]) ? true : undefined;
  }, REBALANCED_WITHIN_MS);

  const [partition, victim] = [...preferred][0];
  const key = (() => {
    for (let i = 0; ; i++) if (cluster.partitionOf(`rebalance-${i}`) === partition) return `rebalance-${i}`;
  })();
  await cluster.cluster.kill(victim, "SIGKILL");
  const stand = await cluster.waitFor("another leader", async () => {
    const leader = await cluster.leaderOf(partition);
    return leader !== undefined && leader !== victim ? leader : undefined;
  }, 20_000);
  await cluster.cluster.start(victim);

  // Writes through the third node all along: the handover back must not fail any.
  const writer = cluster.specs.map((s) => s.id).find((id) => id !== victim && id !== stand)!;
  const replies: string[] = [];
  let writing = true;
  const load = (async () => {
    for (let i = 0; writing; i++) replies.push(await cluster.send(writer, `PUT ${key} v${i}`).catch((e: Error) => `(${e.message})`));
  })();
  try {
    await cluster.waitFor(`${victim} leads ${partition} again`, async () => (await cluster.leaderOf(partition)) === victim ? true : undefined, REBALANCED_WITHIN_MS);
  } finally {
    writing = false;
    await load;
  }
  assert.ok(replies.length > 0, "writes ran during the rebalance");
  assert.equal(replies.filter((r) => r !== "OK").slice(0, 5), [], `every write succeeded (${replies.length})`);
  const last = `v${replies.length - 1}`;
  for (const spec of cluster.specs) assert.is(await cluster.send(spec.id, `GET ${key}`), `VALUE ${last}`, `${spec.id} reads the last write`);
  const now = await leaders();
  assert.equal(now, spread, "every partition is led by its preferred node");
});

test.run();
