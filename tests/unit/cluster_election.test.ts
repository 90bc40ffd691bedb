import { test } from "uvu";
import * as assert from "uvu/assert";
import { candidatePrefix, decideElection, epochOf, parseCandidate, preferredLeaders, sortCandidates } from "../../src/cluster/election.ts";
import { ringLayout } from "../../src/node/local_cluster.ts";

const S1 = "0100002006be0001";
const S2 = "0100002006be0002";

function name(id: string, session: string, seq: number): string {
  return candidatePrefix(id, session) + String(seq).padStart(10, "0");
}

test("a candidate name carries node id, session and sequence", () => {
  assert.equal(parseCandidate(name("n1", S1, 7)), { name: name("n1", S1, 7), id: "n1", session: S1, seq: 7 });
  // Ids may contain underscores: the session and sequence are fixed-width at the end.
  assert.equal(parseCandidate(name("a_b", S1, 12))?.id, "a_b");
  // Foreign sequential names still order; names without a sequence do not parse.
  assert.equal(parseCandidate("lock-0000000003"), { name: "lock-0000000003", seq: 3 });
  assert.is(parseCandidate("c_n1_"), undefined);
  assert.throws(() => candidatePrefix("n1", "xyz"));
});

test("epochs start at 1 and follow the sequence", () => {
  assert.is(epochOf(0), 1);
  assert.ok(epochOf(9) > epochOf(8));
});

test("children are sorted by sequence, not by name", () => {
  const names = [name("zz", S2, 10), name("aa", S1, 2), name("mm", S1, 9), "garbage"];
  const { candidates, unparsed } = sortCandidates(names);
  assert.equal(candidates.map((c) => c.seq), [2, 9, 10]);
  assert.equal(unparsed, ["garbage"]);
});

test("no candidate of ours: absent", () => {
  const decision = decideElection([name("n2", S2, 1)], { id: "n1", session: S1 });
  assert.is(decision.kind, "absent");
});

test("lowest leads", () => {
  const decision = decideElection([name("n2", S2, 5), name("n1", S1, 3)], { id: "n1", session: S1 });
  assert.is(decision.kind, "lead");
  if (decision.kind === "lead") assert.is(decision.own.seq, 3);
});

test("others watch only their immediate predecessor", () => {
  const children = [name("n3", "0000000000000003", 8), name("n1", S1, 1), name("n2", S2, 4)];
  const decision = decideElection(children, { id: "n3", session: "0000000000000003" });
  assert.is(decision.kind, "follow");
  if (decision.kind === "follow") assert.is(decision.predecessor.id, "n2");
});

test("the same node id with another session (a restarted process) is not ours", () => {
  const decision = decideElection([name("n1", S2, 1), name("n1", S1, 6)], { id: "n1", session: S1 });
  assert.is(decision.kind, "follow");
  if (decision.kind === "follow") {
    assert.is(decision.own.seq, 6);
    assert.is(decision.predecessor.session, S2);
  }
});

test("duplicates of our session (lost create replies) are extras; the known one is kept", () => {
  const children = [name("n1", S1, 2), name("n2", S2, 3), name("n1", S1, 5)];
  const keepKnown = decideElection(children, { id: "n1", session: S1, known: name("n1", S1, 5) });
  assert.is(keepKnown.kind, "follow");
  if (keepKnown.kind === "follow") {
    assert.is(keepKnown.own.seq, 5);
    assert.equal(keepKnown.extras.map((c) => c.seq), [2]);
    // The extra is ignored for the order: our predecessor is n2, not our own extra.
    assert.is(keepKnown.predecessor.id, "n2");
  }
  const adoptLowest = decideElection(children, { id: "n1", session: S1 });
  assert.is(adoptLowest.kind, "lead");
  if (adoptLowest.kind === "lead") {
    assert.is(adoptLowest.own.seq, 2);
    assert.equal(adoptLowest.extras.map((c) => c.seq), [5]);
  }
});

test("a known name that vanished falls back to our lowest remaining", () => {
  const decision = decideElection([name("n1", S1, 7)], { id: "n1", session: S1, known: name("n1", S1, 4) });
  assert.is(decision.kind, "lead");
  if (decision.kind === "lead") assert.is(decision.own.seq, 7);
});

test("preferred leaders: every node of npm start's layout prefers exactly one partition", () => {
  for (const nodes of [3, 5, 7]) {
    const ids = Array.from({ length: nodes }, (_, i) => `n${i + 1}`);
    const layout = ringLayout(ids, nodes, 3);
    const preferred = preferredLeaders(layout);
    assert.equal([...preferred.keys()].sort(), Object.keys(layout).sort());
    for (const [partition, leader] of preferred) assert.ok(layout[partition].includes(leader), `${partition}: ${leader} is a member`);
    assert.equal([...preferred.values()].sort(), [...ids].sort(), `${nodes} nodes: one each`);
  }
});

test("preferred leaders: equal groups spread; the answer depends only on the ring", () => {
  const all = { p1: ["n1", "n2", "n3"], p2: ["n1", "n2", "n3"], p3: ["n1", "n2", "n3"] };
  assert.equal(Object.fromEntries(preferredLeaders(all)), { p1: "n1", p2: "n2", p3: "n3" });
  const reordered = { p3: ["n1", "n2", "n3"], p1: ["n1", "n2", "n3"], p2: ["n1", "n2", "n3"] };
  assert.equal(preferredLeaders(reordered), preferredLeaders(all));
  // More partitions than nodes: no node prefers two more than another.
  const six = Object.fromEntries(Array.from({ length: 6 }, (_, i) => [`p${i}`, ["a", "b", "c"]]));
  const counts = new Map<string, number>();
  for (const leader of preferredLeaders(six).values()) counts.set(leader, (counts.get(leader) ?? 0) + 1);
  assert.equal([...counts.values()], [2, 2, 2]);
  assert.equal(preferredLeaders({ p1: [] }).size, 0);
});

test.run();
