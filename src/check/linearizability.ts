/**
 * Linearizability checker for ringkv histories.
 *
 * Wing & Gong's search with Lowe's memoisation (the approach of Porcupine and
 * of Knossos' "linear" checker), run per key: each key is an independent
 * register, and linearizability is compositional, so a history is
 * linearizable exactly when every key's sub-history is.
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
const UNREAD_VALUE_NAME = "a value no GET returned";
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

/** The deepest dead end seen, kept to explain a failure. */
interface DeadEnd {
  /** Definite ops placed in the partial order. */
  depth: number;
  state: number;
  /** The actual value when `state` is UNREAD, for the message. */
  unreadValue?: string;
  /** Op whose return ends the window: it has to be placed before anything else. */
  blocker: number;
  candidates: number[];
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
  for (const i of indexes) {
    const h = history[i];
    if (h.outcome !== "unknown") continue;
    if (h.op === "get") continue; // changes nothing, and any reply fits
    if (!unknownMatters(h, history, definite, observed)) continue;
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
  function setBit(op: number): void {
    placed[op >>> 5] |= 1 << (op & 31);
  }
  function clearBit(op: number): void {
    placed[op >>> 5] &= ~(1 << (op & 31));
  }
  function memoKey(state: number): string {
    let first = 0;
    while (first < words && placed[first] === 0xffffffff) first++;
    let memo = String.fromCharCode(state & 0xffff, state >>> 16, first);
    for (let w = first; w < words; w++) {
      const bits = placed[w];
      if (bits !== 0) memo += String.fromCharCode(w, bits & 0xffff, bits >>> 16);
    }
    return memo;
  }

  function makeFrame(state: number, chosen: number): Frame {
    const candidates: number[] = [];
    const unknownCandidates: number[] = [];
    const unknownEffects = new Set<number>();
    let entry = next[head];
    while (entry !== tail && entryIsCall[entry] === 1) {
      const op = entryOp[entry];
      if (ops[op].definite) {
        candidates.push(op);
      } else if (!unknownEffects.has(ops[op].value)) {
        // Two started unknown ops with the same effect are interchangeable
        // (neither has a deadline), so only the earliest is tried: the
        // placed ones of each effect stay a prefix, not any subset.
        unknownEffects.add(ops[op].value);
        unknownCandidates.push(op);
      }
      entry = next[entry];
    }
    // Trying definite ops first places an unknown op only where some later
    // op needs it, instead of at the first chance.
    for (const op of unknownCandidates) candidates.push(op);
    const blocker = entry === tail ? -1 : entryOp[entry];
    return { state, chosen, candidates, next: 0, blocker };
  }

  const memo = new Set<string>();
  const frames: Frame[] = [makeFrame(ABSENT, -1)];
  let placedDefinite = 0;
  let deadEnd: DeadEnd | undefined;
  while (placedDefinite < definiteCount) {
    const frame = frames[frames.length - 1];
    assert.ok(frame.blocker >= 0, "a definite op is unplaced, so its return entry is pending");
    if (frame.next < frame.candidates.length) {
      const op = frame.candidates[frame.next++];
      const state = step(frame.state, ops[op]);
      if (state === REJECT) continue;
      setBit(op);
      const memoized = memoKey(state);
      if (memo.has(memoized)) {
        clearBit(op);
        continue;
      }
      memo.add(memoized);
      if (memo.size > maxStates) {
        return {
          kind: "inconclusive",
          message: `key ${JSON.stringify(key)}: gave up after ${maxStates} explored states ` +
            `(${ops.length} ops, ${placedDefinite} of ${definiteCount} acknowledged ops placed); raise maxStates`,
        };
      }
      lift(op);
      if (ops[op].definite) placedDefinite++;
      frames.push(makeFrame(state, op));
    } else {
      if (deadEnd === undefined || placedDefinite > deadEnd.depth) {
        const prefix = frames.slice(Math.max(1, frames.length - FAILURE_PREFIX_SHOWN)).map((f) => f.chosen);
        deadEnd = {
          depth: placedDefinite,
          state: frame.state,
          unreadValue: frame.state === UNREAD ? lastPutValue(frames) : undefined,
          blocker: frame.blocker,
          candidates: frame.candidates.slice(),
          prefix,
        };
      }
      frames.pop();
      if (frames.length === 0) break;
      unlift(frame.chosen);
      clearBit(frame.chosen);
      if (ops[frame.chosen].definite) placedDefinite--;
    }
  }
  if (placedDefinite === definiteCount) return { kind: "ok" };

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
 * ended after the unknown op started.
 */
function unknownMatters(
  h: HistoryOp,
  history: readonly HistoryOp[],
  definite: readonly number[],
  observed: ReadonlySet<string>,
): boolean {
  if (h.op === "put") {
    if (observed.has(h.value!)) return true;
    return definite.some((i) =>
      history[i].op === "delete" && history[i].outcome !== "not_found" && history[i].end >= h.start
    );
  }
  assert.equal(h.op, "delete");
  return definite.some((i) => history[i].outcome === "not_found" && history[i].end >= h.start);
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
    `  the first unplaced op to return (at ${blockerEnd}, before any other unplaced op started), ` +
      `so it goes next or right after ops overlapping it:`,
  );
  lines.push(`    ${describeOp(history, blocker.source)}`);
  if (step(deadEnd.state, blocker) === REJECT) {
    lines.push(`  but it cannot: ${rejectReason(blocker, holds, valueNames)}`);
  } else {
    lines.push(`  it fits here, but no order of the ops it overlaps leads to a valid history`);
  }
  const others = deadEnd.candidates.filter((op) => op !== deadEnd.blocker);
  if (others.length > 0) {
    lines.push(`  ops that could also go next, each of which leads to a dead end:`);
    for (const op of others.slice(0, FAILURE_CANDIDATES_SHOWN)) {
      lines.push(`    ${describeOp(history, ops[op].source)}`);
    }
    if (others.length > FAILURE_CANDIDATES_SHOWN) {
      lines.push(`    ... and ${others.length - FAILURE_CANDIDATES_SHOWN} more`);
    }
  }
  return lines.join("\n");
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
    return unreadValue === undefined
      ? `holds ${UNREAD_VALUE_NAME}`
      : `holds ${JSON.stringify(unreadValue)} (${UNREAD_VALUE_NAME})`;
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
