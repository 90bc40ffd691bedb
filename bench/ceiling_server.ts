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
 * With `--followers`, writes are also replicated the least a majority
 * protocol can: each batch goes to every follower (another instance run
 * with `--follower`), which appends it to its own O_DSYNC file and answers
 * one byte; the `+OK`s go out once the batch is durable here and on enough
 * followers for a majority. No epochs, no catch-up, no reads through a
 * majority: a ceiling for replicated writes, not a protocol.
 *
 * Usage: `node dist/bench/ceiling_server.js --port P --log FILE
 * [--followers PORT,PORT | --follower]`; the bench suite starts and stops it.
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

/** An append-only O_DSYNC file: the appends of one event-loop turn share one write. */
class GroupLog {
  #fd: number;
  #bytes: Buffer[] = [];
  #done: (() => void)[] = [];
  #writing = false;
  #scheduled = false;

  constructor(path: string) {
    const flags = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_APPEND | fs.constants.O_DSYNC;
    this.#fd = fs.openSync(path, flags);
  }

  /** Appends `bytes`; `done` runs once they are durable. */
  append(bytes: Buffer, done: () => void): void {
    this.#bytes.push(bytes);
    this.#done.push(done);
    if (!this.#scheduled) {
      this.#scheduled = true;
      process.nextTick(() => this.#write());
    }
  }

  #write(): void {
    this.#scheduled = false;
    if (this.#writing || this.#done.length === 0) return;
    this.#writing = true;
    const bytes = Buffer.concat(this.#bytes);
    const done = this.#done;
    this.#bytes = [];
    this.#done = [];
    fs.write(this.#fd, bytes, 0, bytes.length, null, (error) => {
      if (error !== null) throw error; // an instrument: a failing disk ends the run
      this.#writing = false;
      for (const callback of done) callback();
      this.#write();
    });
  }
}

/** The leader's link to one follower: batches out, one ack byte back per batch, in order. */
class FollowerLink {
  #socket: net.Socket;
  #acked: (() => void)[] = [];

  constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
      for (let i = 0; i < chunk.length; i++) this.#acked.shift()!();
    });
    socket.on("error", (error) => {
      throw error; // an instrument: a lost follower ends the run
    });
  }

  /** Sends `bytes`; `acked` runs once the follower has them durable. */
  send(bytes: Buffer, acked: () => void): void {
    const header = Buffer.allocUnsafe(4);
    header.writeUInt32BE(bytes.length);
    this.#acked.push(acked);
    this.#socket.write(Buffer.concat([header, bytes]));
  }
}

function connectFollower(port: number): Promise<FollowerLink> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, noDelay: true });
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.off("error", reject);
      resolve(new FollowerLink(socket));
    });
  });
}

/** A follower: length-prefixed batches in, each appended durably, one ack byte out per batch. */
function serveFollower(port: number, log: GroupLog): void {
  const ACK = Buffer.from([1]);
  const server = net.createServer({ noDelay: true }, (socket) => {
    let rest: Buffer = Buffer.alloc(0);
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => {
      let input = rest.length === 0 ? chunk : Buffer.concat([rest, chunk]);
      while (input.length >= 4 && input.length >= 4 + input.readUInt32BE(0)) {
        const end = 4 + input.readUInt32BE(0);
        log.append(Buffer.from(input.subarray(4, end)), () => socket.write(ACK));
        input = input.subarray(end);
      }
      rest = Buffer.from(input);
    });
  });
  server.listen(port, "127.0.0.1");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: "string" },
      log: { type: "string" },
      followers: { type: "string" },
      follower: { type: "boolean" },
    },
  });
  if (values.port === undefined || values.log === undefined) {
    process.stderr.write("usage: node ceiling_server.js --port P --log FILE [--followers PORT,PORT | --follower]\n");
    process.exit(2);
  }
  process.on("SIGTERM", () => process.exit(0));
  const log = new GroupLog(values.log);
  if (values.follower === true) {
    serveFollower(Number(values.port), log);
    return;
  }
  const followerPorts = values.followers === undefined ? [] : values.followers.split(",").map(Number);
  const followers = await Promise.all(followerPorts.map(connectFollower));
  // A majority of the 1 + followers copies, this one included.
  const acksNeeded = Math.floor((1 + followers.length) / 2);
  const data = new Map<string, Buffer>();
  let pendingBytes: Buffer[] = [];
  let waiting: Waiting[] = [];
  let committing = false;
  let scheduled = false;

  /** One batch at a time: durable here and on a majority, then its replies go out. */
  function commit(): void {
    scheduled = false;
    if (committing || waiting.length === 0) return;
    committing = true;
    const bytes = Buffer.concat(pendingBytes);
    const batch = waiting;
    pendingBytes = [];
    waiting = [];
    let local = false;
    let acks = 0;
    let done = false;
    const maybeDone = (): void => {
      // Later acks of a batch already answered change nothing.
      if (done || !local || acks < acksNeeded) return;
      done = true;
      committing = false;
      for (const w of batch) {
        w.connection.queued--;
        if (!w.connection.socket.destroyed) w.connection.socket.write(w.replies);
      }
      commit();
    };
    for (const follower of followers) {
      follower.send(bytes, () => {
        acks++;
        maybeDone();
      });
    }
    log.append(bytes, () => {
      local = true;
      maybeDone();
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
    if (wrote) pendingBytes.push(Buffer.from(input.subarray(0, i)));
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

await main();
