/**
 * The fault suite, short: a real five-node cluster under concurrent clients
 * while the nemesis kills a node, pauses a leader past its session timeout,
 * cuts a node off its peers (and ZooKeeper) with iptables, cuts a node off
 * ZooKeeper alone, and pauses ZooKeeper; the recorded history must be
 * linearizable. Long runs: `node dist/tests/faults/main.js --duration 300`.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { CLIENT_DIALECTS, clientDialect, runChaos } from "./chaos.ts";
import { chaosTag, FAULT_KINDS, listChaosRules } from "./nemesis.ts";

/** Faults in the short run: two rounds of the schedule, each with every kind once. */
const FAULTS = 2 * FAULT_KINDS.length;
/** Upper bound of the chaos phase; the run ends sooner, once the faults are done. */
const CHAOS_BUDGET_MS = 75_000;
/** Definite replies the run must get at least (an idle 2-core machine does about 150 a second here). */
const MIN_OK_OPS = 500;

test("under kills, pauses, partitions, nodes cut off ZooKeeper and ZooKeeper pauses, every operation through every node is linearizable and the cluster recovers", async () => {
  const result = await runChaos({
    durationMs: CHAOS_BUDGET_MS,
    maxFaults: FAULTS,
    clients: 8,
    keys: 5,
    tailMs: 1500,
    schedule: { gapMs: [1000, 2000], killDownMs: [1000, 3000], partitionMs: [2000, 4000], pauseFactor: [1.5, 2.5] },
  });
  assert.is(result.verdict, "linearizable", result.check.message);
  assert.equal(result.problems, [], result.problems.join("\n"));
  assert.ok(result.ok >= MIN_OK_OPS, `at least ${MIN_OK_OPS} ops got a definite reply (got ${result.ok})`);
  for (const dialect of CLIENT_DIALECTS) {
    const definite = result.history.filter((op) => clientDialect(op.client) === dialect && op.outcome !== "unknown" && op.outcome !== "failed");
    assert.ok(definite.length >= MIN_OK_OPS / 10, `${dialect} clients got definite replies (${definite.length})`);
  }
  for (const kind of FAULT_KINDS) assert.ok(result.nemesis[kind] >= 1, `the nemesis injected a ${kind} (log: ${JSON.stringify(result.nemesis)})`);
  assert.equal(listChaosRules({ tag: chaosTag() }), [], "no iptables rule of this run is left");
  assert.is(result.nodesAlive.length, 5, `every node is alive at the end (alive: ${result.nodesAlive.join(",")})`);
  assert.ok(Object.values(result.finalValues).every((v) => v !== undefined), "every key's final read agrees on every node");
});

test.run();
