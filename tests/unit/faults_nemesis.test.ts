/**
 * The fault suite's pure parts: the seeded schedule (every kind in every
 * round, durations in their ranges, one seed one plan) and the iptables
 * rules it would install. The real thing runs in tests/faults/.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { CHAOS_TAG_PREFIX, FAULT_KINDS, FaultSchedule, isolationRules, type PlannedFault, relayCutRules } from "../faults/nemesis.ts";

const SESSION_MS = 1500;

function plan(seed: number, count: number): PlannedFault[] {
  const schedule = new FaultSchedule(seed, { sessionTimeoutMs: SESSION_MS });
  return Array.from({ length: count }, () => schedule.next());
}

test("every round of the schedule holds each kind once, so a short run covers all of them", () => {
  for (const seed of [1, 2, 3, 42, 2728259824]) {
    const faults = plan(seed, 4 * FAULT_KINDS.length);
    for (let round = 0; round < 4; round++) {
      const kinds = faults.slice(round * FAULT_KINDS.length, (round + 1) * FAULT_KINDS.length).map((f) => f.kind);
      assert.equal([...kinds].sort(), [...FAULT_KINDS].sort(), `seed ${seed}, round ${round}`);
    }
  }
});

test("one seed, one plan; durations within their ranges; only partitions say whether ZooKeeper is cut too", () => {
  assert.equal(plan(7, 50), plan(7, 50));
  assert.not.equal(plan(7, 50), plan(8, 50));
  const faults = plan(99, 500);
  for (const fault of faults) {
    if (fault.kind === "pause") {
      assert.ok(fault.durationMs > SESSION_MS, `a pause outlasts the session (${fault.durationMs})`);
      assert.ok("leaderOf" in fault.target, "pauses hit a leader");
    }
    if (fault.kind === "zk-pause") assert.ok(fault.durationMs >= SESSION_MS / 2 && fault.durationMs <= SESSION_MS * 2.5);
    if (fault.kind === "zk-cut") assert.ok(fault.durationMs >= 1000 && fault.durationMs <= 5000);
    assert.is(fault.withZk !== undefined, fault.kind === "partition", fault.kind);
  }
  const partitions = faults.filter((f) => f.kind === "partition");
  assert.ok(partitions.some((f) => f.withZk === true) && partitions.some((f) => f.withZk === false), "both kinds of partition occur");
  const zkPauses = faults.filter((f) => f.kind === "zk-pause");
  assert.ok(zkPauses.some((f) => f.durationMs < SESSION_MS) && zkPauses.some((f) => f.durationMs > SESSION_MS), "short and long ZooKeeper pauses");
});

test("isolation rules drop the cluster port both ways between one address and each other; relay rules drop one address and port", () => {
  const tag = `${CHAOS_TAG_PREFIX}123`;
  const rules = isolationRules("127.0.0.11", { others: ["127.0.0.12", "127.0.0.13"], port: 9001, tag });
  assert.is(rules.length, 4);
  for (const rule of rules) {
    assert.ok(rule.includes("DROP") && rule.includes(tag) && rule.includes("9001"), rule.join(" "));
    assert.ok(rule.includes("127.0.0.11"), "every rule involves the isolated address");
  }
  assert.equal(relayCutRules({ host: "127.0.0.14", port: 40000 }, tag), [
    ["INPUT", "-d", "127.0.0.14", "-p", "tcp", "--dport", "40000", "-m", "comment", "--comment", tag, "-j", "DROP"],
    ["INPUT", "-s", "127.0.0.14", "-p", "tcp", "--sport", "40000", "-m", "comment", "--comment", tag, "-j", "DROP"],
  ]);
  assert.throws(() => relayCutRules({ host: "127.0.0.14", port: 40000 }, "other-tag"));
  assert.throws(() => relayCutRules({ host: "127.0.0.14", port: 0 }, tag));
});

test.run();
