import { suite } from "uvu";
import * as assert from "uvu/assert";
import { checkLinearizable, type HistoryOp } from "../../src/check/linearizability.ts";
import {
  formatHistoryJsonl,
  HistoryRecorder,
  outcomeOfReply,
  parseHistoryJsonl,
} from "../../src/check/history.ts";
import { seeded as prng } from "../simulation/prng.ts";

// ---------------------------------------------------------------------------
// Helpers: terse constructors for hand-written histories.

function put(client: string, key: string, value: string, start: number, end: number): HistoryOp {
  return { client, op: "put", key, value, start, end, outcome: "ok" };
}
function putUnknown(client: string, key: string, value: string, start: number): HistoryOp {
  return { client, op: "put", key, value, start, end: Infinity, outcome: "unknown" };
}
function putFailed(client: string, key: string, value: string, start: number, end: number): HistoryOp {
  return { client, op: "put", key, value, start, end, outcome: "failed" };
}
function get(client: string, key: string, result: string | null, start: number, end: number): HistoryOp {
  return result === null
    ? { client, op: "get", key, start, end, outcome: "not_found" }
    : { client, op: "get", key, start, end, outcome: "ok", result };
}
function del(client: string, key: string, found: boolean, start: number, end: number): HistoryOp {
  return { client, op: "delete", key, start, end, outcome: found ? "deleted" : "not_found" };
}
function delUnknown(client: string, key: string, start: number): HistoryOp {
  return { client, op: "delete", key, start, end: Infinity, outcome: "unknown" };
}


interface GenerateOptions {
  seed: number;
  keys: number;
  opsPerKey: number;
  clients: number;
  /** Fraction of ops whose outcome the client never learns. */
  unknownRate: number;
  /** Fraction of ops that fail definitely (never take effect). */
  failedRate: number;
  /** Distinct values per key; 0 means every PUT writes a fresh value. */
  valuePool: number;
}

/**
 * A history that is linearizable by construction: clients run ops one after
 * another with random durations (so they overlap), each op takes effect at a
 * random instant inside its interval, and replies come from a sequential
 * model applied in the order of those instants.
 */
function generateHistory(options: GenerateOptions): HistoryOp[] {
  const random = prng(options.seed);
  const total = options.keys * options.opsPerKey;
  const clock = new Array<number>(options.clients).fill(0);
  const planned: { op: HistoryOp; at: number; applies: boolean }[] = [];
  let fresh = 0;
  for (let n = 0; n < total; n++) {
    const c = n % options.clients;
    const start = clock[c] + random() * 2;
    const duration = 0.5 + random() * 20;
    const end = start + duration;
    clock[c] = end;
    const key = `k${Math.floor(random() * options.keys)}`;
    const kind = random();
    const op: HistoryOp = kind < 0.45
      ? {
        client: `c${c}`,
        op: "put",
        key,
        value: options.valuePool > 0 ? `v${Math.floor(random() * options.valuePool)}` : `c${c}-${fresh++}`,
        start,
        end,
        outcome: "ok",
      }
      : kind < 0.9
      ? { client: `c${c}`, op: "get", key, start, end, outcome: "ok" }
      : { client: `c${c}`, op: "delete", key, start, end, outcome: "ok" };
    let applies = true;
    const fate = random();
    if (fate < options.unknownRate) {
      op.outcome = "unknown";
      op.end = Infinity;
      applies = random() < 0.5;
    } else if (fate < options.unknownRate + options.failedRate) {
      op.outcome = "failed";
      applies = false;
    }
    planned.push({ op, at: start + random() * duration, applies });
  }
  const ordered = planned.slice().sort((a, b) => a.at - b.at);
  const store = new Map<string, string>();
  for (const { op, applies } of ordered) {
    if (!applies) continue;
    const current = store.get(op.key);
    if (op.op === "put") store.set(op.key, op.value!);
    else if (op.op === "delete") {
      store.delete(op.key);
      if (op.outcome === "ok") op.outcome = current === undefined ? "not_found" : "deleted";
    } else if (op.outcome === "ok") {
      if (current === undefined) op.outcome = "not_found";
      else op.result = current;
    }
  }
  return planned.map((p) => p.op);
}

/**
 * Makes one GET in the middle of `history` return a value that was
 * definitely overwritten before the GET started: PUT p (unique value) ended
 * before PUT q started, and q ended before the GET started. Returns the
 * GET's index.
 */
function corruptOneRead(history: HistoryOp[]): number {
  const from = Math.floor(history.length / 2);
  for (let g = from; g < history.length; g++) {
    const read = history[g];
    if (read.op !== "get" || read.outcome === "unknown" || read.outcome === "failed") continue;
    const puts = history.filter((h) => h.key === read.key && h.op === "put" && h.outcome === "ok");
    for (const q of puts) {
      if (q.end >= read.start) continue;
      const p = puts.find((h) => h.end < q.start && h.value !== q.value && h.value !== read.result);
      if (p === undefined) continue;
      const sameValue = history.filter((h) => h.op === "put" && h.key === read.key && h.value === p.value);
      if (sameValue.length !== 1) continue;
      history[g] = { ...read, outcome: "ok", result: p.value };
      return g;
    }
  }
  throw new Error("no GET could be corrupted");
}

/**
 * Makes one GET in the last third of `history` (values repeat) return a
 * value that every one of its writers had definitely lost before the GET
 * started: each writer that could precede the GET returned before some
 * acknowledged op that shows another state, and that op returned before the
 * GET started. No unknown PUT of the value may start before the GET ends.
 * Returns the GET's index.
 */
function corruptOneReadRepeatedValues(history: HistoryOp[]): number {
  const values = [...new Set(history.filter((h) => h.op === "put").map((h) => h.value!))];
  for (let g = Math.floor((history.length * 2) / 3); g < history.length; g++) {
    const read = history[g];
    if (read.op !== "get" || (read.outcome !== "ok" && read.outcome !== "not_found")) continue;
    const sameKey = history.filter((h) => h.key === read.key && h.outcome !== "failed");
    for (const value of values) {
      if (value === read.result) continue;
      const writers = sameKey.filter((h) => h.op === "put" && h.value === value && h.start <= read.end);
      if (writers.length === 0) continue;
      const lost = writers.every((w) =>
        w.outcome !== "unknown" &&
        sameKey.some((c) =>
          c.outcome !== "unknown" && !(c.op === "put" && c.value === value) &&
          !(c.op === "get" && c.result === value) && c.start > w.end && c.end < read.start
        )
      );
      if (!lost) continue;
      history[g] = { ...read, outcome: "ok", result: value };
      return g;
    }
  }
  throw new Error("no GET could be corrupted");
}

// ---------------------------------------------------------------------------
const spec = suite("checkLinearizable: the model");

spec("an empty history is linearizable", () => {
  const result = checkLinearizable([]);
  assert.equal(result, { ok: true, keysChecked: 0, opsChecked: 0 });
});

spec("a sequential history that follows the model passes", () => {
  const result = checkLinearizable([
    get("c1", "k", null, 0, 1),
    put("c1", "k", "a", 2, 3),
    get("c2", "k", "a", 4, 5),
    put("c2", "k", "b", 6, 7),
    get("c1", "k", "b", 8, 9),
    del("c1", "k", true, 10, 11),
    get("c2", "k", null, 12, 13),
    del("c2", "k", false, 14, 15),
    put("c1", "k", "c", 16, 17),
    get("c1", "k", "c", 18, 19),
  ]);
  assert.ok(result.ok, result.message);
  assert.is(result.keysChecked, 1);
  assert.is(result.opsChecked, 10);
});

spec("concurrent writes: a later read may see either value", () => {
  for (const seen of ["a", "b"]) {
    const result = checkLinearizable([
      put("c1", "k", "a", 0, 10),
      put("c2", "k", "b", 1, 9),
      get("c3", "k", seen, 11, 12),
      get("c3", "k", seen, 13, 14),
    ]);
    assert.ok(result.ok, `seeing ${seen}: ${result.message}`);
  }
});

spec("concurrent writes: reads may not flip back once both writes are done", () => {
  const result = checkLinearizable([
    put("c1", "k", "a", 0, 10),
    put("c2", "k", "b", 1, 9),
    get("c3", "k", "a", 11, 12),
    get("c3", "k", "b", 13, 14),
  ]);
  assert.not.ok(result.ok);
  assert.not.ok(result.inconclusive);
});

spec("a read overlapping a write may see the old or the new value", () => {
  for (const seen of ["a", "b"]) {
    const result = checkLinearizable([
      put("c1", "k", "a", 0, 1),
      put("c1", "k", "b", 2, 10),
      get("c2", "k", seen, 3, 4),
    ]);
    assert.ok(result.ok, result.message);
  }
});

spec("ops that touch in time count as concurrent", () => {
  const result = checkLinearizable([put("c1", "k", "a", 0, 5), get("c2", "k", null, 5, 7)]);
  assert.ok(result.ok, result.message);
});

spec("stale read fails: GET after B was acknowledged sees A", () => {
  const result = checkLinearizable([
    put("c1", "k", "A", 0, 1),
    put("c1", "k", "B", 2, 3),
    get("c2", "k", "A", 4, 5),
  ]);
  assert.not.ok(result.ok);
  assert.not.ok(result.inconclusive);
  assert.is(result.key, "k");
  // The message names all three ops: B fell between A and the read.
  assert.match(result.message!, /a read returned a value that had been overwritten/);
  assert.match(result.message!, /the read:\n    #2 c2 GET k -> VALUE "A" \[4\.\.5\]/);
  assert.match(result.message!, /the only PUT of that value that could precede it:\n    #0 c1 PUT k "A" -> OK \[0\.\.1\]/);
  assert.match(result.message!, /changed or saw another state:\n    #1 c1 PUT k "B" -> OK \[2\.\.3\]/);
});

spec("reads may not flip back and forth between two concurrent writes: found by the search", () => {
  const result = checkLinearizable([
    put("c1", "k", "a", 0, 10),
    put("c2", "k", "b", 0, 10),
    get("c3", "k", "a", 1, 2),
    get("c3", "k", "b", 3, 4),
    get("c3", "k", "a", 5, 6),
  ]);
  assert.not.ok(result.ok);
  assert.not.ok(result.inconclusive);
  // No order even starts: each op that could go first rules itself out.
  const message = result.message!;
  assert.match(message, /longest valid order places 0 of 5 acknowledged ops/);
  assert.match(message, /#2 c3 GET k -> VALUE "a" \[1\.\.2\]\n      cannot go now: it read "a" but the key is absent/);
  assert.match(
    message,
    /#0 c1 PUT k "a" -> OK \[0\.\.10\]\n      cannot go now: its value is read by #4 c3 GET k -> VALUE "a" \[5\.\.6\], but #3 c3 GET k -> VALUE "b" \[3\.\.4\] returned before that read started/,
  );
  assert.match(message, /#1 c2 PUT k "b" -> OK \[0\.\.10\]\n      cannot go now: /);
});

spec("a read that returned before the only write of its value started fails", () => {
  const result = checkLinearizable([get("c1", "k", "x", 0, 1), put("c2", "k", "x", 2, 3)]);
  assert.not.ok(result.ok);
  assert.match(result.message!, /#0 c1 GET k -> VALUE "x" \[0\.\.1\] returned a value before any PUT of it started: #1/);
});

spec("lost acknowledged write fails: later GETs find nothing, no delete ran", () => {
  const result = checkLinearizable([
    put("c1", "k", "a", 0, 1),
    get("c2", "k", null, 2, 3),
    get("c1", "k", null, 4, 5),
  ]);
  assert.not.ok(result.ok);
  assert.match(result.message!, /a read found nothing, but the key held a value/);
  assert.match(result.message!, /become absent \(any other was undone earlier\):\n    its initial state\n/);
  assert.match(result.message!, /wrote or saw a value:\n    #0 c1 PUT k "a" -> OK \[0\.\.1\]/);
});

spec("DELETED on a key never written fails", () => {
  const result = checkLinearizable([del("c1", "k", true, 0, 1)]);
  assert.not.ok(result.ok);
  assert.match(result.message!, /deleted the key but the key is absent/);
});

spec("two sequential DELETEs that both say DELETED fail", () => {
  const result = checkLinearizable([
    put("c1", "k", "a", 0, 1),
    del("c1", "k", true, 2, 3),
    del("c2", "k", true, 4, 5),
  ]);
  assert.not.ok(result.ok);
});

spec("two concurrent DELETEs may not both say DELETED for one PUT", () => {
  const result = checkLinearizable([
    put("c1", "k", "a", 0, 1),
    del("c1", "k", true, 2, 6),
    del("c2", "k", true, 3, 5),
  ]);
  assert.not.ok(result.ok);
});

spec("DELETE success reported as ok counts as DELETED", () => {
  const deleteOk: HistoryOp = { client: "c1", op: "delete", key: "k", start: 2, end: 3, outcome: "ok" };
  assert.ok(checkLinearizable([put("c1", "k", "a", 0, 1), deleteOk, get("c1", "k", null, 4, 5)]).ok);
  assert.not.ok(checkLinearizable([deleteOk]).ok);
});

spec("NOT_FOUND from DELETE on a present key fails", () => {
  const result = checkLinearizable([put("c1", "k", "a", 0, 1), del("c2", "k", false, 2, 3)]);
  assert.not.ok(result.ok);
});

spec("an unknown PUT whose value is observed later passes", () => {
  const result = checkLinearizable([
    put("c1", "k", "a", 0, 1),
    putUnknown("c2", "k", "x", 2),
    get("c1", "k", "a", 3, 4),
    get("c1", "k", "x", 50, 51),
    get("c3", "k", "x", 60, 61),
  ]);
  assert.ok(result.ok, result.message);
});

spec("an unknown PUT takes effect where a later read needs it, not where it started", () => {
  const result = checkLinearizable([
    putUnknown("c1", "k", "x", 0),
    put("c2", "k", "y", 1, 2),
    get("c3", "k", "y", 3, 4),
    get("c3", "k", "x", 5, 6),
  ]);
  assert.ok(result.ok, result.message);
});

spec("an unknown PUT never observed passes", () => {
  const result = checkLinearizable([
    put("c1", "k", "a", 0, 1),
    putUnknown("c2", "k", "x", 2),
    get("c1", "k", "a", 3, 4),
    get("c1", "k", "a", 100, 101),
  ]);
  assert.ok(result.ok, result.message);
});

spec("an unknown PUT cannot explain a read that ended before it started", () => {
  const result = checkLinearizable([get("c1", "k", "x", 0, 1), putUnknown("c2", "k", "x", 2)]);
  assert.not.ok(result.ok);
});

spec("an unknown PUT that took effect stays in effect: no flip-flop", () => {
  const result = checkLinearizable([
    put("c1", "k", "a", 0, 1),
    putUnknown("c2", "k", "x", 2),
    get("c1", "k", "x", 3, 4),
    get("c1", "k", "a", 5, 6),
  ]);
  assert.not.ok(result.ok);
});

spec("an unknown DELETE may explain a NOT_FOUND", () => {
  const history = [put("c1", "k", "a", 0, 1), delUnknown("c2", "k", 2), get("c1", "k", null, 5, 6)];
  assert.ok(checkLinearizable(history).ok);
  assert.not.ok(checkLinearizable([history[0], history[2]]).ok);
});

spec("an unknown DELETE may be needed to make a later DELETED possible again", () => {
  const result = checkLinearizable([
    put("c1", "k", "a", 0, 1),
    delUnknown("c2", "k", 2),
    get("c1", "k", null, 3, 4),
    put("c1", "k", "b", 5, 6),
    del("c1", "k", true, 7, 8),
  ]);
  assert.ok(result.ok, result.message);
});

spec("a TIMEOUT GET says nothing and is ignored", () => {
  const result = checkLinearizable([
    put("c1", "k", "a", 0, 1),
    { client: "c2", op: "get", key: "k", start: 2, end: Infinity, outcome: "unknown" },
    get("c1", "k", "a", 3, 4),
  ]);
  assert.ok(result.ok, result.message);
  assert.is(result.opsChecked, 3);
});

spec("a read of a value never written fails", () => {
  const result = checkLinearizable([put("c1", "k", "a", 0, 1), get("c2", "k", "zzz", 2, 3)]);
  assert.not.ok(result.ok);
  assert.match(result.message!, /#1 c2 GET k -> VALUE "zzz".*never written/);
});

spec("a failed (UNAVAILABLE) PUT whose value is observed fails", () => {
  const result = checkLinearizable([putFailed("c1", "k", "x", 0, 1), get("c2", "k", "x", 2, 3)]);
  assert.not.ok(result.ok);
  assert.match(result.message!, /only a failed PUT wrote it: #0 c1 PUT k "x"/);
});

spec("a failed PUT never took effect and is not counted", () => {
  const result = checkLinearizable([putFailed("c1", "k", "x", 0, 1), get("c2", "k", null, 2, 3)]);
  assert.ok(result.ok, result.message);
  assert.is(result.opsChecked, 1);
});

spec("keys are independent registers", () => {
  const ok = checkLinearizable([
    put("c1", "a", "1", 0, 1),
    put("c1", "b", "2", 2, 3),
    get("c2", "a", "1", 4, 5),
    get("c2", "b", "2", 4, 5),
    get("c2", "c", null, 4, 5),
  ]);
  assert.ok(ok.ok, ok.message);
  assert.is(ok.keysChecked, 3);
  const bad = checkLinearizable([put("c1", "a", "1", 0, 1), get("c2", "b", "1", 2, 3)]);
  assert.not.ok(bad.ok);
  assert.is(bad.key, "b");
});

spec("the failure message shows the partial order, the stuck op and the state", () => {
  const result = checkLinearizable([
    put("c1", "user:1", "alice", 0, 1),
    get("c2", "user:1", "alice", 2, 3),
    del("c1", "user:1", true, 4, 5),
    put("c3", "user:1", "bob", 4, 7),
    del("c2", "user:1", true, 8, 9),
    del("c1", "user:1", true, 10, 11),
  ]);
  assert.not.ok(result.ok);
  const message = result.message!;
  assert.match(message, /^key "user:1" is not linearizable/);
  assert.match(message, /longest valid order places 5 of 6 acknowledged ops/);
  assert.match(message, /after which the key is absent:\n/);
  assert.match(message, /#0 c1 PUT user:1 "alice" -> OK \[0\.\.1\]\n    #1 c2 GET user:1 -> VALUE "alice" \[2\.\.3\]/);
  assert.match(
    message,
    /#5 c1 DELETE user:1 -> DELETED \[10\.\.11\]\n      cannot go now: it deleted the key but the key is absent/,
  );
});

spec("a search over budget is inconclusive, not a pass", () => {
  const history = generateHistory({
    seed: 7, keys: 1, opsPerKey: 300, clients: 10, unknownRate: 0.05, failedRate: 0, valuePool: 2,
  });
  const result = checkLinearizable(history, { maxStates: 5 });
  assert.not.ok(result.ok);
  assert.ok(result.inconclusive);
  assert.is(result.key, "k0");
  assert.match(result.message!, /gave up after 5 explored states/);
});

spec("malformed ops throw", () => {
  assert.throws(() => checkLinearizable([{ ...put("c", "k", "v", 0, 1), outcome: "not_found" }]), /impossible/);
  assert.throws(() => checkLinearizable([{ client: "c", op: "get", key: "k", start: 0, end: 1, outcome: "ok" }]));
  assert.throws(() => checkLinearizable([put("c", "k", "v", 5, 1)]), /end/);
  assert.throws(() => checkLinearizable([put("c", "k", "v", 0, Infinity)]), /finite end/);
  assert.throws(() => checkLinearizable([], { maxStates: 0 }), /maxStates/);
});

spec.run();

// ---------------------------------------------------------------------------
const random = suite("checkLinearizable: generated histories");

random("random linearizable histories pass (many seeds, small)", () => {
  for (let seed = 1; seed <= 200; seed++) {
    const history = generateHistory({
      seed, keys: 2, opsPerKey: 60, clients: 5, unknownRate: 0.1, failedRate: 0.05, valuePool: seed % 2 === 0 ? 3 : 0,
    });
    const result = checkLinearizable(history);
    assert.ok(result.ok, `seed ${seed}: ${result.message}`);
  }
});

random("random histories with one stale read fail (many seeds, small)", () => {
  for (let seed = 1; seed <= 100; seed++) {
    const history = generateHistory({
      seed, keys: 1, opsPerKey: 80, clients: 5, unknownRate: 0.1, failedRate: 0.05, valuePool: 0,
    });
    const g = corruptOneRead(history);
    const result = checkLinearizable(history);
    assert.not.ok(result.ok, `seed ${seed}: corrupted #${g} passed`);
    assert.not.ok(result.inconclusive, `seed ${seed}: ${result.message}`);
  }
});

/**
 * Reference checker: tries every order that respects real time, with a plain
 * memo (placed set + state) and none of the checker's reductions; unknown ops
 * may be left out. Exponential, so only for small histories.
 */
function referenceLinearizable(history: readonly HistoryOp[]): boolean {
  const ops = history.filter((h) => h.outcome !== "failed");
  const definite = (h: HistoryOp) => h.outcome !== "unknown";
  const definiteCount = ops.filter(definite).length;
  const placed = new Array<boolean>(ops.length).fill(false);
  const seen = new Set<string>();
  function search(state: string | undefined, placedDefinite: number): boolean {
    if (placedDefinite === definiteCount) return true;
    const memo = `${placed.map((p) => (p ? 1 : 0)).join("")}|${state ?? "<absent>"}`;
    if (seen.has(memo)) return false;
    seen.add(memo);
    for (let i = 0; i < ops.length; i++) {
      if (placed[i]) continue;
      // Every definite op that returned before this one started goes first.
      const blocked = ops.some((o, j) => !placed[j] && definite(o) && o.end < ops[i].start);
      if (blocked) continue;
      const h = ops[i];
      let next: string | undefined;
      if (h.op === "put") next = h.value;
      else if (h.op === "get") {
        if (h.outcome === "unknown") next = state;
        else if (h.outcome === "ok" ? state !== h.result : state !== undefined) continue;
        else next = state;
      } else {
        if (h.outcome === "not_found" && state !== undefined) continue;
        if ((h.outcome === "ok" || h.outcome === "deleted") && state === undefined) continue;
        next = undefined;
      }
      placed[i] = true;
      const found = search(next, placedDefinite + (definite(h) ? 1 : 0));
      placed[i] = false;
      if (found) return true;
    }
    return false;
  }
  return search(undefined, 0);
}

/** Changes up to `count` replies of `history` at random: a read's value, found vs not found. */
function mutateReplies(history: HistoryOp[], random: () => number, count: number): void {
  const puts = history.filter((h) => h.op === "put");
  for (let m = 0; m < count; m++) {
    const i = Math.floor(random() * history.length);
    const h = history[i];
    if (h.op === "get" && (h.outcome === "ok" || h.outcome === "not_found") && puts.length > 0) {
      history[i] = { ...h, outcome: "ok", result: puts[Math.floor(random() * puts.length)].value };
    } else if (h.op === "delete" && (h.outcome === "deleted" || h.outcome === "not_found")) {
      history[i] = { ...h, outcome: h.outcome === "deleted" ? "not_found" : "deleted" };
    }
  }
}

random("agrees with an exhaustive search on tiny random histories", () => {
  const outcomes = { linearizable: 0, not: 0 };
  for (let seed = 1; seed <= 3_000; seed++) {
    const r = prng(seed);
    const history: HistoryOp[] = [];
    const clock = [0, 0, 0];
    const count = 2 + Math.floor(r() * 6);
    for (let n = 0; n < count; n++) {
      const c = Math.floor(r() * 3);
      const start = clock[c] + Math.floor(r() * 3);
      const end = start + Math.floor(r() * 6);
      clock[c] = end + 1;
      const value = `v${Math.floor(r() * 3)}`;
      const fate = r();
      const outcome = fate < 0.15 ? "unknown" : fate < 0.2 ? "failed" : undefined;
      const kind = r();
      let op: HistoryOp;
      if (kind < 0.4) op = { client: `c${c}`, op: "put", key: "k", value, start, end, outcome: outcome ?? "ok" };
      else if (kind < 0.8) {
        op = r() < 0.3
          ? { client: `c${c}`, op: "get", key: "k", start, end, outcome: outcome ?? "not_found" }
          : { client: `c${c}`, op: "get", key: "k", start, end, outcome: outcome ?? "ok", result: value };
      } else {
        op = { client: `c${c}`, op: "delete", key: "k", start, end, outcome: outcome ?? (r() < 0.5 ? "deleted" : "not_found") };
      }
      if (op.outcome === "unknown") op.end = Infinity;
      history.push(op);
    }
    const expected = referenceLinearizable(history);
    const result = checkLinearizable(history);
    assert.is(result.ok, expected, `seed ${seed}: ${JSON.stringify(history)}\n${result.message}`);
    outcomes[expected ? "linearizable" : "not"]++;
  }
  // Both verdicts are well represented, or the comparison proves little.
  assert.ok(outcomes.linearizable > 500 && outcomes.not > 500, JSON.stringify(outcomes));
});

random("agrees with an exhaustive search on mutated generated histories (40 ops, 4 clients)", () => {
  const outcomes = { linearizable: 0, not: 0 };
  for (let seed = 1; seed <= 300; seed++) {
    const history = generateHistory({
      seed, keys: 1, opsPerKey: 40, clients: 4, unknownRate: 0.1, failedRate: 0.03, valuePool: seed % 3,
    });
    mutateReplies(history, prng(seed * 7919), 1 + (seed % 4));
    const expected = referenceLinearizable(history);
    const result = checkLinearizable(history);
    assert.is(result.ok, expected, `seed ${seed}: ${result.message}`);
    outcomes[expected ? "linearizable" : "not"]++;
  }
  assert.ok(outcomes.linearizable > 50 && outcomes.not > 50, JSON.stringify(outcomes));
});

random("big history: 5 keys x 2,000 ops, 10 clients, 5% unknown passes; one corrupted read fails", () => {
  const options = {
    seed: 42, keys: 5, opsPerKey: 2_000, clients: 10, unknownRate: 0.05, failedRate: 0.02, valuePool: 0,
  };
  const history = generateHistory(options);
  let began = performance.now();
  const result = checkLinearizable(history);
  const passMs = performance.now() - began;
  assert.ok(result.ok, result.message);
  assert.is(result.keysChecked, 5);

  const g = corruptOneRead(history);
  began = performance.now();
  const corrupted = checkLinearizable(history);
  const failMs = performance.now() - began;
  assert.not.ok(corrupted.ok);
  assert.not.ok(corrupted.inconclusive, corrupted.message);
  assert.match(corrupted.message!, new RegExp(`#${g} `));
  console.log(`  big history (${history.length} ops): pass ${passMs.toFixed(0)} ms, corrupted ${failMs.toFixed(0)} ms`);
});

random("big history with few distinct values passes", () => {
  const history = generateHistory({
    seed: 43, keys: 5, opsPerKey: 2_000, clients: 10, unknownRate: 0.05, failedRate: 0.02, valuePool: 4,
  });
  const began = performance.now();
  const result = checkLinearizable(history);
  assert.ok(result.ok, result.message);
  console.log(`  big history, 4 values per key: ${(performance.now() - began).toFixed(0)} ms`);
});

random("big history with repeated values and one read of a value lost long before fails", () => {
  const history = generateHistory({
    seed: 44, keys: 1, opsPerKey: 2_000, clients: 10, unknownRate: 0.05, failedRate: 0.02, valuePool: 50,
  });
  assert.ok(checkLinearizable(history).ok);
  const g = corruptOneReadRepeatedValues(history);
  const result = checkLinearizable(history);
  assert.not.ok(result.ok);
  assert.match(result.message!, /a read returned a value that had been overwritten/);
  assert.match(result.message!, new RegExp(`the read:\\n    #${g} `));
});

random("big history whose one anomaly comes last fails: the search rules out every order before it", () => {
  // Reads flip between two concurrent writes after 1,500 linearizable ops;
  // no quick check sees it, so the search must exhaust all the orders of the
  // ops before it.
  const history = generateHistory({
    seed: 45, keys: 1, opsPerKey: 1_500, clients: 10, unknownRate: 0.02, failedRate: 0.02, valuePool: 0,
  });
  const t = Math.max(...history.filter((h) => h.outcome !== "unknown").map((h) => h.end)) + 10;
  history.push(
    put("x1", "k0", "a", t, t + 90),
    put("x2", "k0", "b", t, t + 90),
    get("x3", "k0", "a", t + 1, t + 2),
    get("x3", "k0", "b", t + 3, t + 4),
    get("x3", "k0", "a", t + 5, t + 6),
  );
  const began = performance.now();
  const result = checkLinearizable(history);
  assert.not.ok(result.ok);
  assert.not.ok(result.inconclusive, result.message);
  assert.match(result.message!, new RegExp(`#${history.length - 3} x3 GET k0 -> VALUE "a"`));
  console.log(`  anomaly after 1,500 ops, proven in ${(performance.now() - began).toFixed(0)} ms`);
});

random.run();

// ---------------------------------------------------------------------------
const recording = suite("history: recording and files");

recording("replies map to outcomes", () => {
  assert.equal(outcomeOfReply("put", "OK"), { outcome: "ok" });
  assert.equal(outcomeOfReply("get", "VALUE a b  c"), { outcome: "ok", result: "a b  c" });
  assert.equal(outcomeOfReply("get", "VALUE "), { outcome: "ok", result: "" });
  assert.equal(outcomeOfReply("get", "NOT_FOUND\r\n"), { outcome: "not_found" });
  assert.equal(outcomeOfReply("delete", "DELETED"), { outcome: "deleted" });
  assert.equal(outcomeOfReply("delete", "NOT_FOUND"), { outcome: "not_found" });
  assert.equal(outcomeOfReply("put", "ERR UNAVAILABLE no leader"), { outcome: "failed" });
  assert.equal(outcomeOfReply("put", "ERR TIMEOUT outcome unknown"), { outcome: "unknown" });
  assert.equal(outcomeOfReply("put", "ERR INTERNAL oops"), { outcome: "unknown" });
  assert.equal(outcomeOfReply("get", '{"status":"ok","value":"v"}'), { outcome: "ok", result: "v" });
  assert.equal(outcomeOfReply("delete", '{"status":"ok"}'), { outcome: "deleted" });
  assert.equal(outcomeOfReply("get", '{"status":"not_found"}'), { outcome: "not_found" });
  assert.equal(
    outcomeOfReply("put", '{"status":"error","code":"UNAVAILABLE","message":"x"}'),
    { outcome: "failed" },
  );
  assert.throws(() => outcomeOfReply("put", "VALUE x"), /impossible for PUT/);
  assert.throws(() => outcomeOfReply("get", "OK"), /impossible for GET/);
});

recording("the recorder builds a history the checker accepts", () => {
  let now = 0;
  const recorder = new HistoryRecorder({ now: () => now++ });
  const a = recorder.invoke({ client: "c1", op: "put", key: "k", value: "v" });
  const b = recorder.invoke({ client: "c2", op: "get", key: "k" });
  recorder.complete(a, "OK");
  recorder.complete(b, "VALUE v");
  const c = recorder.invoke({ client: "c1", op: "put", key: "k", value: "w" });
  recorder.complete(c, "ERR TIMEOUT replication did not finish");
  const d = recorder.invoke({ client: "c2", op: "delete", key: "k" });
  recorder.lose(d);
  recorder.invoke({ client: "c3", op: "get", key: "k" });
  const history = recorder.history();
  assert.equal(history[0], { client: "c1", op: "put", key: "k", value: "v", start: 0, end: 2, outcome: "ok" });
  assert.equal(history[1], { client: "c2", op: "get", key: "k", start: 1, end: 3, outcome: "ok", result: "v" });
  assert.is(history[2].outcome, "unknown");
  assert.is(history[2].end, Infinity);
  assert.is(history[3].outcome, "unknown");
  assert.is(history[4].outcome, "unknown");
  assert.throws(() => recorder.complete(a, "OK"), /not pending/);
  assert.ok(checkLinearizable(history).ok);
});

recording("JSONL round-trips, Infinity included", () => {
  const history = [put("c1", "k", "a b", 0, 1), putUnknown("c2", "k", "x", 2), get("c1", "k", "a b", 3, 4)];
  const text = formatHistoryJsonl(history);
  assert.is(text.split("\n").length, 4);
  assert.match(text, /"end":null/);
  assert.equal(parseHistoryJsonl(text + "\n\n"), history);
  assert.throws(() => parseHistoryJsonl('{"client":"c"}\n'), /line 1/);
});

recording.run();
