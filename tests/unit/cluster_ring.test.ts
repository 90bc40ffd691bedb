import { test } from "uvu";
import * as assert from "uvu/assert";
import { encodeLeaderInfo, encodeNodeInfo, parseLeaderInfo, parseNodeInfo, sameLeader } from "../../src/cluster/codec.ts";
import { buildRing, encodeRing, parseRing, pendingPartitions, ringView, sameRingView, withPartition } from "../../src/cluster/ring_doc.ts";
import type { NodeInfo } from "../../src/cluster/types.ts";

function node(id: string, partitions: string[]): NodeInfo {
  return { id, host: "127.0.0.1", port: 7000, partitions };
}

test("the first ring holds every registered partition with its declared members", () => {
  const nodes = [node("n2", ["b", "a"]), node("n1", ["a"])];
  // n3 declared membership of b earlier (persistent) but is not live now: still a replica.
  const members = new Map([["a", ["n1", "n2"]], ["b", ["n3", "n2"]]]);
  const ring = buildRing(nodes, members);
  assert.equal(ring, { partitions: { a: ["n1", "n2"], b: ["n2", "n3"] }, version: 1 });
});

test("a live declarer missing from the member listing is still included", () => {
  const ring = buildRing([node("n1", ["a"])], new Map());
  assert.equal(ring.partitions.a, ["n1"]);
});

test("a partition the ring lacks is pending, not silently added", () => {
  const ring = buildRing([node("n1", ["a"])], new Map([["a", ["n1"]]]));
  const nodes = [node("n1", ["a"]), node("n4", ["z", "a"]), node("n5", ["y"])];
  assert.equal(pendingPartitions(ring, nodes), ["y", "z"]);
  const next = withPartition(ring, { partition: "z", members: ["n4", "n6", "n4"] });
  assert.equal(next.version, 2);
  assert.equal(next.partitions.z, ["n4", "n6"]);
  assert.equal(pendingPartitions(next, nodes), ["y"]);
  // The old document is untouched.
  assert.equal(Object.keys(ring.partitions), ["a"]);
  assert.throws(() => withPartition(next, { partition: "z", members: ["n4"] }), /already/);
});

test("ring documents round-trip and malformed ones are refused", () => {
  const ring = buildRing([node("n1", ["a", "b"])], new Map());
  assert.equal(parseRing(encodeRing(ring)), ring);
  const bad = [
    "not json",
    "[]",
    JSON.stringify({ partitions: { a: [] }, version: 1 }),
    JSON.stringify({ partitions: { a: ["n1"] }, version: 0 }),
    JSON.stringify({ partitions: { "a/b": ["n1"] }, version: 1 }),
    JSON.stringify({ partitions: { a: ["n1", "n1"] }, version: 1 }),
    JSON.stringify({ partitions: { a: "n1" }, version: 1 }),
  ];
  for (const text of bad) assert.throws(() => parseRing(Buffer.from(text)), undefined, text);
});

test("ring views compare by content", () => {
  const ring = buildRing([node("n1", ["a"])], new Map());
  assert.ok(sameRingView(ringView(ring, []), ringView(ring, [])));
  assert.not.ok(sameRingView(ringView(ring, []), ringView(ring, ["z"])));
  assert.not.ok(sameRingView(ringView(ring, []), ringView(withPartition(ring, { partition: "z", members: ["n2"] }), [])));
});

test("NodeInfo and LeaderInfo are validated both ways", () => {
  const info = node("n1", ["a"]);
  assert.equal(parseNodeInfo(encodeNodeInfo(info)), info);
  assert.throws(() => encodeNodeInfo(node("bad id", [])));
  assert.throws(() => encodeNodeInfo({ ...info, port: 70000 }));
  assert.throws(() => encodeNodeInfo(node("n1", ["a", "a"])));
  assert.throws(() => parseNodeInfo(Buffer.from("{}")));
  const leader = { id: "n1", epoch: 3, address: "127.0.0.1:7000" };
  assert.equal(parseLeaderInfo(encodeLeaderInfo(leader)), leader);
  assert.throws(() => parseLeaderInfo(Buffer.from(JSON.stringify({ ...leader, epoch: -1 }))));
  assert.ok(sameLeader(leader, { ...leader }));
  assert.not.ok(sameLeader(leader, { ...leader, epoch: 4 }));
  assert.ok(sameLeader(undefined, undefined));
});

test.run();
