/**
 * The Node.js ceiling: close to the least work a RESP GET/SET server on Node
 * can do, so `npm run bench -- --only ceiling` shows how far ringkv is from
 * what Node itself allows on the machine (docs/performance.md, "Node.js ceiling").
 *
 * It is a measuring instrument, not a store, and it is deliberately unsafe:
 * no key or size checks, no record framing or CRC, no ordering between
 * requests beyond one reply per request in order, and a SET is visible to
 * GETs before it is durable. What it keeps is the part no durable server
 * can skip: every SET is in a file opened O_DSYNC before its `+OK` is sent,
 * with the SETs of one event-loop turn sharing one write, exactly as
 * ringkv's group commit does (the thread-pool write measured faster here
 * than a blocking one, as Redis does it).
 *
 * Usage: `node dist/bench/ceiling_server.js --port P --log FILE`; the
 * bench suite starts and stops it.
 *
 * @module
 */
import fs from "node:fs";
import net from "node:net";
import process from "node:process";
import { parseArgs } from "node:util";

const STAR = 0x2a;
const DOLLAR = 0x24;
const CR = 0x0d;
const LF = 0x0a;
const OK = Buffer.from("+OK\r\n");
const NIL = Buffer.from("$-1\r\n");
const UNKNOWN = Buffer.from("-ERR unknown command\r\n");
/** Longest reply header `$<len>\r\n` of a value. */
const BULK_HEADER_BYTES = 24;

/** One client connection. */
interface Connection {
  socket: net.Socket;
  /** Replies queued behind a commit: later replies queue too, to stay in order. */
  queued: number;
  /** The start of a request split across reads. */
  rest: Buffer | undefined;
}

/** Replies waiting for a group-commit write. */
interface Waiting {
  connection: Connection;
  replies: Buffer;
}

/** A reply buffer that grows as needed. */
class Output {
  bytes: Buffer;
  length = 0;

  constructor(capacity: number) {
    this.bytes = Buffer.allocUnsafe(capacity);
  }

  reserve(n: number): void {
    if (this.length + n <= this.bytes.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.bytes.length * 2, this.length + n));
    this.bytes.copy(grown, 0, 0, this.length);
    this.bytes = grown;
  }

  append(bytes: Buffer): void {
    this.reserve(bytes.length);
    this.length += bytes.copy(this.bytes, this.length);
  }

  appendBulk(value: Buffer): void {
    this.reserve(value.length + BULK_HEADER_BYTES);
    this.length += this.bytes.write(`$${value.length}\r\n`, this.length, "latin1");
    this.length += value.copy(this.bytes, this.length);
    this.bytes[this.length++] = CR;
    this.bytes[this.length++] = LF;
  }
}

function main(): void {
  const { values } = parseArgs({ options: { port: { type: "string" }, log: { type: "string" } } });
  if (values.port === undefined || values.log === undefined) {
    process.stderr.write("usage: node ceiling_server.js --port P --log FILE\n");
    process.exit(2);
  }
  const data = new Map<string, Buffer>();
  const fd = fs.openSync(
    values.log,
    fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_APPEND | fs.constants.O_DSYNC,
  );
  let logBytes: Buffer[] = [];
  let waiting: Waiting[] = [];
  let writing = false;
  let scheduled = false;

  /** One write for every SET of the turn; their replies go out once it returns. */
  function commit(): void {
    scheduled = false;
    if (writing || waiting.length === 0) return;
    writing = true;
    const bytes = Buffer.concat(logBytes);
    const batch = waiting;
    logBytes = [];
    waiting = [];
    fs.write(fd, bytes, 0, bytes.length, null, (error) => {
      if (error !== null) throw error; // an instrument: a failing disk ends the run
      writing = false;
      for (const w of batch) {
        w.connection.queued--;
        if (!w.connection.socket.destroyed) w.connection.socket.write(w.replies);
      }
      commit();
    });
  }

  function onData(connection: Connection, chunk: Buffer): void {
    const input = connection.rest === undefined ? chunk : Buffer.concat([connection.rest, chunk]);
    connection.rest = undefined;
    const out = new Output(input.length * 8);
    let wrote = false;
    let i = 0;
    while (i < input.length) {
      const request = readRequest(input, i);
      if (request === "bad") {
        connection.socket.destroy();
        return;
      }
      if (request === undefined) {
        connection.rest = Buffer.from(input.subarray(i));
        break;
      }
      i = request.end;
      const [name, key, value] = request.args;
      if (request.args.length === 2 && isWord(input, name, "GET")) {
        const found = data.get(input.toString("latin1", key[0], key[1]));
        if (found === undefined) out.append(NIL);
        else out.appendBulk(found);
      } else if (request.args.length === 3 && isWord(input, name, "SET")) {
        data.set(input.toString("latin1", key[0], key[1]), Buffer.from(input.subarray(value[0], value[1])));
        out.append(OK);
        wrote = true;
      } else {
        out.append(UNKNOWN);
      }
    }
    if (out.length === 0) return;
    const replies = out.bytes.subarray(0, out.length);
    if (!wrote && connection.queued === 0) {
      connection.socket.write(replies);
      return;
    }
    if (wrote) logBytes.push(Buffer.from(input.subarray(0, i)));
    connection.queued++;
    waiting.push({ connection, replies });
    if (!scheduled) {
      scheduled = true;
      setImmediate(commit);
    }
  }

  const server = net.createServer({ noDelay: true }, (socket) => {
    const connection: Connection = { socket, queued: 0, rest: undefined };
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => onData(connection, chunk));
  });
  server.listen(Number(values.port), "127.0.0.1");
  process.on("SIGTERM", () => process.exit(0));
}

/** The decimal number in `input[from, to)`, or NaN. */
function digits(input: Buffer, from: number, to: number): number {
  if (to <= from || to - from > 15) return NaN;
  let n = 0;
  for (let k = from; k < to; k++) {
    const d = input[k] - 0x30;
    if (d < 0 || d > 9) return NaN;
    n = n * 10 + d;
  }
  return n;
}

/** Is `input[range]` the ASCII word `upper`, in any case? */
function isWord(input: Buffer, range: [number, number], upper: string): boolean {
  if (range[1] - range[0] !== upper.length) return false;
  for (let k = 0; k < upper.length; k++) {
    if ((input[range[0] + k] & 0xdf) !== upper.charCodeAt(k)) return false;
  }
  return true;
}

/** One RESP array of bulk strings at `start`: argument ranges and where it ends; undefined if incomplete. */
function readRequest(input: Buffer, start: number): { args: [number, number][]; end: number } | "bad" | undefined {
  if (input[start] !== STAR) return "bad";
  let nl = input.indexOf(LF, start);
  if (nl === -1) return undefined;
  const count = digits(input, start + 1, nl - 1);
  if (!Number.isInteger(count) || count < 1) return "bad";
  const args: [number, number][] = [];
  let i = nl + 1;
  for (let a = 0; a < count; a++) {
    if (i >= input.length) return undefined;
    if (input[i] !== DOLLAR) return "bad";
    nl = input.indexOf(LF, i);
    if (nl === -1) return undefined;
    const length = digits(input, i + 1, nl - 1);
    if (!Number.isInteger(length) || length < 0) return "bad";
    i = nl + 1;
    if (i + length + 2 > input.length) return undefined;
    args.push([i, i + length]);
    i += length + 2;
  }
  return { args, end: i };
}

main();
