import { test } from "uvu";
import * as assert from "uvu/assert";
import { rebalanceStep, type RebalanceView } from "../../src/node/rebalance.ts";

const OPTIONS = { afterMs: 10_000 };

/** The view of `self` on a line whose head leads and serves. */
function view(self: string, line: string[], overrides: Partial<RebalanceView> = {}): RebalanceView {
  return {
    self,
    preferred: "p",
    preferredRegistered: true,
    line,
    leader: line[0],
    serving: line[0] === self,
    calmMs: 60_000,
    successorCaughtUp: true,
    ...overrides,
  };
}

test("a candidate ahead of the preferred node steps to the end of the line; one behind it stays", () => {
  assert.is(rebalanceStep(view("x", ["l", "x", "p"]), OPTIONS), "requeue");
  assert.is(rebalanceStep(view("x", ["l", "p", "x"]), OPTIONS), "none");
  assert.is(rebalanceStep(view("l", ["l", "x", "p"]), OPTIONS), "none", "the leader waits until the preferred node is next");
});

test("a leader hands over only to the preferred node next in line, caught up", () => {
  assert.is(rebalanceStep(view("l", ["l", "p", "x"]), OPTIONS), "hand_over");
  assert.is(rebalanceStep(view("l", ["l", "p", "x"], { successorCaughtUp: false }), OPTIONS), "none");
  assert.is(rebalanceStep(view("l", ["l", "p", "x"], { leader: undefined }), OPTIONS), "none", "not published: not yet leading");
});

test("nothing moves when the preferred node leads, is away, is this node, or things are not calm", () => {
  assert.is(rebalanceStep(view("x", ["p", "x", "l"]), OPTIONS), "none");
  assert.is(rebalanceStep(view("x", ["l", "x", "p"], { preferredRegistered: false }), OPTIONS), "none");
  assert.is(rebalanceStep(view("l", ["l", "p", "x"], { preferredRegistered: false }), OPTIONS), "none");
  assert.is(rebalanceStep(view("p", ["l", "p", "x"]), OPTIONS), "none");
  assert.is(rebalanceStep(view("l", ["l", "p", "x"], { calmMs: 9_999 }), OPTIONS), "none");
  assert.is(rebalanceStep(view("x", ["l", "x", "p"], { calmMs: 0 }), OPTIONS), "none");
  assert.is(rebalanceStep(view("x", ["l", "x", "p"], { preferred: undefined }), OPTIONS), "none");
  assert.is(rebalanceStep(view("x", ["l", "p"]), OPTIONS), "none", "not in the line");
  assert.is(rebalanceStep(view("x", ["x", "l", "p"], { leader: "l", serving: false }), OPTIONS), "none", "the head of the line is about to lead");
});

/** Every ordering of `items`. */
function permutations(items: string[]): string[][] {
  if (items.length <= 1) return [items];
  return items.flatMap((item, i) => permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [item, ...rest]));
}

test("from any line, the steps converge: the preferred node leads after at most one handover", () => {
  for (const members of [["p", "a", "b"], ["p", "a", "b", "c", "d"]]) {
    for (const start of permutations(members)) {
      let line = [...start];
      let handovers = 0;
      for (let round = 0; round < 20 && line[0] !== "p"; round++) {
        // Each node looks at the same line and takes its step; the first step that applies is carried out.
        const step = line.map((self) => ({ self, step: rebalanceStep(view(self, line), OPTIONS) })).find((s) => s.step !== "none");
        assert.ok(step !== undefined, `stuck on ${line.join(",")} (from ${start.join(",")})`);
        line = [...line.filter((id) => id !== step.self), step.self];
        if (step.step === "hand_over") handovers++;
      }
      assert.is(line[0], "p", `from ${start.join(",")}`);
      assert.ok(handovers <= 1, `one handover at most from ${start.join(",")} (${handovers})`);
    }
  }
});

test.run();
