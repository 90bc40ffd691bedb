/**
 * Raw TCP clients for black-box tests, the way netcat or a script talks to a
 * node: lines out, lines (or RESP values) back, with a deadline on every wait.
 *
 * @module
 */
import assert from "node:assert/strict";
import net from "node:net";

/** Default deadline of every wait, in ms. */
export const DEFAULT_TIMEOUT_MS = 5_000;
/** Quiet period after which {@linkcode oneShot} stops listening. */
export const DEFAULT_QUIET_MS = 300;

/** A RESP2 value as read off the wire. Bulk strings stay bytes. */
export type RespValue =
  | { type: "simple"; value: string }
  | { type: "error"; value: string }
  | { type: "integer"; value: number }
  | { type: "bulk"; value: Buffer | null }
  | { type: "array"; value: RespValue[] | null };

/** Options for {@linkcode LineClient.connect}. */
export interface ConnectOptions {
  host?: string;
  /** Deadline for the connection. Defaults to {@linkcode DEFAULT_TIMEOUT_MS}. */
  timeoutMs?: number;
}

/** Waiting for more bytes: resolved by data, close or the deadline. */
interface Waiter {
  wake(): void;
}

/**
 * One client connection. Received bytes are buffered; `readLine`,
 * `readBytes` and `readResp` take from the front, each with a deadline.
 */
export class LineClient {
  #buffer: Buffer = Buffer.alloc(0);
  #closed = false;
  #error: Error | undefined;
  #waiters = new Set<Waiter>();
  #closedPromise: Promise<void>;
  /** Bytes received in total. */
  received = 0;

  private constructor(readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.received += chunk.length;
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
      this.#wake();
    });
    socket.on("error", (error) => {
      this.#error = error;
      this.#wake();
    });
    this.#closedPromise = new Promise((resolve) => {
      socket.on("close", () => {
        this.#closed = true;
        this.#wake();
        resolve();
      });
    });
  }

  /** Connects to `port` (127.0.0.1 unless `host`); rejects on refusal or past the deadline. */
  static connect(port: number, options: ConnectOptions = {}): Promise<LineClient> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host: options.host ?? "127.0.0.1", noDelay: true });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to port ${port}: no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        resolve(new LineClient(socket));
      });
    });
  }

  #wake(): void {
    for (const waiter of [...this.#waiters]) waiter.wake();
  }

  /** True once the connection closed (the server ended it, or it was destroyed). */
  get isClosed(): boolean {
    return this.#closed;
  }

  /** Bytes received but not read yet. */
  get buffered(): number {
    return this.#buffer.length;
  }

  /** Writes `line` plus "\n". */
  send(line: string | Buffer): void {
    this.write(typeof line === "string" ? `${line}\n` : Buffer.concat([line, Buffer.from("\n")]));
  }

  /** Writes raw bytes. */
  write(bytes: string | Buffer): void {
    this.socket.write(bytes);
  }

  /** Sends one line and reads one reply line. */
  async request(line: string | Buffer, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<string> {
    this.send(line);
    return this.readLine(timeoutMs);
  }

  /** Sends every line in ONE write (pipelined) and reads as many reply lines, in order. */
  async requestMany(lines: readonly string[], timeoutMs = DEFAULT_TIMEOUT_MS): Promise<string[]> {
    this.write(lines.map((l) => `${l}\n`).join(""));
    return this.readLines(lines.length, timeoutMs);
  }

  /** Reads `count` reply lines within one deadline. */
  async readLines(count: number, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    const replies: string[] = [];
    while (replies.length < count) {
      replies.push(await this.readLine(Math.max(1, deadline - Date.now())));
    }
    return replies;
  }

  /** Sends a RESP2 array of `args` and reads one RESP reply. */
  async command(args: readonly (string | Buffer)[], timeoutMs = DEFAULT_TIMEOUT_MS): Promise<RespValue> {
    this.write(encodeResp(args));
    return this.readResp(timeoutMs);
  }

  /** Waits until `check` can take something from the buffer, or the deadline / close. */
  async #take<T>(what: string, timeoutMs: number, check: () => T | undefined): Promise<T> {
    const now = check();
    if (now !== undefined) return now;
    return new Promise<T>((resolve, reject) => {
      const waiter: Waiter = {
        wake: () => {
          const got = check();
          if (got !== undefined) {
            finish();
            resolve(got);
          } else if (this.#closed || this.#error !== undefined) {
            finish();
            const why = this.#error !== undefined ? `error ${this.#error.message}` : "the connection closed";
            reject(new Error(`${what}: ${why} (unread: ${JSON.stringify(this.#buffer.toString("latin1").slice(0, 200))})`));
          }
        },
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`${what}: nothing within ${timeoutMs} ms (unread: ${JSON.stringify(this.#buffer.toString("latin1").slice(0, 200))})`));
      }, timeoutMs);
      const finish = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
      };
      this.#waiters.add(waiter);
      waiter.wake();
    });
  }

  /** Reads one line's bytes, without "\n" and one trailing "\r". */
  readLineBytes(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Buffer> {
    return this.#take("readLine", timeoutMs, () => {
      const nl = this.#buffer.indexOf(0x0a);
      if (nl === -1) return undefined;
      const end = nl > 0 && this.#buffer[nl - 1] === 0x0d ? nl - 1 : nl;
      const line = Buffer.from(this.#buffer.subarray(0, end));
      this.#buffer = this.#buffer.subarray(nl + 1);
      return line;
    });
  }

  /** Reads one line as UTF-8 text, without "\n" and one trailing "\r". */
  async readLine(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<string> {
    return (await this.readLineBytes(timeoutMs)).toString("utf8");
  }

  /** Reads exactly `n` bytes. */
  readBytes(n: number, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Buffer> {
    assert(n >= 0);
    return this.#take(`readBytes(${n})`, timeoutMs, () => {
      if (this.#buffer.length < n) return undefined;
      const bytes = Buffer.from(this.#buffer.subarray(0, n));
      this.#buffer = this.#buffer.subarray(n);
      return bytes;
    });
  }

  /** Reads one RESP2 value (bulk strings as bytes). */
  readResp(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<RespValue> {
    return this.#take("readResp", timeoutMs, () => {
      const parsed = parseResp(this.#buffer, 0);
      if (parsed === undefined) return undefined;
      this.#buffer = this.#buffer.subarray(parsed.end);
      return parsed.value;
    });
  }

  /** Everything received until the server closes the connection (rejects past the deadline). */
  async readUntilClosed(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Buffer> {
    await this.closed(timeoutMs);
    const rest = this.#buffer;
    this.#buffer = Buffer.alloc(0);
    return rest;
  }

  /** Resolves once the connection is closed; rejects past the deadline. */
  closed(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    if (this.#closed) return Promise.resolve();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the connection did not close within ${timeoutMs} ms`)), timeoutMs);
    });
    return Promise.race([this.#closedPromise, deadline]).finally(() => clearTimeout(timer));
  }

  /** Half-closes: no more bytes from us (what `nc -N` does at the end of its input). */
  end(): void {
    this.socket.end();
  }

  /** Drops the connection at once. */
  destroy(): void {
    this.socket.destroy();
  }
}

/** Encodes a RESP2 array of bulk strings, as Redis clients send commands. */
export function encodeResp(args: readonly (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = typeof arg === "string" ? Buffer.from(arg, "utf8") : arg;
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from("\r\n"));
  }
  return Buffer.concat(parts);
}

/** Parses one RESP2 value at `at`; undefined when the buffer does not hold all of it yet. */
export function parseResp(buffer: Buffer, at: number): { value: RespValue; end: number } | undefined {
  if (at >= buffer.length) return undefined;
  const crlf = buffer.indexOf("\r\n", at);
  if (crlf === -1) return undefined;
  const marker = String.fromCharCode(buffer[at]);
  const text = buffer.toString("utf8", at + 1, crlf);
  const next = crlf + 2;
  switch (marker) {
    case "+":
      return { value: { type: "simple", value: text }, end: next };
    case "-":
      return { value: { type: "error", value: text }, end: next };
    case ":":
      return { value: { type: "integer", value: Number(text) }, end: next };
    case "$": {
      const length = Number(text);
      if (length < 0) return { value: { type: "bulk", value: null }, end: next };
      if (buffer.length < next + length + 2) return undefined;
      const value = Buffer.from(buffer.subarray(next, next + length));
      assert(buffer.toString("latin1", next + length, next + length + 2) === "\r\n", "bulk string without its CRLF");
      return { value: { type: "bulk", value }, end: next + length + 2 };
    }
    case "*": {
      const count = Number(text);
      if (count < 0) return { value: { type: "array", value: null }, end: next };
      const items: RespValue[] = [];
      let end = next;
      for (let i = 0; i < count; i++) {
        const item = parseResp(buffer, end);
        if (item === undefined) return undefined;
        items.push(item.value);
        end = item.end;
      }
      return { value: { type: "array", value: items }, end };
    }
    default:
      throw new Error(`not a RESP reply: ${JSON.stringify(buffer.toString("latin1", at, Math.min(buffer.length, at + 80)))}`);
  }
}

/** Options for {@linkcode oneShot}. */
export interface OneShotOptions {
  host?: string;
  /** Stop listening after this long without new bytes. Defaults to {@linkcode DEFAULT_QUIET_MS}. */
  quietMs?: number;
  /** Overall deadline. Defaults to {@linkcode DEFAULT_TIMEOUT_MS}. */
  timeoutMs?: number;
  /** Half-close after sending, as `nc -N` does at the end of its input. Defaults to false (plain `nc`). */
  halfClose?: boolean;
}

/**
 * `echo "..." | nc 127.0.0.1 <port>`: connect, send `text`, and return all
 * output until the server closes or nothing arrived for a quiet period.
 */
export async function oneShot(port: number, text: string | Buffer, options: OneShotOptions = {}): Promise<string> {
  const client = await LineClient.connect(port, { host: options.host, timeoutMs: options.timeoutMs });
  const quietMs = options.quietMs ?? DEFAULT_QUIET_MS;
  const deadline = Date.now() + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  client.write(text);
  if (options.halfClose === true) client.end();
  try {
    let seen = -1;
    while (!client.isClosed && Date.now() < deadline) {
      // Quiet for a whole period after some output (before any, wait for the deadline).
      if (client.received === seen && seen > 0) break;
      seen = client.received;
      await client.closed(quietMs).catch(() => {});
    }
    const out = await client.readBytes(client.buffered, 1);
    return out.toString("utf8");
  } finally {
    client.destroy();
  }
}
