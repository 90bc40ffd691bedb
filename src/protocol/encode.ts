/**
 * Turns a {@linkcode Reply} into the bytes of its request's dialect: plain
 * lines, JSON lines or RESP2. Pure. Every reply is exactly one line (RESP:
 * one reply value), so pipelined replies stay one per request.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { ErrorCode, Reply, Request } from "./types.ts";

/** The answer to HELP: one line listing the commands. */
export const HELP_TEXT: string = "commands: PUT/SET <key> <value> | GET <key> | DELETE/DEL <key> | " +
  "EXISTS <key> [<key> ...] | PING | INFO | RING | READONLY | READWRITE | HELP | QUIT" +
  ' (also as JSON lines, {"op":"PUT","key":"k","value":"v"}, and RESP2)';

/** The line-dialect answer to GET when the value cannot travel on one line. */
export const LINE_BREAK_IN_VALUE_MESSAGE = "value contains a line break; read it with the JSON or RESP dialect";

const LF = 0x0a;
const CR = 0x0d;

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
const CRLF = Buffer.from("\r\n");

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
      const value = reply.value;
      if (value.indexOf(LF) !== -1 || value.indexOf(CR) !== -1) {
        return Buffer.from(errorLine("BAD_REQUEST", LINE_BREAK_IN_VALUE_MESSAGE) + "\n");
      }
      const out = Buffer.allocUnsafe(LINE_VALUE_PREFIX.length + value.length + 1);
      LINE_VALUE_PREFIX.copy(out, 0);
      value.copy(out, LINE_VALUE_PREFIX.length);
      out[out.length - 1] = LF;
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
  const header = `$${bytes.length}\r\n`;
  const out = Buffer.allocUnsafe(header.length + bytes.length + 2);
  out.write(header, 0, "latin1");
  bytes.copy(out, header.length);
  CRLF.copy(out, header.length + bytes.length);
  return out;
}

function integer(value: number): number {
  assert(Number.isSafeInteger(value), `integer reply must be a safe integer, got ${value}`);
  return value;
}
