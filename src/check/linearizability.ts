/**
 * Linearizability checker for ringkv histories.
 *
 * Wing & Gong's search with Lowe's memoisation (the approach of Porcupine and
 * of Knossos' "linear" checker), run per key: each key is an independent
 * register, and linearizability is compositional, so a history is
 * linearizable exactly when every key's sub-history is.
 *
 * The search is depth-first over the entry/return event list, lifting an op
 * out of the list when it is placed and relinking it on backtrack; a
 * configuration (placed ops + state) is memoised so it is explored once. On
 * top of that, each of these cuts orders that cannot matter, never a valid
 * one (each is argued where it is made, and the unit tests compare the
 * verdicts with a plain exhaustive search):
 * - two O(n log n) checks first: a read of a value never written, and a read
 *   of a state every source of which was surely lost before it started
 *   (stale reads, lost writes, resurrected deletes), with exact messages;
 * - a GET that fits the current state is placed at once, without branching;
 * - a PUT whose value has one writer is not placed where an op that is not a
 *   read of it must fall before its last read;
 * - values no remaining GET reads share one state;
 * - an unknown op is placed only where the next op needs it, one per effect,
 *   and a configuration that placed fewer unknown ops covers one that placed
 *   more.
 *
 * Model of one key: the state is a value or "absent" (every key starts
 * absent). PUT v sets v and replies OK. GET replies the value or NOT_FOUND.
 * DELETE on a present key makes it absent and replies DELETED; on an absent
 * key it replies NOT_FOUND.
 *
 * Ops whose outcome is unknown (ERR TIMEOUT, dropped connection) may take
 * effect at any point after they started, or never. Failed ops (ERR
 * UNAVAILABLE and other definite errors) never took effect and are dropped.
 *
 * @module
 */

import { strict as assert } from "node:assert";

/** One client operation as recorded by a test harness. */
export interface HistoryOp {
  client: string;
  op: "put" | "get" | "delete";
  key: string;
  /** PUT's value. */
  value?: string;
  /** Time the request was sent (ms, any monotonic clock). */
  start: number;
  /** Time the reply arrived; Infinity when the outcome is unknown. */
  end: number;
  /**
   * ok: PUT OK / DELETE DELETED / GET found (see result); not_found: GET or
   * DELETE found nothing; deleted: DELETE DELETED (same as ok for DELETE);
   * unknown: ERR TIMEOUT, dropped connection, no reply (may take effect at any
   * point after start, or never); failed: ERR UNAVAILABLE and other definite
   * errors (never took effect: dropped).
   */
  outcome: "ok" | "not_found" | "deleted" | "unknown" | "failed";
  /** GET's value when outcome is "ok". */
  result?: string;
}

/** Options for {@linkcode checkLinearizable}. */
export interface CheckOptions {
  /** Abort a key's search after this many explored states (report inconclusive). Default 5_000_000. */
  maxStates?: number;
}

/**
 * What {@linkcode checkLinearizable} found. `ok` is true only when every key
 * was proven linearizable; an inconclusive key (search budget exhausted)
 * gives `ok: false, inconclusive: true`.
 */
export interface CheckResult {
  ok: boolean;
  /** Set when no key failed but some key's search hit `maxStates`. */
  inconclusive?: boolean;
  /** The key that failed (or, when inconclusive, the first key that ran out of budget). */
  key?: string;
  /** Human-readable explanation of the failure or of the inconclusive key. */
  message?: string;
  /** Keys examined (all keys, unless the check stopped at a failing key). */
  keysChecked: number;
  /** Ops in the examined keys, failed ops excluded. */
  opsChecked: number;
}

/** Default for {@linkcode CheckOptions.maxStates}: explored states per key before giving up. */
export const DEFAULT_MAX_STATES = 5_000_000;

/** Most ops one key may hold; memo keys encode bitset word indexes in 16 bits. */
export const MAX_OPS_PER_KEY = 65_535 * 32;

/** Ops of the longest valid partial order shown in a failure message. */
const FAILURE_PREFIX_SHOWN = 8;
/** Alternative next ops shown in a failure message. */
const FAILURE_CANDIDATES_SHOWN = 12;

const ABSENT = 0;
/** State of a key holding a value that no GET of the key returned. */
const UNREAD = 1;
const UNREAD_VALUE_NAME = "a value no remaining GET returns";
const REJECT = -1;

/** What an op needs from the state, and so how it steps the model. */
type Expect =
  | "put" // PUT (ok or unknown): sets its value
  | "value" // GET that returned a value
  | "absent" // GET or DELETE that returned NOT_FOUND
  | "deleted" // DELETE that returned DELETED
  | "any_delete"; // DELETE with unknown outcome: leaves the key absent

/** One op of a key's sub-history, ready for the search. */
interface KeyOp {
  /** Index in the caller's history, shown in messages as `#index`. */
  source: number;
  expect: Expect;
  /** Interned value id: PUT's value, or GET's result; ABSENT otherwise. */
  value: number;
  definite: boolean;
}

/** Which unknown ops a configuration placed (see checkKey's memo). */
interface UnknownPlacement {
  /** Placed unknown PUTs of values that no unplaced GET reads. */
  unreadPuts: number;
  /** Placed unknown DELETEs. */
  deletes: number;
  /** Values of the other placed unknown PUTs, ascending, repeated as placed: PUTs of one value are interchangeable. */
  live: number[];
}

/** The placement of a configuration without unknown ops; it covers every other. */
const NO_UNKNOWN_PLACED: UnknownPlacement = Object.freeze({ unreadPuts: 0, deletes: 0, live: [] as number[] });

/** Whether `visited` placed no more unknown ops than `current` (so it can do all `current` can). */
function covers(visited: UnknownPlacement, current: UnknownPlacement): boolean {
  if (visited === NO_UNKNOWN_PLACED) return true;
  if (visited.unreadPuts > current.unreadPuts || visited.deletes > current.deletes) return false;
  if (visited.live.length > current.live.length) return false;
  let j = 0;
  for (const op of visited.live) {
    while (j < current.live.length && current.live[j] < op) j++;
    if (j === current.live.length || current.live[j] !== op) return false;
    j++;
  }
  return true;
}

/** The deepest dead end seen, kept to explain a failure. */
interface DeadEnd {
  /** Definite ops placed in the partial order. */
  depth: number;
  state: number;
  /** The actual value when `state` is UNREAD, for the message. */
  unreadValue?: string;
  /** Op whose return ends the window: it has to be placed before anything else. */
  blocker: number;
  /** Other ops that could go before the blocker. */
  candidates: number[];
  /** For the blocker and each candidate: why it cannot go next, or undefined when it leads to dead ends. */
  why: Map<number, string | undefined>;
  /** Last ops of the partial order, oldest first. */
  prefix: number[];
}

/** One level of the depth-first search. */
interface Frame {
  state: number;
  /** Op placed to reach this frame; -1 at the root. */
  chosen: number;
  /** Ops that may go next, definite ones first. */
  candidates: number[];
  next: number;
  /** Definite op with the earliest pending return. */
  blocker: number;
  /** Lowest definite op id (so the earliest return) not placed while this frame is on top. */
  lowestUnplaced: number;
  /** Highest placed definite op id, -1 if none. */
  highestDefinite: number;
}

type KeyVerdict =
  | { kind: "ok" }
  | { kind: "fail"; message: string }
  | { kind: "inconclusive"; message: string };

/**
 * Checks that `history` is linearizable against the ringkv key-value model,
 * key by key; on failure names the key and the window of ops that cannot be
 * ordered. Throws on malformed ops (bad outcome for the op, missing value...).
 */
export function checkLinearizable(
  history: readonly HistoryOp[],
  options: CheckOptions = {},
): CheckResult {
  const maxStates = options.maxStates ?? DEFAULT_MAX_STATES;
  if (!Number.isInteger(maxStates) || maxStates < 1) {
    throw new RangeError(`maxStates must be a positive integer, got ${maxStates}`);
  }
  const byKey = new Map<string, number[]>();
  for (let i = 0; i < history.length; i++) {
    validateOp(history[i], i);
    if (history[i].outcome === "failed") continue;
    let indexes = byKey.get(history[i].key);
    if (indexes === undefined) {
      indexes = [];
      byKey.set(history[i].key, indexes);
    }
    indexes.push(i);
  }
  let keysChecked = 0;
  let opsChecked = 0;
  let inconclusive: { key: string; message: string } | undefined;
  for (const [key, indexes] of byKey) {
    if (indexes.length > MAX_OPS_PER_KEY) {
      throw new RangeError(`key ${JSON.stringify(key)} has ${indexes.length} ops, more than ${MAX_OPS_PER_KEY}`);
    }
    keysChecked++;
    opsChecked += indexes.length;
    const verdict = checkKey(key, history, indexes, maxStates);
    if (verdict.kind === "fail") {
      return { ok: false, key, message: verdict.message, keysChecked, opsChecked };
    }
    if (verdict.kind === "inconclusive" && inconclusive === undefined) {
      inconclusive = { key, message: verdict.message };
    }
  }
  if (inconclusive !== undefined) {
    return { ok: false, inconclusive: true, ...inconclusive, keysChecked, opsChecked };
  }
  return { ok: true, keysChecked, opsChecked };
}

/** Throws when an op cannot be a ringkv client operation; `index` names it. */
function validateOp(op: HistoryOp, index: number): void {
  const where = `history[${index}]`;
  if (typeof op.client !== "string") throw new TypeError(`${where}: client must be a string`);
  if (typeof op.key !== "string") throw new TypeError(`${where}: key must be a string`);
  if (typeof op.start !== "number" || !Number.isFinite(op.start)) {
    throw new TypeError(`${where}: start must be a finite number`);
  }
  if (typeof op.end !== "number" || Number.isNaN(op.end) || op.end < op.start) {
    throw new TypeError(`${where}: end must be a number >= start (Infinity when unknown)`);
  }
  const allowed: Record<HistoryOp["op"], readonly HistoryOp["outcome"][]> = {
    put: ["ok", "unknown", "failed"],
    get: ["ok", "not_found", "unknown", "failed"],
    delete: ["ok", "deleted", "not_found", "unknown", "failed"],
  };
  const outcomes = allowed[op.op];
  if (outcomes === undefined) throw new TypeError(`${where}: op must be put, get or delete, got ${op.op}`);
  if (!outcomes.includes(op.outcome)) {
    throw new TypeError(`${where}: outcome ${op.outcome} is impossible for ${op.op}`);
  }
  if (op.op === "put" && typeof op.value !== "string") throw new TypeError(`${where}: put needs a string value`);
  if (op.op === "get" && op.outcome === "ok" && typeof op.result !== "string") {
    throw new TypeError(`${where}: get with outcome ok needs a string result`);
  }
  const definite = op.outcome !== "unknown" && op.outcome !== "failed";
  if (definite && !Number.isFinite(op.end)) {
    throw new TypeError(`${where}: a ${op.outcome} op must have a finite end`);
  }
}

/** Runs the search for one key's sub-history (`indexes` into `history`, failed ops excluded). */
function checkKey(
  key: string,
  history: readonly HistoryOp[],
  indexes: readonly number[],
  maxStates: number,
): KeyVerdict {
  const unwritten = findUnwrittenRead(key, history, indexes);
  if (unwritten !== undefined) return { kind: "fail", message: unwritten };
  const stale = findLostStateRead(key, history, indexes);
  if (stale !== undefined) return { kind: "fail", message: stale };

  const observed = new Set<string>();
  for (const i of indexes) {
    const h = history[i];
    if (h.op === "get" && h.outcome === "ok") observed.add(h.result!);
  }
  // Values no GET returned all behave alike (present, and unequal to any
  // read), so they share one state: more memo hits, and unknown PUTs of them
  // become interchangeable.
  const values = new Map<string, number>();
  const valueNames: string[] = ["(absent)", UNREAD_VALUE_NAME];
  function intern(value: string): number {
    if (!observed.has(value)) return UNREAD;
    let id = values.get(value);
    if (id === undefined) {
      id = valueNames.length;
      values.set(value, id);
      valueNames.push(value);
    }
    return id;
  }

  // Split definite from unknown ops, dropping unknown ops that cannot matter.
  const definite: number[] = [];
  const unknown: number[] = [];
  for (const i of indexes) if (history[i].outcome !== "unknown") definite.push(i);
  const lastEnds = { deleteFound: -Infinity, notFound: -Infinity };
  for (const i of definite) {
    const h = history[i];
    if (h.outcome === "not_found") lastEnds.notFound = Math.max(lastEnds.notFound, h.end);
    else if (h.op === "delete") lastEnds.deleteFound = Math.max(lastEnds.deleteFound, h.end);
  }
  for (const i of indexes) {
    const h = history[i];
    if (h.outcome !== "unknown") continue;
    if (h.op === "get") continue; // changes nothing, and any reply fits
    if (!unknownMatters(h, lastEnds, observed)) continue;
    unknown.push(i);
  }
  // Definite ops are numbered in return order so that, during the search, the
  // placed ones are a run of set bits followed by a short ragged window:
  // memo keys then stay small.
  definite.sort((a, b) => history[a].end - history[b].end || history[a].start - history[b].start || a - b);
  unknown.sort((a, b) => history[a].start - history[b].start || a - b);

  const ops: KeyOp[] = [];
  for (const i of definite) ops.push(toKeyOp(history[i], i, true, intern));
  for (const i of unknown) ops.push(toKeyOp(history[i], i, false, intern));
  const definiteCount = definite.length;
  if (definiteCount === 0) return { kind: "ok" };

  // For a value with exactly one writer and some readers: the reader that
  // starts last. Between that PUT and this reader only readers of the value
  // can take effect (anything else would show another state, and no other
  // PUT can bring the value back).
  const writers = new Map<number, number>();
  for (const op of ops) {
    if (op.expect === "put" && op.value !== UNREAD) writers.set(op.value, (writers.get(op.value) ?? 0) + 1);
  }
  const lastReader = new Map<number, number>();
  for (let op = 0; op < definiteCount; op++) {
    if (ops[op].expect !== "value" || writers.get(ops[op].value) !== 1) continue;
    const previous = lastReader.get(ops[op].value);
    if (previous === undefined || history[ops[op].source].start > history[ops[previous].source].start) {
      lastReader.set(ops[op].value, op);
    }
  }

  // Event list: a call entry per op, a return entry per definite op (unknown
  // ops never return). Ties put calls first: ops that touch are concurrent.
  const entryCount = definiteCount * 2 + unknown.length;
  const entryOp = new Int32Array(entryCount);
  const entryIsCall = new Uint8Array(entryCount);
  const entryTime = new Float64Array(entryCount);
  const callEntry = new Int32Array(ops.length);
  const returnEntry = new Int32Array(ops.length).fill(-1);
  let e = 0;
  for (let op = 0; op < ops.length; op++) {
    const h = history[ops[op].source];
    entryOp[e] = op;
    entryIsCall[e] = 1;
    entryTime[e] = h.start;
    e++;
    if (ops[op].definite) {
      entryOp[e] = op;
      entryIsCall[e] = 0;
      entryTime[e] = h.end;
      e++;
    }
  }
  assert.equal(e, entryCount);
  const order = Array.from({ length: entryCount }, (_, i) => i);
  order.sort((a, b) =>
    entryTime[a] - entryTime[b] || entryIsCall[b] - entryIsCall[a] || entryOp[a] - entryOp[b]
  );
  const head = entryCount;
  const tail = entryCount + 1;
  const next = new Int32Array(entryCount + 2);
  const prev = new Int32Array(entryCount + 2);
  let last = head;
  for (const entry of order) {
    next[last] = entry;
    prev[entry] = last;
    if (entryIsCall[entry] === 1) callEntry[entryOp[entry]] = entry;
    else returnEntry[entryOp[entry]] = entry;
    last = entry;
  }
  next[last] = tail;
  prev[tail] = last;

  function unlink(entry: number): void {
    next[prev[entry]] = next[entry];
    prev[next[entry]] = prev[entry];
  }
  function relink(entry: number): void {
    next[prev[entry]] = entry;
    prev[next[entry]] = entry;
  }
  // Lifts and unlifts nest like a stack (depth-first search), which is what
  // relinking in reverse order needs.
  function lift(op: number): void {
    unlink(callEntry[op]);
    if (returnEntry[op] >= 0) unlink(returnEntry[op]);
  }
  function unlift(op: number): void {
    if (returnEntry[op] >= 0) relink(returnEntry[op]);
    relink(callEntry[op]);
  }

  const words = Math.ceil(ops.length / 32);
  const placed = new Uint32Array(words);
  function isPlaced(op: number): boolean {
    return (placed[op >>> 5] & (1 << (op & 31))) !== 0;
  }
  function setBit(op: number): void {
    placed[op >>> 5] |= 1 << (op & 31);
  }
  function clearBit(op: number): void {
    placed[op >>> 5] &= ~(1 << (op & 31));
  }

  // Readers of each value not yet placed: once none is left, the value is
  // indistinguishable from any other unread value (see canonical()).
  const unplacedReaders = new Int32Array(valueNames.length);
  for (const op of ops) if (op.expect === "value") unplacedReaders[op.value]++;
  /** Unknown ops placed so far, in order. */
  const placedUnknown: number[] = [];
  function place(op: number): void {
    setBit(op);
    lift(op);
    if (ops[op].expect === "value") unplacedReaders[ops[op].value]--;
    if (!ops[op].definite) placedUnknown.push(op);
  }
  function unplace(op: number): void {
    if (!ops[op].definite) assert.equal(placedUnknown.pop(), op, "unknown ops are unplaced last-in, first-out");
    if (ops[op].expect === "value") unplacedReaders[ops[op].value]++;
    unlift(op);
    clearBit(op);
  }
  /** `state`, or UNREAD when no unplaced GET can tell its value from any other. */
  function canonical(state: number): number {
    return state > UNREAD && unplacedReaders[state] === 0 ? UNREAD : state;
  }

  // A configuration is memoised as a key, which must match exactly (the
  // state and the placed definite ops: the non-zero bitset words past the run
  // of full ones, up to the highest placed one), plus the unknown ops it
  // placed. Unknown ops may be left out, so a configuration that placed fewer
  // of them covers every completion of one that placed more: a visited one
  // with a subset of ours makes ours redundant. Unknown ops are counted by
  // effect (the value, or UNREAD for values no unplaced GET reads, or a
  // DELETE): placed ones all started, so the ones left with one effect are
  // interchangeable.
  const keyBuffer = new Uint16Array(4 + words * 3);
  const boundaryWord = definiteCount >>> 5;
  const boundaryMask = (definiteCount & 31) === 0 ? 0 : (1 << (definiteCount & 31)) - 1;
  function memoKey(state: number, frame: Frame, op: number): string {
    const highDefinite = ops[op].definite ? Math.max(frame.highestDefinite, op) : frame.highestDefinite;
    let first = frame.lowestUnplaced >>> 5;
    while (first < boundaryWord && placed[first] === 0xffffffff) first++;
    let length = 0;
    keyBuffer[length++] = state & 0xffff;
    keyBuffer[length++] = state >>> 16;
    keyBuffer[length++] = first;
    const definiteEnd = highDefinite < 0 ? 0 : (highDefinite >>> 5) + 1;
    for (let w = first; w < definiteEnd; w++) {
      const bits = w === boundaryWord ? placed[w] & boundaryMask : placed[w];
      if (bits === 0) continue;
      keyBuffer[length++] = w;
      keyBuffer[length++] = bits & 0xffff;
      keyBuffer[length++] = bits >>> 16;
    }
    assert.ok(length <= keyBuffer.length, "a memo key fits its buffer (typed arrays drop writes past the end)");
    return String.fromCharCode.apply(null, keyBuffer.subarray(0, length) as unknown as number[]);
  }
  function unknownPlacement(): UnknownPlacement {
    if (placedUnknown.length === 0) return NO_UNKNOWN_PLACED;
    const placement: UnknownPlacement = { unreadPuts: 0, deletes: 0, live: [] };
    for (const u of placedUnknown) {
      if (ops[u].expect === "any_delete") placement.deletes++;
      else if (canonical(ops[u].value) === UNREAD) placement.unreadPuts++;
      else placement.live.push(ops[u].value);
    }
    placement.live.sort((a, b) => a - b);
    return placement;
  }

  // Stamps mark, for the frame being built, the values its definite
  // candidates read or write and the unknown-op effects already offered.
  const readStamp = new Int32Array(valueNames.length);
  const putStamp = new Int32Array(valueNames.length);
  const effectStamp = new Int32Array(valueNames.length);
  let stampNow = 0;
  function makeFrame(state: number, chosen: number, parent: Frame | undefined): Frame {
    stampNow++;
    const candidates: number[] = [];
    const unknownStarted: number[] = [];
    let forced = -1;
    let absentReader = false;
    let deleter = false;
    let entry = next[head];
    while (entry !== tail && entryIsCall[entry] === 1) {
      const op = entryOp[entry];
      entry = next[entry];
      if (!ops[op].definite) {
        unknownStarted.push(op);
        continue;
      }
      candidates.push(op);
      if (forced < 0 && readsOnly(ops[op]) && step(state, ops[op]) !== REJECT) forced = op;
      if (ops[op].expect === "value") readStamp[ops[op].value] = stampNow;
      if (ops[op].expect === "absent") absentReader = true;
      if (ops[op].expect === "deleted") deleter = true;
      if (ops[op].expect === "put") putStamp[canonical(ops[op].value)] = stampNow;
    }
    // Unknown ops go last, so that one is placed only where a later op needs
    // it, and only when the op placed right after it can use it: some valid
    // order, if any exists, places each unknown op that way, because an
    // unknown op whose effect the next op does not use can be left out.
    // An unknown PUT is used by a GET of its value, or by a DELETE that found
    // the key when it was absent; an unknown DELETE by an op that found
    // nothing when the key was present. One that a definite candidate with
    // the same effect could replace is not needed either (place that one now
    // and the unknown one where it was), nor a second one with the same
    // effect (neither has a deadline: they are interchangeable). Just to make
    // the key present, a PUT of a value no remaining GET reads serves as well
    // as any and keeps the others for their readers.
    const presenceNeeded = state === ABSENT && deleter;
    const unreadUnknown = presenceNeeded &&
      unknownStarted.some((op) => ops[op].expect === "put" && canonical(ops[op].value) === UNREAD);
    for (const op of unknownStarted) {
      if (ops[op].expect === "any_delete") {
        // Absent already: nothing to do; a definite DELETE that found the key does the same.
        if (state === ABSENT || !absentReader || deleter) continue;
        if (effectStamp[ABSENT] === stampNow) continue;
        effectStamp[ABSENT] = stampNow;
        candidates.push(op);
        continue;
      }
      const effect = canonical(ops[op].value);
      if (effectStamp[effect] === stampNow || putStamp[effect] === stampNow) continue;
      const readersWait = effect > UNREAD && readStamp[effect] === stampNow;
      const presenceUse = presenceNeeded && (effect === UNREAD || !unreadUnknown);
      if (!readersWait && !presenceUse) continue;
      effectStamp[effect] = stampNow;
      candidates.push(op);
    }
    const blocker = entry === tail ? -1 : entryOp[entry];
    let lowestUnplaced = parent === undefined ? 0 : parent.lowestUnplaced;
    while (lowestUnplaced < definiteCount && isPlaced(lowestUnplaced)) lowestUnplaced++;
    const frame: Frame = {
      state,
      chosen,
      candidates,
      next: 0,
      blocker,
      lowestUnplaced,
      highestDefinite: parent === undefined ? -1 : parent.highestDefinite,
    };
    if (chosen >= 0 && ops[chosen].definite) frame.highestDefinite = Math.max(frame.highestDefinite, chosen);
    // A started op that leaves the state as it is and fits it now can go
    // first without losing any order (moving it earlier breaks no real-time
    // constraint and changes no later reply), so it is the only choice.
    if (forced >= 0) frame.candidates = [forced];
    return frame;
  }

  /**
   * Whether placing PUT `put` now leaves its value's last reader no room:
   * returns an unplaced acknowledged op, not a reader of that value, that
   * returned before the reader started and so would fall between the PUT and
   * the reader; -1 when there is none. `from` is the frame's lowestUnplaced.
   */
  function strandingOp(put: number, from: number): number {
    const reader = lastReader.get(ops[put].value);
    if (reader === undefined) return -1;
    for (let op = from; op < definiteCount; op++) {
      if (isPlaced(op) || op === put) continue;
      if (ops[op].expect === "value" && ops[op].value === ops[put].value) continue;
      // Definite ops are numbered in return order: this one returns first.
      return history[ops[op].source].end < history[ops[reader].source].start ? op : -1;
    }
    return -1;
  }

  // One placement per key is the common case: stored bare, not in an array.
  const memo = new Map<string, UnknownPlacement | UnknownPlacement[]>();
  let explored = 0;
  /** Records the configuration unless a visited one covers it; returns whether it is new. */
  function visit(key: string): boolean {
    const placement = unknownPlacement();
    const seen = memo.get(key);
    if (seen === undefined) {
      memo.set(key, placement);
    } else if (!Array.isArray(seen)) {
      if (covers(seen, placement)) return false;
      memo.set(key, [seen, placement]);
    } else {
      for (const other of seen) if (covers(other, placement)) return false;
      seen.push(placement);
    }
    explored++;
    return true;
  }
  const frames: Frame[] = [makeFrame(ABSENT, -1, undefined)];
  let placedDefinite = 0;
  let deadEnd: DeadEnd | undefined;
  while (placedDefinite < definiteCount) {
    const frame = frames[frames.length - 1];
    assert.ok(frame.blocker >= 0, "a definite op is unplaced, so its return entry is pending");
    if (frame.next < frame.candidates.length) {
      const op = frame.candidates[frame.next++];
      const stepped = step(frame.state, ops[op]);
      if (stepped === REJECT) continue;
      if (ops[op].expect === "put" && strandingOp(op, frame.lowestUnplaced) >= 0) continue;
      place(op);
      const state = canonical(stepped);
      if (!visit(memoKey(state, frame, op))) {
        unplace(op);
        continue;
      }
      if (explored > maxStates) {
        return {
          kind: "inconclusive",
          message: `key ${JSON.stringify(key)}: gave up after ${maxStates} explored states ` +
            `(${ops.length} ops, ${placedDefinite} of ${definiteCount} acknowledged ops placed); raise maxStates`,
        };
      }
      if (ops[op].definite) placedDefinite++;
      frames.push(makeFrame(state, op, frame));
    } else {
      if (deadEnd === undefined || placedDefinite > deadEnd.depth) {
        const prefix = frames.slice(Math.max(1, frames.length - FAILURE_PREFIX_SHOWN)).map((f) => f.chosen);
        deadEnd = {
          depth: placedDefinite,
          state: frame.state,
          unreadValue: frame.state === UNREAD ? lastPutValue(frames) : undefined,
          blocker: frame.blocker,
          candidates: frame.candidates.filter((op) => op !== frame.blocker),
          why: new Map(),
          prefix,
        };
        for (const op of [frame.blocker, ...deadEnd.candidates]) deadEnd.why.set(op, whyNot(op, frame));
      }
      frames.pop();
      if (frames.length === 0) break;
      unplace(frame.chosen);
      if (ops[frame.chosen].definite) placedDefinite--;
    }
  }
  if (placedDefinite === definiteCount) return { kind: "ok" };

  /** Why `op` cannot be placed next from `frame` (on top), or undefined when it can. */
  function whyNot(op: number, frame: Frame): string | undefined {
    const stepped = step(frame.state, ops[op]);
    if (stepped === REJECT) {
      const holds = describeState(frame.state, valueNames, frame.state === UNREAD ? lastPutValue(frames) : undefined);
      return rejectReason(ops[op], holds, valueNames);
    }
    if (ops[op].expect !== "put") return undefined;
    const stranding = strandingOp(op, frame.lowestUnplaced);
    if (stranding < 0) return undefined;
    const reader = lastReader.get(ops[op].value)!;
    return `its value is read by ${describeOp(history, ops[reader].source)}, but ` +
      `${describeOp(history, ops[stranding].source)} returned before that read started, so it would fall in between`;
  }

  /** The value of the last PUT placed on the way to the top frame. */
  function lastPutValue(path: readonly Frame[]): string | undefined {
    for (let f = path.length - 1; f >= 1; f--) {
      const op = ops[path[f].chosen];
      if (op.expect === "put") return history[op.source].value;
    }
    return undefined;
  }
  assert.ok(deadEnd !== undefined, "a failed search passed through a dead end");
  return {
    kind: "fail",
    message: explainDeadEnd(key, history, ops, valueNames, deadEnd, definiteCount),
  };
}

/** Builds the search's view of one op. */
function toKeyOp(h: HistoryOp, source: number, definite: boolean, intern: (value: string) => number): KeyOp {
  switch (h.op) {
    case "put":
      return { source, expect: "put", value: intern(h.value!), definite };
    case "get":
      assert.ok(definite, "unknown GETs are dropped before the search");
      if (h.outcome === "ok") return { source, expect: "value", value: intern(h.result!), definite };
      return { source, expect: "absent", value: ABSENT, definite };
    case "delete":
      if (!definite) return { source, expect: "any_delete", value: ABSENT, definite };
      if (h.outcome === "not_found") return { source, expect: "absent", value: ABSENT, definite };
      return { source, expect: "deleted", value: ABSENT, definite };
  }
}

/** Whether `op` leaves the key as it found it whenever its reply fits (GETs, DELETEs that found nothing). */
function readsOnly(op: KeyOp): boolean {
  return op.definite && (op.expect === "value" || op.expect === "absent");
}

/** The model: the state after `op` from `state`, or REJECT when op's reply is impossible there. */
function step(state: number, op: KeyOp): number {
  switch (op.expect) {
    case "put":
      return op.value;
    case "value":
      return state === op.value ? state : REJECT;
    case "absent":
      return state === ABSENT ? ABSENT : REJECT;
    case "deleted":
      return state !== ABSENT ? ABSENT : REJECT;
    case "any_delete":
      return ABSENT;
  }
}

/**
 * Whether an unknown PUT or DELETE can change the verdict. Dropping one that
 * cannot keeps the search from trying it everywhere. An unknown PUT helps
 * only a GET that returned its value or a DELETE that found the key; an
 * unknown DELETE helps only an op that found the key absent, and only one that
 * ended after the unknown op started. `lastEnds` holds the latest end of an
 * acknowledged DELETE that found the key, and of an op that found nothing.
 */
function unknownMatters(
  h: HistoryOp,
  lastEnds: { deleteFound: number; notFound: number },
  observed: ReadonlySet<string>,
): boolean {
  if (h.op === "put") return observed.has(h.value!) || lastEnds.deleteFound >= h.start;
  assert.equal(h.op, "delete");
  return lastEnds.notFound >= h.start;
}

/** A message when some GET returned a value that no non-failed PUT to the key wrote; else undefined. */
function findUnwrittenRead(key: string, history: readonly HistoryOp[], indexes: readonly number[]): string | undefined {
  const written = new Set<string>();
  for (const i of indexes) if (history[i].op === "put") written.add(history[i].value!);
  for (const i of indexes) {
    const h = history[i];
    if (h.op !== "get" || h.outcome !== "ok" || written.has(h.result!)) continue;
    const failedPut = history.findIndex((f) =>
      f.key === key && f.op === "put" && f.outcome === "failed" && f.value === h.result
    );
    const why = failedPut >= 0
      ? `only a failed PUT wrote it: ${describeOp(history, failedPut)}`
      : "no PUT to this key wrote it";
    return `key ${JSON.stringify(key)} is not linearizable: ${describeOp(history, i)} ` +
      `returned a value never written (${why})`;
  }
  return undefined;
}

/**
 * A message when some acknowledged read (a GET, or a DELETE that found
 * nothing) saw a state that every op able to produce it had definitely lost
 * before the read started; else undefined. This catches stale reads, lost
 * writes and resurrected deletes in O(n log n) with a precise message; the
 * search would find them too, but only after trying every order of the ops
 * before them, which can take very long.
 *
 * The rule: a read of value v needs some PUT of v (for "nothing": a DELETE,
 * or the key's initial absent state) to be the last such op before it. If
 * each candidate w is acknowledged and some acknowledged op c that shows
 * another state (neither reads nor writes v) started after w returned and
 * returned before the read started, c comes between w and the read in every
 * order, whichever w is last: the read cannot see v.
 */
function findLostStateRead(key: string, history: readonly HistoryOp[], indexes: readonly number[]): string | undefined {
  // Tags name states by number (values can be large: no string building).
  const ABSENT_TAG = 0;
  const valueTags = new Map<string, number>();
  function valueTag(value: string): number {
    let tag = valueTags.get(value);
    if (tag === undefined) {
      tag = valueTags.size + 1;
      valueTags.set(value, tag);
    }
    return tag;
  }
  /** The state an acknowledged op reads or leaves: its value's tag, or ABSENT_TAG (GET NOT_FOUND, any DELETE). */
  function tagOf(i: number): number {
    const h = history[i];
    if (h.op === "put") return valueTag(h.value!);
    if (h.op === "get" && h.outcome === "ok") return valueTag(h.result!);
    return ABSENT_TAG;
  }
  const definite = indexes.filter((i) => history[i].outcome !== "unknown");
  definite.sort((a, b) => history[a].start - history[b].start || a - b);
  const tags = new Map<number, number>();
  for (const i of definite) tags.set(i, tagOf(i));
  // Suffix minima of `end` over ops by start: the op that returns first, and
  // the one that returns first among ops tagged differently from it; so "the
  // first to return among ops starting after t, not tagged T" is O(1).
  const bestOp = new Int32Array(definite.length + 1).fill(-1);
  const otherOp = new Int32Array(definite.length + 1).fill(-1);
  const endOf = (i: number) => (i < 0 ? Infinity : history[i].end);
  for (let k = definite.length - 1; k >= 0; k--) {
    const op = definite[k];
    let best = bestOp[k + 1];
    let other = otherOp[k + 1];
    if (history[op].end < endOf(best)) {
      if (best >= 0 && tags.get(best) !== tags.get(op)) other = best;
      best = op;
    } else if (tags.get(op) !== tags.get(best) && history[op].end < endOf(other)) {
      other = op;
    }
    bestOp[k] = best;
    otherOp[k] = other;
  }
  /** The first op to return among acknowledged ops that started after `after` and are not tagged `tag`; -1 if none. */
  function firstOtherAfter(after: number, tag: number): number {
    let low = 0;
    let high = definite.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (history[definite[mid]].start > after) high = mid;
      else low = mid + 1;
    }
    const best = bestOp[low];
    return best >= 0 && tags.get(best) === tag ? otherOp[low] : best;
  }

  /** Start of a producer; -1 stands for the initial absent state, there from the beginning. */
  function startOf(w: number): number {
    return w === -1 ? -Infinity : history[w].start;
  }

  // Per state: the ops that can produce it (-1: the initial absent state) and its readers.
  const producers = new Map<number, number[]>([[ABSENT_TAG, [-1]]]);
  const readers = new Map<number, number[]>();
  for (const i of indexes) {
    const h = history[i];
    let produces: number | undefined;
    let reads: number | undefined;
    if (h.op === "put") produces = valueTag(h.value!);
    else if (h.op === "delete" && h.outcome !== "not_found") produces = ABSENT_TAG;
    else if (h.op === "get" && h.outcome === "ok") reads = valueTag(h.result!);
    else if (h.outcome === "not_found") reads = ABSENT_TAG;
    if (produces !== undefined) {
      if (!producers.has(produces)) producers.set(produces, []);
      producers.get(produces)!.push(i);
    }
    if (reads !== undefined) {
      if (!readers.has(reads)) readers.set(reads, []);
      readers.get(reads)!.push(i);
    }
  }
  for (const [tag, tagReaders] of readers) {
    const candidates = producers.get(tag);
    if (candidates === undefined) continue; // a value never written: findUnwrittenRead's case
    // Producers by start, with prefix maxima of the moment each is surely
    // lost (Infinity for an unknown op: it may take effect any time later).
    const byStart = candidates.slice().sort((a, b) => startOf(a) - startOf(b));
    const lostAt: number[] = [];
    const lostProducer: number[] = [];
    const lostBy: number[] = [];
    for (let k = 0; k < byStart.length; k++) {
      const w = byStart[k];
      const surely = w === -1 || history[w].outcome !== "unknown";
      const by = surely ? firstOtherAfter(w === -1 ? -Infinity : history[w].end, tag) : -1;
      const at = surely ? endOf(by) : Infinity;
      if (k === 0 || at > lostAt[k - 1]) {
        lostAt.push(at);
        lostProducer.push(w);
        lostBy.push(by);
      } else {
        lostAt.push(lostAt[k - 1]);
        lostProducer.push(lostProducer[k - 1]);
        lostBy.push(lostBy[k - 1]);
      }
    }
    for (const r of tagReaders) {
      // Producers that could take effect before the read: started by its end.
      let low = 0;
      let high = byStart.length;
      while (low < high) {
        const mid = (low + high) >>> 1;
        if (startOf(byStart[mid]) <= history[r].end) low = mid + 1;
        else high = mid;
      }
      if (low === 0) {
        return `key ${JSON.stringify(key)} is not linearizable: ${describeOp(history, r)} returned a value ` +
          `before any PUT of it started: ${describeOp(history, byStart[0])}`;
      }
      if (lostAt[low - 1] >= history[r].start) continue;
      const w = lostProducer[low - 1];
      const c = lostBy[low - 1];
      assert.ok(c >= 0, "a state lost at a finite time was lost by some op");
      const lines = [`key ${JSON.stringify(key)} is not linearizable: `];
      if (tag === ABSENT_TAG) {
        lines[0] += "a read found nothing, but the key held a value.";
        lines.push(`  the read:`, `    ${describeOp(history, r)}`);
        lines.push(`  the last way the key could have become absent (any other was undone earlier):`);
        lines.push(`    ${w === -1 ? "its initial state" : describeOp(history, w)}`);
        lines.push(`  then this op, which started after that and returned before the read started, wrote or saw a value:`);
      } else {
        lines[0] += "a read returned a value that had been overwritten.";
        lines.push(`  the read:`, `    ${describeOp(history, r)}`);
        lines.push(
          low === 1
            ? `  the only PUT of that value that could precede it:`
            : `  the PUT of that value overwritten last (any other was overwritten earlier):`,
        );
        lines.push(`    ${describeOp(history, w)}`);
        lines.push(`  then this op, which started after that PUT returned and returned before the read started, changed or saw another state:`);
      }
      lines.push(`    ${describeOp(history, c)}`);
      return lines.join("\n");
    }
  }
  return undefined;
}

/** Explains the deepest dead end of a failed search. */
function explainDeadEnd(
  key: string,
  history: readonly HistoryOp[],
  ops: readonly KeyOp[],
  valueNames: readonly string[],
  deadEnd: DeadEnd,
  definiteCount: number,
): string {
  const holds = describeState(deadEnd.state, valueNames, deadEnd.unreadValue);
  const lines: string[] = [];
  lines.push(
    `key ${JSON.stringify(key)} is not linearizable: the longest valid order places ` +
      `${deadEnd.depth} of ${definiteCount} acknowledged ops, then no op fits.`,
  );
  if (deadEnd.prefix.length === 0) {
    lines.push(`  nothing placed yet; the key starts absent`);
  } else {
    lines.push(`  last ops of that order (oldest first), after which the key ${holds}:`);
    for (const op of deadEnd.prefix) lines.push(`    ${describeOp(history, ops[op].source)}`);
  }
  const blocker = ops[deadEnd.blocker];
  const blockerEnd = history[blocker.source].end;
  lines.push(
    `  the unplaced op that returned first (at ${blockerEnd}); it must take effect before every op that started after it returned:`,
  );
  lines.push(`    ${describeOp(history, blocker.source)}`);
  lines.push(`      ${explainWhy(deadEnd.why.get(deadEnd.blocker))}`);
  if (deadEnd.candidates.length > 0) {
    lines.push(`  the other ops that could take effect before it:`);
    for (const op of deadEnd.candidates.slice(0, FAILURE_CANDIDATES_SHOWN)) {
      lines.push(`    ${describeOp(history, ops[op].source)}`);
      lines.push(`      ${explainWhy(deadEnd.why.get(op))}`);
    }
    if (deadEnd.candidates.length > FAILURE_CANDIDATES_SHOWN) {
      lines.push(`    ... and ${deadEnd.candidates.length - FAILURE_CANDIDATES_SHOWN} more`);
    }
  }
  return lines.join("\n");
}

/** One line on a candidate of a dead end. */
function explainWhy(why: string | undefined): string {
  return why === undefined ? "fits here, but every way on from it ends in a dead end" : `cannot go now: ${why}`;
}

/** Why `op`'s reply is impossible when the key `holds` (see describeState). */
function rejectReason(op: KeyOp, holds: string, valueNames: readonly string[]): string {
  switch (op.expect) {
    case "value":
      return `it read ${JSON.stringify(valueNames[op.value])} but the key ${holds}`;
    case "absent":
      return `it found nothing but the key ${holds}`;
    case "deleted":
      return `it deleted the key but the key ${holds}`;
    case "put":
    case "any_delete":
      assert.fail("PUTs and unknown DELETEs always fit");
  }
}

/** The key's state in words: `is absent`, `holds "v"`. */
function describeState(state: number, valueNames: readonly string[], unreadValue?: string): string {
  if (state === ABSENT) return "is absent";
  if (state === UNREAD) {
    return unreadValue === undefined ? `holds ${UNREAD_VALUE_NAME}` : `holds ${JSON.stringify(unreadValue)}`;
  }
  return `holds ${JSON.stringify(valueNames[state])}`;
}

/** One op as a readable line: `#index client OP key [value] -> reply [start..end]`. */
function describeOp(history: readonly HistoryOp[], index: number): string {
  const h = history[index];
  const request = h.op === "put"
    ? `PUT ${h.key} ${JSON.stringify(h.value)}`
    : `${h.op.toUpperCase()} ${h.key}`;
  let reply: string;
  switch (h.outcome) {
    case "ok":
      reply = h.op === "get" ? `VALUE ${JSON.stringify(h.result)}` : h.op === "put" ? "OK" : "DELETED";
      break;
    case "deleted":
      reply = "DELETED";
      break;
    case "not_found":
      reply = "NOT_FOUND";
      break;
    case "unknown":
      reply = "? (unknown outcome)";
      break;
    case "failed":
      reply = "failed";
      break;
  }
  const end = Number.isFinite(h.end) && h.outcome !== "unknown" ? String(h.end) : "∞";
  return `#${index} ${h.client} ${request} -> ${reply} [${h.start}..${end}]`;
}
