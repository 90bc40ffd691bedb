/**
 * Recording client histories for {@linkcode checkLinearizable}: a recorder
 * that turns requests and reply lines into {@linkcode HistoryOp}s, the
 * mapping from protocol replies to outcomes, and a JSONL file format.
 *
 * @module
 */

import { strict as assert } from "node:assert";
import { performance } from "node:perf_hooks";
import type { HistoryOp } from "./linearizability.ts";

/** A request as a client sends it, before its reply is known. */
export interface HistoryRequest {
  client: string;
  op: HistoryOp["op"];
  key: string;
  /** PUT's value. */
  value?: string;
}

/** What a reply says about its request. */
export interface ReplyOutcome {
  outcome: HistoryOp["outcome"];
  /** GET's value when outcome is "ok". */
  result?: string;
}

/** Options for {@linkcode HistoryRecorder}. */
export interface HistoryRecorderOptions {
  /** Monotonic clock in ms. Defaults to `performance.now`. */
  now?: () => number;
  /** Most ops one recorder holds. Defaults to {@linkcode MAX_RECORDED_OPS}. */
  maxOps?: number;
}

/** Default limit on the ops one {@linkcode HistoryRecorder} holds. */
export const MAX_RECORDED_OPS = 10_000_000;

/**
 * Error codes that mean the request never took effect (ERR UNAVAILABLE is
 * "safe to retry"). Every other code, TIMEOUT and INTERNAL included, leaves
 * the outcome unknown: claiming less is never a false alarm.
 */
export const DEFINITE_ERROR_CODES: ReadonlySet<string> = new Set([
  "BAD_REQUEST",
  "UNKNOWN_COMMAND",
  "TOO_LARGE",
  "UNAVAILABLE",
  "FORBIDDEN",
  "NOT_LEADER",
]);

/**
 * Maps one reply line (plain text, or the JSON dialect's object) to the
 * outcome of request `op`. Throws on a reply no ringkv server may send to
 * that op, such as `VALUE x` to a PUT.
 */
export function outcomeOfReply(op: HistoryOp["op"], reply: string): ReplyOutcome {
  const line = reply.endsWith("\r\n") ? reply.slice(0, -2) : reply.endsWith("\n") ? reply.slice(0, -1) : reply;
  if (line.startsWith("{")) return outcomeOfJsonReply(op, line);
  if (line.startsWith("ERR ") || line === "ERR") {
    const code = line.split(" ")[1] ?? "";
    return { outcome: DEFINITE_ERROR_CODES.has(code) ? "failed" : "unknown" };
  }
  if (op === "put" && line === "OK") return { outcome: "ok" };
  if (op === "get" && line.startsWith("VALUE ")) return { outcome: "ok", result: line.slice("VALUE ".length) };
  if (op === "delete" && line === "DELETED") return { outcome: "deleted" };
  if (op !== "put" && line === "NOT_FOUND") return { outcome: "not_found" };
  throw new Error(`reply ${JSON.stringify(reply)} is impossible for ${op.toUpperCase()}`);
}

/** The JSON dialect's half of {@linkcode outcomeOfReply}. */
function outcomeOfJsonReply(op: HistoryOp["op"], line: string): ReplyOutcome {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    throw new Error(`reply ${JSON.stringify(line)} is not valid JSON`);
  }
  const reply = parsed as { status?: unknown; value?: unknown; code?: unknown };
  if (reply.status === "error") {
    const code = typeof reply.code === "string" ? reply.code : "";
    return { outcome: DEFINITE_ERROR_CODES.has(code) ? "failed" : "unknown" };
  }
  if (reply.status === "ok" && op === "get" && typeof reply.value === "string") {
    return { outcome: "ok", result: reply.value };
  }
  if (reply.status === "ok" && op === "put") return { outcome: "ok" };
  if (reply.status === "ok" && op === "delete") return { outcome: "deleted" };
  if (reply.status === "not_found" && op !== "put") return { outcome: "not_found" };
  throw new Error(`reply ${JSON.stringify(line)} is impossible for ${op.toUpperCase()}`);
}

/**
 * Records ops as concurrent clients run them: `invoke` before sending,
 * `complete` with the reply line, `lose` when no reply will come. Ops still
 * pending when the history is taken count as unknown.
 */
export class HistoryRecorder {
  readonly #now: () => number;
  readonly #maxOps: number;
  readonly #ops: HistoryOp[] = [];
  readonly #pending = new Set<number>();

  /** Creates an empty recorder. */
  constructor(options: HistoryRecorderOptions = {}) {
    this.#now = options.now ?? (() => performance.now());
    this.#maxOps = options.maxOps ?? MAX_RECORDED_OPS;
  }

  /** Notes that `request` is being sent now; returns the handle to complete it with. */
  invoke(request: HistoryRequest): number {
    if (this.#ops.length >= this.#maxOps) throw new RangeError(`history holds ${this.#maxOps} ops already`);
    if (request.op === "put" && typeof request.value !== "string") throw new TypeError("a put needs a value");
    const handle = this.#ops.length;
    const op: HistoryOp = {
      client: request.client,
      op: request.op,
      key: request.key,
      start: this.#now(),
      end: Infinity,
      outcome: "unknown",
    };
    if (request.op === "put") op.value = request.value;
    this.#ops.push(op);
    this.#pending.add(handle);
    return handle;
  }

  /** Records the reply line to the request behind `handle` (see {@linkcode outcomeOfReply}). */
  complete(handle: number, reply: string): void {
    const op = this.#take(handle);
    const { outcome, result } = outcomeOfReply(op.op, reply);
    // A timed-out op may still take effect later: its end stays Infinity.
    if (outcome !== "unknown") op.end = this.#now();
    op.outcome = outcome;
    if (result !== undefined) op.result = result;
    assert.ok(op.end >= op.start, "the clock is monotonic");
  }

  /** Records that the request behind `handle` will get no reply (dropped connection, client timeout). */
  lose(handle: number): void {
    this.#take(handle);
  }

  /** Copies of the ops recorded so far, in invocation order. */
  history(): HistoryOp[] {
    return this.#ops.map((op) => ({ ...op }));
  }

  #take(handle: number): HistoryOp {
    if (!this.#pending.delete(handle)) throw new Error(`handle ${handle} is not pending`);
    return this.#ops[handle];
  }
}

/** Serialises a history as JSON lines, one op a line; `end: Infinity` is written as `null`. */
export function formatHistoryJsonl(history: readonly HistoryOp[]): string {
  let text = "";
  for (const op of history) {
    text += JSON.stringify({ ...op, end: Number.isFinite(op.end) ? op.end : null }) + "\n";
  }
  return text;
}

/** Parses what {@linkcode formatHistoryJsonl} wrote; blank lines are skipped, a malformed line throws. */
export function parseHistoryJsonl(text: string): HistoryOp[] {
  const history: HistoryOp[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "") continue;
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(line) as Record<string, unknown>;
    } catch {
      throw new Error(`line ${i + 1}: not valid JSON`);
    }
    if (typeof parsed !== "object" || parsed === null) throw new Error(`line ${i + 1}: not an object`);
    const { client, op, key, value, start, end, outcome, result } = parsed;
    if (typeof client !== "string" || typeof key !== "string" || typeof start !== "number") {
      throw new Error(`line ${i + 1}: client, key and start are required`);
    }
    if (op !== "put" && op !== "get" && op !== "delete") throw new Error(`line ${i + 1}: bad op`);
    if (!["ok", "not_found", "deleted", "unknown", "failed"].includes(outcome as string)) {
      throw new Error(`line ${i + 1}: bad outcome`);
    }
    if (end !== null && typeof end !== "number") throw new Error(`line ${i + 1}: end must be a number or null`);
    const entry: HistoryOp = {
      client,
      op,
      key,
      start,
      end: end === null ? Infinity : end,
      outcome: outcome as HistoryOp["outcome"],
    };
    if (typeof value === "string") entry.value = value;
    if (typeof result === "string") entry.result = result;
    history.push(entry);
  }
  return history;
}
