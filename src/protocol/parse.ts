/**
 * Turns a {@linkcode Frame} into a {@linkcode Request}: the plain line
 * dialect, JSON lines and RESP2 arrays all end up as the same data. Pure: no
 * I/O, no state. Anything that does not parse becomes an `INVALID` request
 * carrying the error to answer, so every frame gets exactly one reply.
 *
 * @module
 */

import { isUtf8 } from "node:buffer";
import assert from "node:assert/strict";
import { DEFAULT_MAX_LINE } from "./framer.ts";
import type { Frame } from "./framer.ts";
import type { Dialect, ErrorCode, Request } from "./types.ts";

/** Peer-only command words; a client that is not an authenticated peer gets ERR FORBIDDEN for them. */
export const PEER_COMMANDS: readonly string[] = ["AUTH", "REPLICATE", "SNAPSHOT", "FWD"];

/** Longest key, in UTF-8 bytes. */
export const MAX_KEY_BYTES = 1024;

/** Most keys one EXISTS may name (the same bound as a RESP array's arguments). */
export const MAX_EXISTS_KEYS = 1024;

/** Longest part of an unknown command word quoted back in its error, in characters. */
export const MAX_QUOTED_WORD_CHARS = 64;

/** Options for {@linkcode parseFrame}. */
export interface ParseOptions {
  /** The framer's limit, quoted in the TOO_LARGE message. Defaults to 1 MiB (1_048_576). */
  maxLine?: number;
}

/** Commands that take no key; the same in every dialect. */
type NoKeyCommand = "PING" | "HELP" | "INFO" | "RING" | "QUIT" | "READONLY" | "READWRITE";

/** What a command word means once upper-cased; aliases resolved. */
type Verb =
  | { kind: "put" }
  | { kind: "get" }
  | { kind: "delete" }
  | { kind: "exists" }
  | { kind: "nokey"; command: NoKeyCommand }
  | { kind: "peer"; name: string };

const VERBS: ReadonlyMap<string, Verb> = new Map<string, Verb>([
  ["PUT", { kind: "put" }],
  ["SET", { kind: "put" }],
  ["GET", { kind: "get" }],
  ["DELETE", { kind: "delete" }],
  ["DEL", { kind: "delete" }],
  ["EXISTS", { kind: "exists" }],
  ["PING", { kind: "nokey", command: "PING" }],
  ["HELP", { kind: "nokey", command: "HELP" }],
  ["INFO", { kind: "nokey", command: "INFO" }],
  ["RING", { kind: "nokey", command: "RING" }],
  ["QUIT", { kind: "nokey", command: "QUIT" }],
  ["READONLY", { kind: "nokey", command: "READONLY" }],
  ["READWRITE", { kind: "nokey", command: "READWRITE" }],
  ...PEER_COMMANDS.map((name): [string, Verb] => [name, { kind: "peer", name }]),
]);

/** Longest command word worth looking up (longer words are unknown for sure). */
const MAX_VERB_BYTES = 16;

const SPACE = 0x20;
const BRACE = 0x7b;
const EMPTY = Buffer.alloc(0);

/**
 * Any Unicode White_Space, C0 controls (with space), DEL, C1 controls (with
 * U+00A0), and the other White_Space code points.
 */
const FORBIDDEN_KEY_CHAR = /[\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Checks a key against the rules shared by every dialect: 1 to
 * {@linkcode MAX_KEY_BYTES} bytes of valid UTF-8, no whitespace and no control
 * character. Returns the error message, or undefined if the key is fine.
 */
export function validateKey(key: string | Buffer): string | undefined {
  if (typeof key !== "string") return keyBytesError(key);
  if (key.length === 0) return "key is empty";
  const bytes = Buffer.byteLength(key, "utf8");
  if (bytes > MAX_KEY_BYTES) return `key is ${bytes} bytes; the limit is ${MAX_KEY_BYTES}`;
  if (LONE_SURROGATE.test(key)) return "key is not valid UTF-8 (it holds a lone surrogate)";
  if (FORBIDDEN_KEY_CHAR.test(key)) return "key contains whitespace or a control character";
  return undefined;
}

/** {@linkcode validateKey} for bytes, with a fast path for printable ASCII keys. */
function keyBytesError(bytes: Buffer): string | undefined {
  if (bytes.length === 0) return "key is empty";
  if (bytes.length > MAX_KEY_BYTES) return `key is ${bytes.length} bytes; the limit is ${MAX_KEY_BYTES}`;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b <= SPACE || b >= 0x7f) {
      if (!isUtf8(bytes)) return "key is not valid UTF-8";
      if (FORBIDDEN_KEY_CHAR.test(bytes.toString("utf8"))) return "key contains whitespace or a control character";
      return undefined;
    }
  }
  return undefined;
}

/**
 * Parses one frame into a request. Never throws on client input: what does
 * not parse becomes `{ command: "INVALID", code, message }`.
 */
export function parseFrame(frame: Frame, options: ParseOptions = {}): Request {
  switch (frame.kind) {
    case "line":
      assert(frame.bytes.length > 0, "the framer never emits an empty line");
      return frame.bytes[0] === BRACE ? parseJson(frame.bytes) : parseLine(frame.bytes);
    case "resp":
      return parseResp(frame.args);
    case "too_large": {
      const maxLine = options.maxLine ?? DEFAULT_MAX_LINE;
      return invalid(
        frame.dialect,
        "TOO_LARGE",
        `request is longer than ${maxLine} bytes (--max-line); it was discarded`,
      );
    }
    case "resp_error":
      return invalid("resp", "BAD_REQUEST", frame.message);
    default: {
      const never: never = frame;
      throw new Error(`unknown frame ${JSON.stringify(never)}`);
    }
  }
}

function invalid(dialect: Dialect, code: ErrorCode, message: string): Request {
  return { dialect, command: "INVALID", code, message };
}

/**
 * The upper-cased command word if it is short printable ASCII, else
 * undefined. Only ASCII is upper-cased, so no exotic character (ß → SS)
 * can turn into a command name.
 */
function verbName(word: Buffer): string | undefined {
  if (word.length === 0 || word.length > MAX_VERB_BYTES) return undefined;
  let name = "";
  for (let i = 0; i < word.length; i++) {
    let b = word[i];
    if (b <= SPACE || b >= 0x7f) return undefined;
    if (b >= 0x61 && b <= 0x7a) b -= 0x20;
    name += String.fromCharCode(b);
  }
  return name;
}

/** The error for a command word that names no command. */
function unknownCommand(dialect: Dialect, word: Buffer): Request {
  if (!isUtf8(word)) return invalid(dialect, "BAD_REQUEST", "command is not valid UTF-8");
  return invalid(dialect, "UNKNOWN_COMMAND", `unknown command '${printable(word.toString("utf8"))}' (send HELP for the list)`);
}

/**
 * `text` made safe to quote on one line: at most MAX_QUOTED_WORD_CHARS
 * characters, controls and whitespace other than space escaped.
 */
function printable(text: string): string {
  const chars = Array.from(text);
  const shown = chars.slice(0, MAX_QUOTED_WORD_CHARS).map((c) => {
    if (c === " " || !FORBIDDEN_KEY_CHAR.test(c)) return c;
    const code = c.codePointAt(0)!;
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u{${code.toString(16)}}`;
  });
  return shown.join("") + (chars.length > MAX_QUOTED_WORD_CHARS ? "..." : "");
}

// ---------------------------------------------------------------- plain line

/** Index of the first byte at or after `from` that is not a space. */
function skipSpaces(bytes: Buffer, from: number): number {
  let i = from;
  while (i < bytes.length && bytes[i] === SPACE) i++;
  return i;
}

/** End of the word that starts at `from`: the next space, or the end. */
function wordEnd(bytes: Buffer, from: number): number {
  const sp = bytes.indexOf(SPACE, from);
  return sp === -1 ? bytes.length : sp;
}

/** Parses a key's bytes, or gives the INVALID request to answer. */
function keyOf(dialect: Dialect, bytes: Buffer): string | Request {
  const error = keyBytesError(bytes);
  if (error !== undefined) return invalid(dialect, "BAD_REQUEST", error);
  return bytes.toString("utf8");
}

function parseLine(line: Buffer): Request {
  const dialect: Dialect = "line";
  const wordStop = wordEnd(line, 0);
  if (wordStop === 0) return invalid(dialect, "BAD_REQUEST", "request starts with a space; expected a command word");
  const word = line.subarray(0, wordStop);
  const name = verbName(word);
  const verb = name === undefined ? undefined : VERBS.get(name);
  if (verb === undefined || name === undefined) return unknownCommand(dialect, word);

  switch (verb.kind) {
    case "put": {
      const keyStart = skipSpaces(line, wordStop);
      const keyStop = wordEnd(line, keyStart);
      if (keyStart === line.length) return invalid(dialect, "BAD_REQUEST", `usage: ${name} <key> <value>`);
      const key = keyOf(dialect, line.subarray(keyStart, keyStop));
      if (typeof key !== "string") return key;
      if (keyStop === line.length) {
        return invalid(dialect, "BAD_REQUEST", `${name} needs a value after the key (usage: ${name} <key> <value>)`);
      }
      // Everything after the single space that follows the key, byte for byte.
      return { dialect, command: "PUT", key, value: line.subarray(keyStop + 1) };
    }
    case "get":
    case "delete": {
      const keyStart = skipSpaces(line, wordStop);
      if (keyStart === line.length) return invalid(dialect, "BAD_REQUEST", `usage: ${name} <key>`);
      const keyStop = wordEnd(line, keyStart);
      if (skipSpaces(line, keyStop) !== line.length) {
        return invalid(dialect, "BAD_REQUEST", `${name} takes exactly one key (usage: ${name} <key>)`);
      }
      const key = keyOf(dialect, line.subarray(keyStart, keyStop));
      if (typeof key !== "string") return key;
      return verb.kind === "get" ? { dialect, command: "GET", key } : { dialect, command: "DELETE", key };
    }
    case "exists": {
      const keys: string[] = [];
      let at = skipSpaces(line, wordStop);
      while (at < line.length) {
        if (keys.length === MAX_EXISTS_KEYS) {
          return invalid(dialect, "BAD_REQUEST", `EXISTS takes at most ${MAX_EXISTS_KEYS} keys`);
        }
        const stop = wordEnd(line, at);
        const key = keyOf(dialect, line.subarray(at, stop));
        if (typeof key !== "string") return key;
        keys.push(key);
        at = skipSpaces(line, stop);
      }
      if (keys.length === 0) return invalid(dialect, "BAD_REQUEST", "usage: EXISTS <key> [<key> ...]");
      return { dialect, command: "EXISTS", keys };
    }
    case "nokey": {
      // PING may carry a message (ignored); the others take no arguments.
      if (verb.command !== "PING" && skipSpaces(line, wordStop) !== line.length) {
        return invalid(dialect, "BAD_REQUEST", `${name} takes no arguments`);
      }
      return { dialect, command: verb.command };
    }
    case "peer":
      return {
        dialect,
        command: "PEER",
        name: verb.name,
        rest: wordStop < line.length ? line.subarray(wordStop + 1) : EMPTY,
      };
    default: {
      const never: never = verb;
      throw new Error(`unknown verb ${JSON.stringify(never)}`);
    }
  }
}

// ---------------------------------------------------------------- JSON line

function parseJson(line: Buffer): Request {
  const dialect: Dialect = "json";
  if (!isUtf8(line)) return invalid(dialect, "BAD_REQUEST", "invalid JSON: not valid UTF-8");
  let parsed: unknown;
  try {
    parsed = JSON.parse(line.toString("utf8"));
  } catch (error) {
    return invalid(dialect, "BAD_REQUEST", `invalid JSON: ${(error as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return invalid(dialect, "BAD_REQUEST", "invalid JSON: a request must be an object");
  }
  const request = parsed as Record<string, unknown>;

  let verb: Verb | undefined;
  if (request.op === undefined) {
    verb = VERBS.get(request.value !== undefined ? "PUT" : "GET");
  } else if (typeof request.op === "string") {
    // Only printable ASCII can name a command: "ſet".toUpperCase() is "SET".
    verb = /^[\x21-\x7e]{1,16}$/.test(request.op) ? VERBS.get(request.op.toUpperCase()) : undefined;
  } else {
    return invalid(dialect, "BAD_REQUEST", `op must be a string, got ${jsonType(request.op)}`);
  }
  if (verb === undefined) {
    return invalid(dialect, "UNKNOWN_COMMAND", `unknown op '${printable(String(request.op))}' (send HELP for the list)`);
  }

  switch (verb.kind) {
    case "put": {
      const key = jsonKey(request.key);
      if (typeof key !== "string") return key;
      if (typeof request.value !== "string") {
        return invalid(dialect, "BAD_REQUEST", `value must be a string, got ${jsonType(request.value)}`);
      }
      if (LONE_SURROGATE.test(request.value)) {
        return invalid(dialect, "BAD_REQUEST", "value is not valid Unicode (it holds a lone surrogate)");
      }
      return { dialect, command: "PUT", key, value: Buffer.from(request.value, "utf8") };
    }
    case "get":
    case "delete": {
      const key = jsonKey(request.key);
      if (typeof key !== "string") return key;
      return verb.kind === "get" ? { dialect, command: "GET", key } : { dialect, command: "DELETE", key };
    }
    case "exists": {
      // {"op":"EXISTS","keys":["a","b"]} or {"op":"EXISTS","key":"a"}.
      const raw = request.keys !== undefined ? request.keys : request.key !== undefined ? [request.key] : [];
      if (!Array.isArray(raw) || raw.length === 0) {
        return invalid(dialect, "BAD_REQUEST", "EXISTS needs key (a string) or keys (a non-empty array of strings)");
      }
      if (raw.length > MAX_EXISTS_KEYS) {
        return invalid(dialect, "BAD_REQUEST", `EXISTS takes at most ${MAX_EXISTS_KEYS} keys`);
      }
      const keys: string[] = [];
      for (const item of raw) {
        const key = jsonKey(item);
        if (typeof key !== "string") return key;
        keys.push(key);
      }
      return { dialect, command: "EXISTS", keys };
    }
    case "nokey":
      return { dialect, command: verb.command };
    case "peer":
      // Peers speak the line dialect; the server refuses this one.
      return { dialect, command: "PEER", name: verb.name, rest: EMPTY };
    default: {
      const never: never = verb;
      throw new Error(`unknown verb ${JSON.stringify(never)}`);
    }
  }
}

function jsonKey(key: unknown): string | Request {
  if (key === undefined) return invalid("json", "BAD_REQUEST", "key is missing");
  if (typeof key !== "string") return invalid("json", "BAD_REQUEST", `key must be a string, got ${jsonType(key)}`);
  const error = validateKey(key);
  if (error !== undefined) return invalid("json", "BAD_REQUEST", error);
  return key;
}

function jsonType(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

// ---------------------------------------------------------------- RESP

function parseResp(args: Buffer[]): Request {
  const dialect: Dialect = "resp";
  assert(args.length >= 1, "the framer never emits an empty RESP array");
  const word = args[0];
  const name = verbName(word);
  const verb = name === undefined ? undefined : VERBS.get(name);
  if (verb === undefined || name === undefined) return unknownCommand(dialect, word);
  const arity = (): Request => invalid(dialect, "BAD_REQUEST", `wrong number of arguments for '${name}'`);

  switch (verb.kind) {
    case "put": {
      if (name === "SET" && args.length > 3) {
        return invalid(dialect, "BAD_REQUEST", "SET options are not supported");
      }
      if (args.length !== 3) return arity();
      const key = keyOf(dialect, args[1]);
      if (typeof key !== "string") return key;
      return { dialect, command: "PUT", key, value: args[2] };
    }
    case "get": {
      if (args.length !== 2) return arity();
      const key = keyOf(dialect, args[1]);
      if (typeof key !== "string") return key;
      return { dialect, command: "GET", key };
    }
    case "delete": {
      if (args.length > 2) return invalid(dialect, "BAD_REQUEST", `${name} takes exactly one key`);
      if (args.length !== 2) return arity();
      const key = keyOf(dialect, args[1]);
      if (typeof key !== "string") return key;
      return { dialect, command: "DELETE", key };
    }
    case "exists": {
      if (args.length < 2) return arity();
      const keys: string[] = [];
      for (let i = 1; i < args.length; i++) {
        const key = keyOf(dialect, args[i]);
        if (typeof key !== "string") return key;
        keys.push(key);
      }
      return { dialect, command: "EXISTS", keys };
    }
    case "nokey": {
      // PING [message] and INFO [section ...] ignore their arguments, QUIT
      // ignores any (as Redis does); the others take none.
      const command = verb.command;
      const ok = command === "INFO" || command === "QUIT" || (command === "PING" ? args.length <= 2 : args.length === 1);
      if (!ok) return arity();
      return { dialect, command };
    }
    case "peer": {
      const rest: Buffer[] = [];
      for (let i = 1; i < args.length; i++) {
        if (i > 1) rest.push(Buffer.from(" "));
        rest.push(args[i]);
      }
      return { dialect, command: "PEER", name: verb.name, rest: rest.length === 0 ? EMPTY : Buffer.concat(rest) };
    }
    default: {
      const never: never = verb;
      throw new Error(`unknown verb ${JSON.stringify(never)}`);
    }
  }
}
