/**
 * Peer messages as single text lines for the TCP transport:
 * `REPLICATE {"type":"replicate",...}` with entries as compact tuples
 * `[epoch, index, op, key, base64 value]`. JSON escapes every control
 * character, so an encoded line never contains "\n".
 *
 * Decoding validates every field (known type, no unknown fields, strings and
 * their lengths, non-negative safe integers, entry shapes) and throws
 * {@linkcode CodecError} on anything malformed: a peer's garbage must never
 * reach the core, let alone crash the node.
 *
 * @module
 */
import type { EntryOp, LogEntry } from "../storage/entry.ts";
import type { PeerMessage } from "./types.ts";

/** The command word of a peer message line. */
export const MESSAGE_PREFIX = "REPLICATE ";
/** Longest partition or node id accepted, in UTF-16 code units. */
export const MAX_ID_LENGTH = 256;
/** Longest key, in UTF-8 bytes (PROTOCOL.md). */
export const MAX_KEY_BYTES = 1024;
/** Most entries one message may carry. */
export const MAX_ENTRIES_PER_MESSAGE = 65_536;

/** A malformed peer message; the connection that sent it should be told and may be closed. */
export class CodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CodecError";
  }
}

type Json = Record<string, unknown>;

const OPS: Record<string, EntryOp> = { put: "put", delete: "delete", noop: "noop" };
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Is `text` canonical base64 (Buffer.from would silently skip anything else and decode the rest)? */
export function isBase64(text: string): boolean {
  return text.length % 4 === 0 && BASE64.test(text);
}

const EMPTY = Buffer.alloc(0);

/** Encodes `message` as one line (without the trailing "\n"): `REPLICATE <json>`. */
export function encodeMessage(message: PeerMessage): string {
  if (message.type === "replicate" || message.type === "fetch_reply") {
    const entries = message.entries;
    const tuples = new Array<unknown>(entries.length);
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      tuples[i] = [e.epoch, e.index, e.op, e.key, e.value.length === 0 ? "" : e.value.toString("base64")];
    }
    return MESSAGE_PREFIX + JSON.stringify({ ...message, entries: tuples });
  }
  return MESSAGE_PREFIX + JSON.stringify(message);
}

/** Decodes the text after "REPLICATE "; throws {@linkcode CodecError} on anything malformed. */
export function decodeMessage(rest: string): PeerMessage {
  let parsed: unknown;
  try {
    parsed = JSON.parse(rest);
  } catch {
    throw new CodecError("peer message is not JSON");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new CodecError("peer message is not a JSON object");
  }
  const o = parsed as Json;
  const type = o.type;
  switch (type) {
    case "promise":
      fields(o, 5);
      return { type, ...header(o), epoch: int(o, "epoch") };
    case "promise_reply":
      fields(o, 11);
      return {
        type,
        ...header(o),
        epoch: int(o, "epoch"),
        ok: bool(o, "ok"),
        promisedEpoch: int(o, "promisedEpoch"),
        lastEpoch: int(o, "lastEpoch"),
        lastIndex: int(o, "lastIndex"),
        commitIndex: int(o, "commitIndex"),
        firstIndex: int(o, "firstIndex", 1),
      };
    case "fetch":
      fields(o, 7);
      return {
        type,
        ...header(o),
        epoch: int(o, "epoch"),
        fromIndex: int(o, "fromIndex", 1),
        maxEntries: int(o, "maxEntries", 1),
      };
    case "fetch_reply":
      fields(o, 11);
      return {
        type,
        ...header(o),
        epoch: int(o, "epoch"),
        fromIndex: int(o, "fromIndex", 1),
        ok: bool(o, "ok"),
        entries: entries(o),
        lastIndex: int(o, "lastIndex"),
        snapshotNeeded: bool(o, "snapshotNeeded"),
        promisedEpoch: int(o, "promisedEpoch"),
      };
    case "replicate":
      fields(o, 10);
      return {
        type,
        ...header(o),
        epoch: int(o, "epoch"),
        prevEpoch: int(o, "prevEpoch"),
        prevIndex: int(o, "prevIndex"),
        entries: entries(o),
        commitIndex: int(o, "commitIndex"),
        readSeq: int(o, "readSeq"),
      };
    case "replicate_reply":
      fields(o, 10);
      return {
        type,
        ...header(o),
        epoch: int(o, "epoch"),
        ok: bool(o, "ok"),
        matchIndex: int(o, "matchIndex"),
        lastIndex: int(o, "lastIndex"),
        promisedEpoch: int(o, "promisedEpoch"),
        readSeq: int(o, "readSeq"),
      };
    default:
      throw new CodecError(`unknown peer message type ${JSON.stringify(String(type)).slice(0, 40)}`);
  }
}

/** Rejects unknown fields: the count of own keys must be exactly the expected one (each is then read). */
function fields(o: Json, expected: number): void {
  let count = 0;
  for (const _ in o) count++;
  if (count !== expected) throw new CodecError(`${o.type}: expected ${expected} fields, got ${count}`);
}

function header(o: Json): { partition: string; from: string; to: string } {
  return { partition: id(o, "partition"), from: id(o, "from"), to: id(o, "to") };
}

function id(o: Json, name: string): string {
  const value = o[name];
  if (typeof value !== "string" || value.length === 0 || value.length > MAX_ID_LENGTH) {
    throw new CodecError(`${o.type}.${name}: expected a string of 1 to ${MAX_ID_LENGTH} characters`);
  }
  return value;
}

function int(o: Json, name: string, min = 0): number {
  const value = o[name];
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
    throw new CodecError(`${o.type}.${name}: expected an integer >= ${min}`);
  }
  return value;
}

function bool(o: Json, name: string): boolean {
  const value = o[name];
  if (typeof value !== "boolean") throw new CodecError(`${o.type}.${name}: expected true or false`);
  return value;
}

function entries(o: Json): LogEntry[] {
  const list = o.entries;
  if (!Array.isArray(list)) throw new CodecError(`${o.type}.entries: expected an array`);
  if (list.length > MAX_ENTRIES_PER_MESSAGE) {
    throw new CodecError(`${o.type}.entries: more than ${MAX_ENTRIES_PER_MESSAGE} entries`);
  }
  const out = new Array<LogEntry>(list.length);
  for (let i = 0; i < list.length; i++) out[i] = entry(list[i], i);
  return out;
}

function entry(tuple: unknown, i: number): LogEntry {
  if (!Array.isArray(tuple) || tuple.length !== 5) {
    throw new CodecError(`entries[${i}]: expected [epoch, index, op, key, value]`);
  }
  const [epoch, index, opName, key, value] = tuple as unknown[];
  if (typeof epoch !== "number" || !Number.isSafeInteger(epoch) || epoch < 0) {
    throw new CodecError(`entries[${i}].epoch: expected an integer >= 0`);
  }
  if (typeof index !== "number" || !Number.isSafeInteger(index) || index < 1) {
    throw new CodecError(`entries[${i}].index: expected an integer >= 1`);
  }
  const op = typeof opName === "string" ? OPS[opName] : undefined;
  if (op === undefined || !Object.hasOwn(OPS, opName as string)) {
    throw new CodecError(`entries[${i}].op: expected put, delete or noop`);
  }
  if (typeof key !== "string") throw new CodecError(`entries[${i}].key: expected a string`);
  if (op === "noop") {
    if (key.length !== 0) throw new CodecError(`entries[${i}].key: a noop has no key`);
  } else if (key.length === 0 || (key.length * 3 > MAX_KEY_BYTES && Buffer.byteLength(key) > MAX_KEY_BYTES)) {
    throw new CodecError(`entries[${i}].key: expected 1 to ${MAX_KEY_BYTES} bytes`);
  }
  if (typeof value !== "string") throw new CodecError(`entries[${i}].value: expected a base64 string`);
  if (op !== "put" && value.length !== 0) throw new CodecError(`entries[${i}].value: a ${op} has no value`);
  if (!isBase64(value)) {
    throw new CodecError(`entries[${i}].value: invalid base64`);
  }
  return { epoch, index, op, key, value: value.length === 0 ? EMPTY : Buffer.from(value, "base64") };
}
