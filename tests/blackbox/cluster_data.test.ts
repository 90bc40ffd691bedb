/**
 * Cluster data paths with a real ZooKeeper and real node processes:
 * restart with data, a replica rebuilt from nothing, peer-only commands
 * refused to clients, and every node agreeing on the ring.
 */
import fs from "node:fs";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { execa } from "execa";
import { startTestCluster, type TestCluster } from "../support/cluster.ts";

let cluster: TestCluster;

test.before(async () => {
  // A small snapshot interval so that a wiped replica must be rebuilt from a snapshot, not only the log.
  cluster = await startTestCluster({ nodes: 3, partitions: 3, replicas: 3, args: ["--snapshot-every", "40"] });
});

test.after(async () => {
  await cluster?.stop();
});

test("clients get ERR FORBIDDEN for peer-only commands and nothing changes", async () => {
  const node = cluster.specs[0].id;
  assert.is(await cluster.send(node, "PUT guarded original"), "OK");
  for (const line of [
    "REPLICATE {}",
    "FWD PUT guarded ZXZpbA==",
    "SNAPSHOT BEGIN p1 999 1 1 0",
    "AUTH PROOF 00",
  ]) {
    assert.match(await cluster.send(node, line), /^ERR FORBIDDEN /, line);
  }
  assert.match(await cluster.send(node, "AUTH HELLO intruder 0123456789abcdef0123456789abcdef"), /^AUTH CHALLENGE /);
  assert.is(await cluster.send(node, "GET guarded"), "VALUE original");
});

test("every node reports the same ring (partitions, vnode positions, members)", async () => {
  const rings = await Promise.all(cluster.specs.map((s) => cluster.send(s.id, "RING")));
  const parsed = rings.map((r) => JSON.parse(r) as { partitions: string[]; vnodes: Record<string, number[]>; members: Record<string, string[]> });
  for (const ring of parsed) {
    assert.equal(ring.partitions, parsed[0].partitions);
    assert.equal(ring.vnodes, parsed[0].vnodes);
    assert.equal(ring.members, parsed[0].members);
    assert.is(Object.keys(ring.vnodes).length, 3);
    for (const positions of Object.values(ring.vnodes)) assert.is(positions.length, 10);
  }
});

test("a replica whose data dir was wiped rebuilds completely (snapshot + log) after a restart", async () => {
  const keys = new Map<string, string>();
  for (let i = 0; i < 150; i++) {
    const key = `wipe-${i % 60}`;
    const value = `v${i}`;
    assert.is(await cluster.send(cluster.specs[i % 3].id, `PUT ${key} ${value}`), "OK");
    keys.set(key, value);
  }
  const victim = cluster.specs[2];
  await cluster.cluster.kill(victim.id, "SIGKILL");
  fs.rmSync(victim.dataDir, { recursive: true, force: true });
  // More writes while it is gone (two of three replicas are a majority).
  for (let i = 0; i < 60; i++) {
    const key = `wipe-${i}`;
    const reply = await cluster.send(cluster.specs[i % 2].id, `PUT ${key} w${i}`, 15_000);
    assert.is(reply, "OK");
    keys.set(key, `w${i}`);
  }
  await cluster.cluster.start(victim.id);
  await cluster.waitFor("the wiped replica to hold every key", async () => {
    const lines = ["READONLY", ...[...keys.keys()].map((k) => `GET ${k}`)];
    const replies = await cluster.sendLines(victim.id, lines, 5000).catch(() => []);
    if (replies.length !== lines.length) return undefined;
    const keyList = [...keys];
    return keyList.every(([, v], i) => replies[i + 1] === `VALUE ${v}`) ? true : undefined;
  }, 30_000);
});

test("a full restart of every node keeps the data", async () => {
  const node = cluster.specs[0].id;
  for (let i = 0; i < 20; i++) assert.is(await cluster.send(node, `PUT restart-${i} r${i}`), "OK");
  for (const spec of cluster.specs) await cluster.cluster.kill(spec.id, "SIGTERM");
  for (const spec of cluster.specs) await cluster.cluster.start(spec.id);
  await cluster.cluster.waitForLeaders({ timeoutMs: 30_000 });
  for (let i = 0; i < 20; i++) {
    assert.is(await cluster.send(cluster.specs[i % 3].id, `GET restart-${i}`, 15_000), `VALUE r${i}`);
  }
});

test("a node bringing a new partition: every node lists it as pending and keeps serving the old ring", async () => {
  const main = new URL("../../src/cli/main.js", import.meta.url).pathname;
  const dataDir = fs.mkdtempSync("/tmp/ringkv-newpart-");
  const extra = execa(process.execPath, [
    main, "node", "--id", "n9", "--host", "127.0.0.19", "--port", String(cluster.specs[0].port),
    "--partitions", "p9", "--zk", cluster.zk.connect, "--data-dir", dataDir, "--secret", "test-secret",
  ], { reject: false, stdin: "ignore" });
  try {
    await cluster.waitFor("every node to see p9 pending", async () => {
      const rings = await Promise.all(cluster.specs.map((s) => cluster.send(s.id, "RING").catch(() => "{}")));
      const ok = rings.every((r) => {
        const ring = JSON.parse(r) as { partitions?: string[]; pendingPartitions?: string[] };
        return ring.pendingPartitions?.includes("p9") && !ring.partitions?.includes("p9");
      });
      return ok ? true : undefined;
    }, 15_000);
    assert.is(await cluster.send(cluster.specs[1].id, "PUT still-works yes"), "OK");
  } finally {
    extra.kill("SIGKILL");
    await extra;
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

test.run();
