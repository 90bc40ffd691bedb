/**
 * Turns a {@linkcode Reply} into the bytes of its request's dialect: plain
 * lines, JSON lines or RESP2. Pure. Every reply is exactly one line (RESP:
 * one reply value), so pipelined replies stay one per request.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Dialect, ErrorCode, Reply, Request } from "./types.ts";

/** The answer to HELP: one line listing the commands. */
export const HELP_TEXT: string = "commands: PUT/SET <key> <value> | GET <key> | DELETE/DEL <key> | " +
  "EXISTS <key> [<key> ...] | PING | INFO | RING | READONLY | READWRITE | HELP | QUIT" +
  ' (also as JSON lines, {"op":"PUT","key":"k","value":"v"}, and RESP2)';

/** The line-dialect answer to GET when the value cannot travel on one line. */
export const LINE_BREAK_IN_VALUE_MESSAGE = "value contains a line break; read it with the JSON or RESP dialect";

const LF = 0x0a;
const CR = 0x0d;
const DOLLAR = 0x24;
const DIGIT_0 = 0x30;

// Constant replies, encoded once. Callers only write them to sockets.
const LINE_OK = Buffer.from("OK\n");
const LINE_NOT_FOUND = Buffer.from("NOT_FOUND\n");
const LINE_DELETED = Buffer.from("DELETED\n");
const LINE_PONG = Buffer.from("PONG\n");
const LINE_BYE = Buffer.from("BYE\n");
const LINE_VALUE_PREFIX = Buffer.from("VALUE ");
const JSON_OK = Buffer.from('{"status":"ok"}\n');
const JSON_NOT_FOUND = Buffer.from('{"status":"not_found"}\n');
const JSON_PONG = Buffer.from('{"status":"ok","value":"PONG"}\n');
const RESP_OK = Buffer.from("+OK\r\n");
const RESP_PONG = Buffer.from("+PONG\r\n");
const RESP_NULL = Buffer.from("$-1\r\n");
const RESP_ZERO = Buffer.from(":0\r\n");
const RESP_ONE = Buffer.from(":1\r\n");

/**
 * Encodes `reply` in the dialect of `request` (the command matters too: RESP
 * answers DELETE with `:1` / `:0`). The returned Buffer may be shared between
 * calls: write it, do not modify it.
 */
export function encodeReply(reply: Reply, request: Request): Buffer {
  switch (request.dialect) {
    case "line":
      return encodeLine(reply);
    case "json":
      return encodeJson(reply);
    case "resp":
      return encodeResp(reply, request);
    default: {
      const never: never = request.dialect;
      throw new Error(`unknown dialect ${String(never)}`);
    }
  }
}

/** A reply and the request it answers (the dialect and command matter). */
export interface ReplyItem {
  reply: Reply;
  request: Request;
}

/**
 * Encodes a run of replies into ONE buffer: exactly the bytes of
 * `Buffer.concat(items.map(({ reply, request }) => encodeReply(reply, request)))`,
 * but value replies in RESP and plain lines (the bulk of a pipelined GET
 * load) are written straight into it instead of into a buffer of their own
 * that is then copied again. Like encodeReply's, the buffer may be shared:
 * write it, do not modify it.
 */
export function encodeReplies(items: readonly ReplyItem[]): Buffer {
  // One reply: its own buffer already is the whole output (often a shared constant).
  if (items.length === 1) return encodeReply(items[0].reply, items[0].request);
  // Pass 1: sizes. Replies without a fast path are encoded here, once.
  const encoded: (Buffer | undefined)[] = new Array(items.length);
  let size = 0;
  for (let i = 0; i < items.length; i++) {
    const { reply, request } = items[i];
    const direct = reply.type === "value" ? directValueSize(reply.value, request.dialect) : 0;
    if (direct > 0) {
      size += direct;
    } else {
      const bytes = encodeReply(reply, request);
      encoded[i] = bytes;
      size += bytes.length;
    }
  }
  // Pass 2: bytes.
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (let i = 0; i < items.length; i++) {
    const bytes = encoded[i];
    if (bytes !== undefined) {
      out.set(bytes, at);
      at += bytes.length;
      continue;
    }
    const { reply, request } = items[i];
    const value = (reply as { value: Buffer }).value;
    at = request.dialect === "resp" ? writeBulk(out, at, value) : writeLineValue(out, at, value);
  }
  assert(at === size, `encoded ${at} bytes of ${size}`);
  return out;
}

/**
 * Size of a value reply written straight into the output, or 0 when it
 * takes the general path (JSON; a plain-line value holding a line break).
 */
function directValueSize(value: Buffer, dialect: Dialect): number {
  if (dialect === "resp") return bulkSize(value.length);
  if (dialect === "line" && value.indexOf(LF) === -1 && value.indexOf(CR) === -1) {
    return LINE_VALUE_PREFIX.length + value.length + 1;
  }
  return 0;
}

/** `VALUE <value>\n` at `at`; returns the end. */
function writeLineValue(out: Buffer, at: number, value: Buffer): number {
  out.set(LINE_VALUE_PREFIX, at);
  out.set(value, at + LINE_VALUE_PREFIX.length);
  const end = at + LINE_VALUE_PREFIX.length + value.length;
  out[end] = LF;
  return end + 1;
}

/** `text` on one line: "\r" and "\n" become spaces. */
function oneLine(text: string): string {
  return /[\r\n]/.test(text) ? text.replace(/[\r\n]/g, " ") : text;
}

function errorLine(code: ErrorCode, message: string): string {
  return `ERR ${code} ${oneLine(message)}`;
}

function encodeLine(reply: Reply): Buffer {
  switch (reply.type) {
    case "ok":
      return LINE_OK;
    case "value": {
      const size = directValueSize(reply.value, "line");
      if (size === 0) return Buffer.from(errorLine("BAD_REQUEST", LINE_BREAK_IN_VALUE_MESSAGE) + "\n");
      const out = Buffer.allocUnsafe(size);
      writeLineValue(out, 0, reply.value);
      return out;
    }
    case "not_found":
      return LINE_NOT_FOUND;
    case "deleted":
      return LINE_DELETED;
    case "pong":
      return LINE_PONG;
    case "bye":
      return reply.reason === undefined || reply.reason === ""
        ? LINE_BYE
        : Buffer.from(`BYE ${oneLine(reply.reason)}\n`);
    case "integer":
      return Buffer.from(`${integer(reply.value)}\n`);
    case "text":
      return Buffer.from(`${oneLine(reply.text)}\n`);
    case "json":
      return Buffer.from(`${JSON.stringify(reply.value)}\n`);
    case "raw":
      return Buffer.from(`${oneLine(reply.line)}\n`);
    case "error":
      return Buffer.from(errorLine(reply.code, reply.message) + "\n");
    default: {
      const never: never = reply;
      throw new Error(`unknown reply ${JSON.stringify(never)}`);
    }
  }
}

function encodeJson(reply: Reply): Buffer {
  switch (reply.type) {
    case "ok":
    case "deleted":
    case "bye":
      return JSON_OK;
    case "value":
      // JSON carries text: bytes that are not UTF-8 arrive as U+FFFD (use RESP for binary).
      return jsonLine({ status: "ok", value: reply.value.toString("utf8") });
    case "not_found":
      return JSON_NOT_FOUND;
    case "pong":
      return JSON_PONG;
    case "integer":
      return jsonLine({ status: "ok", value: integer(reply.value) });
    case "text":
      return jsonLine({ status: "ok", value: reply.text });
    case "json":
      return jsonLine({ status: "ok", value: reply.value });
    case "raw":
      return jsonLine({ status: "ok", value: reply.line });
    case "error":
      return jsonLine({ status: "error", code: reply.code, message: reply.message });
    default: {
      const never: never = reply;
      throw new Error(`unknown reply ${JSON.stringify(never)}`);
    }
  }
}

function jsonLine(value: unknown): Buffer {
  // JSON.stringify escapes "\n" and "\r" inside strings, so this is one line.
  return Buffer.from(`${JSON.stringify(value)}\n`);
}

function encodeResp(reply: Reply, request: Request): Buffer {
  const isDelete = request.command === "DELETE";
  switch (reply.type) {
    case "ok":
    case "bye":
      return RESP_OK;
    case "value":
      return bulk(reply.value);
    case "not_found":
      return isDelete ? RESP_ZERO : RESP_NULL;
    case "deleted":
      return RESP_ONE;
    case "pong":
      return RESP_PONG;
    case "integer":
      return Buffer.from(`:${integer(reply.value)}\r\n`);
    case "text":
      return bulk(Buffer.from(reply.text, "utf8"));
    case "json":
      return bulk(Buffer.from(JSON.stringify(reply.value), "utf8"));
    case "raw":
      return bulk(Buffer.from(reply.line, "utf8"));
    case "error":
      return Buffer.from(`-${errorLine(reply.code, reply.message)}\r\n`);
    default: {
      const never: never = reply;
      throw new Error(`unknown reply ${JSON.stringify(never)}`);
    }
  }
}

/** A RESP bulk string: `$<len>\r\n<bytes>\r\n`. */
function bulk(bytes: Buffer): Buffer {
  const out = Buffer.allocUnsafe(bulkSize(bytes.length));
  writeBulk(out, 0, bytes);
  return out;
}

/** Bytes of a RESP bulk string of `length` bytes. */
function bulkSize(length: number): number {
  return 1 + decimalDigits(length) + 2 + length + 2;
}

/** A bulk string of `bytes` at `at` (room for {@linkcode bulkSize} bytes); returns the end. */
function writeBulk(out: Buffer, at: number, bytes: Buffer): number {
  out[at] = DOLLAR;
  let end = at + 1 + decimalDigits(bytes.length);
  // The length's digits, written backwards from their last.
  for (let n = bytes.length, k = end - 1; k > at; k--, n = Math.floor(n / 10)) out[k] = DIGIT_0 + (n % 10);
  out[end++] = CR;
  out[end++] = LF;
  out.set(bytes, end);
  end += bytes.length;
  out[end++] = CR;
  out[end++] = LF;
  return end;
}

/** Digits of a non-negative integer in decimal. */
function decimalDigits(n: number): number {
  let digits = 1;
  while (n >= 10) {
    n = Math.floor(n / 10);
    digits++;
  }
  return digits;
}

function integer(value: number): number {
  assert(Number.isSafeInteger(value), `integer reply must be a safe integer, got ${value}`);
  return value;
}
