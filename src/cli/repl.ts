/**
 * `ringkv cli`: an interactive client over raw TCP (the plain line
 * dialect), like redis-cli. With a node list it moves to the next node
 * when one is down, at start or mid-session. Scripted use: `--eval "GET a"`
 * (repeatable) or lines piped on stdin; the exit code is 1 if any reply was
 * an error, 0 otherwise, 2 on bad flags.
 *
 * @module
 */
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { parseArgs } from "node:util";

/** Default `--timeout`: how long to wait for a connection or a reply, in ms. */
export const DEFAULT_TIMEOUT_MS = 5_000;
/** Largest accepted `--timeout`, in ms. */
export const MAX_TIMEOUT_MS = 600_000;
/** Lines of history kept in memory and in the history file. */
export const HISTORY_LINES = 1_000;
/** Most nodes `--nodes` may list. */
export const MAX_NODES = 1_000;
/** Most `--eval` commands in one run. */
export const MAX_EVALS = 10_000;
/** Longest reply line accepted, in bytes (a node's value limit is about 1 MiB; INFO can be longer). */
export const MAX_REPLY_BYTES = 64 * 1_048_576;
/** Environment variable naming the history file (default `~/.ringkv_history`). */
export const HISTORY_ENV = "RINGKV_HISTORY_FILE";

const USAGE = `usage: ringkv cli [--host h] [--port p] [--nodes h:p,h:p,...] [--eval "GET a"]... [--timeout ms]

  --host h       node to connect to [default: 127.0.0.1]
  --port p       its port [default: 9001]
  --nodes list   comma list of host:port; when one is down the next is used
                 (instead of --host/--port)
  --eval cmd     run one command, print its reply; repeatable; exit 1 if any
                 reply is an error
  --timeout ms   wait this long for a connection or a reply [default: ${DEFAULT_TIMEOUT_MS}]

Without --eval: interactive at a terminal (history in ~/.ringkv_history, or
$${HISTORY_ENV}); with piped stdin, one command per line, no prompt.
Commands: PUT/SET k v, GET k, DELETE/DEL k, EXISTS k..., PING, INFO, RING,
READONLY, READWRITE, HELP, EXIT/QUIT (leaves). Anything else is sent as-is.`;

/** A node address. */
interface Address {
  host: string;
  port: number;
}

/** The parsed command line. */
interface CliOptions {
  nodes: Address[];
  evals: string[];
  timeoutMs: number;
}

/** A bad command line (exit 2). */
class UsageError extends Error {}

/** What came back for one command. */
type Result =
  | { kind: "reply"; line: string }
  /** No reply: `code` says whether anything may have happened (TIMEOUT) or surely not (UNAVAILABLE). */
  | { kind: "failed"; code: "UNAVAILABLE" | "TIMEOUT"; message: string };

/** Commands that change nothing: safe to send again after a lost connection. */
const IDEMPOTENT = new Set(["GET", "EXISTS", "PING", "INFO", "RING", "HELP", "READONLY", "READWRITE"]);
/** Commands the CLI answers itself. */
const LOCAL_EXIT = new Set(["EXIT", "QUIT"]);

/** Runs `ringkv cli`; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(USAGE);
    return 0;
  }
  let options: CliOptions;
  try {
    options = parseCliArgs(argv);
  } catch (error) {
    if (error instanceof UsageError || (error as NodeJS.ErrnoException).code?.startsWith("ERR_PARSE_ARGS")) {
      console.error(`ringkv cli: ${(error as Error).message}\n(see ringkv cli --help)`);
      return 2;
    }
    throw error;
  }
  const client = new NodeClient(options.nodes, options.timeoutMs);
  try {
    if (options.evals.length > 0) return await runScript(client, options.evals);
    if (process.stdin.isTTY === true && process.stdout.isTTY === true) return await runInteractive(client);
    try {
      return await runScript(client, readline.createInterface({ input: process.stdin, crlfDelay: Infinity }));
    } finally {
      // EXIT may stop before the end of the input: the rest is not read.
      process.stdin.destroy();
    }
  } finally {
    client.close();
  }
}

function parseCliArgs(argv: readonly string[]): CliOptions {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      host: { type: "string" },
      port: { type: "string" },
      nodes: { type: "string" },
      eval: { type: "string", multiple: true },
      timeout: { type: "string" },
    },
    strict: true,
    allowPositionals: false,
  });
  let nodes: Address[];
  if (values.nodes !== undefined) {
    if (values.host !== undefined || values.port !== undefined) {
      throw new UsageError("give either --nodes or --host/--port, not both");
    }
    nodes = values.nodes.split(",").map((item) => item.trim()).filter((item) => item !== "").map(parseAddress);
    if (nodes.length === 0) throw new UsageError("--nodes lists no node");
    if (nodes.length > MAX_NODES) throw new UsageError(`--nodes lists more than ${MAX_NODES} nodes`);
  } else {
    const host = values.host ?? "127.0.0.1";
    if (host === "" || /\s/.test(host)) throw new UsageError(`--host must be a host name or address, got "${host}"`);
    nodes = [{ host, port: parsePort(values.port ?? "9001", "--port") }];
  }
  const evals = values.eval ?? [];
  if (evals.length > MAX_EVALS) throw new UsageError(`at most ${MAX_EVALS} --eval commands`);
  for (const command of evals) {
    if (/[\r\n]/.test(command)) throw new UsageError("an --eval command must be one line");
  }
  let timeoutMs = DEFAULT_TIMEOUT_MS;
  if (values.timeout !== undefined) {
    if (!/^\d+$/.test(values.timeout)) throw new UsageError(`--timeout must be a whole number of ms, got "${values.timeout}"`);
    timeoutMs = Number(values.timeout);
    if (timeoutMs < 1 || timeoutMs > MAX_TIMEOUT_MS) {
      throw new UsageError(`--timeout must be between 1 and ${MAX_TIMEOUT_MS} ms, got ${timeoutMs}`);
    }
  }
  return { nodes, evals, timeoutMs };
}

/** `host:port`, `[v6]:port`. */
function parseAddress(text: string): Address {
  const colon = text.lastIndexOf(":");
  if (colon <= 0) throw new UsageError(`--nodes: expected host:port, got "${text}"`);
  let host = text.slice(0, colon);
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  if (host === "" || /[\s\[\]]/.test(host)) throw new UsageError(`--nodes: bad host in "${text}"`);
  return { host, port: parsePort(text.slice(colon + 1), `--nodes "${text}"`) };
}

function parsePort(text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) {
    throw new UsageError(`${what}: the port must be 1-65535, got "${text}"`);
  }
  return Number(text);
}

function formatAddress(address: Address): string {
  return address.host.includes(":") ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

// ---------------------------------------------------------------- running commands

/** The upper-cased first word of a command line. */
function commandWord(line: string): string {
  const word = /^\S*/.exec(line)![0];
  return word.length <= 16 ? word.toUpperCase() : "";
}

/** True when a reply line is an error (plain `ERR ...`, or a JSON reply with status "error"). */
function isErrorReply(line: string): boolean {
  if (line.startsWith("ERR ") || line === "ERR") return true;
  if (!line.startsWith("{")) return false;
  try {
    const parsed = JSON.parse(line) as { status?: unknown };
    return parsed.status === "error";
  } catch {
    return false;
  }
}

/**
 * Runs one input line: undefined when it is empty, "exit" for EXIT/QUIT,
 * else the result. RESP input is refused here: its replies are not one line.
 */
async function runLine(client: NodeClient, input: string): Promise<Result | "exit" | undefined> {
  const line = input.replace(/^\s+/, "");
  if (line.trim() === "") return undefined;
  const word = commandWord(line);
  if (LOCAL_EXIT.has(word)) return "exit";
  if (line.startsWith("*")) {
    return { kind: "failed", code: "UNAVAILABLE", message: "RESP is not spoken by ringkv cli (use redis-cli); nothing was sent" };
  }
  if (word === "READONLY" || word === "READWRITE") {
    const result = await client.request(line, true);
    // Remembered so that a reconnection (another node) gets the same mode.
    if (result.kind === "reply" && !isErrorReply(result.line)) client.readonly = word === "READONLY";
    return result;
  }
  return client.request(line, IDEMPOTENT.has(word));
}

/** --eval commands or piped lines: raw replies on stdout; 1 if any was an error. */
async function runScript(client: NodeClient, lines: AsyncIterable<string> | Iterable<string>): Promise<number> {
  let failed = false;
  for await (const input of lines) {
    const result = await runLine(client, input);
    if (result === undefined) continue;
    if (result === "exit") break;
    if (result.kind === "failed") {
      failed = true;
      await write(`ERR ${result.code} ${result.message}\n`);
    } else {
      if (isErrorReply(result.line)) failed = true;
      await write(`${result.line}\n`);
    }
  }
  return failed ? 1 : 0;
}

/** Writes to stdout, waiting when it is full (a slow pipe must not make us buffer without bound). */
function write(text: string): Promise<void> {
  return new Promise((resolve) => {
    if (process.stdout.write(text)) resolve();
    else process.stdout.once("drain", resolve);
  });
}

async function runInteractive(client: NodeClient): Promise<number> {
  const historyFile = process.env[HISTORY_ENV] ?? path.join(os.homedir(), ".ringkv_history");
  const rl = readline.createInterface({
    input: process.stdin,
    output: process.stdout,
    terminal: true,
    history: loadHistory(historyFile),
    historySize: HISTORY_LINES,
    removeHistoryDuplicates: true,
    crlfDelay: Infinity,
  });
  let history: string[] = [];
  rl.on("history", (lines: string[]) => {
    history = lines;
  });
  rl.on("SIGINT", () => {
    // Ctrl-C on an empty line leaves; on a typed line it clears it (as a shell does).
    if (rl.line.length > 0) {
      rl.write(null, { ctrl: true, name: "u" });
      process.stdout.write("\n");
      rl.prompt();
    } else {
      client.close();
      rl.close();
    }
  });
  // The iterator buffers lines from now on: lines typed (or pasted) while we connect are kept.
  const lines = rl[Symbol.asyncIterator]();
  const first = await client.connect();
  if (first !== undefined) console.log(`(error) ${first}`);
  let ended = false;
  rl.on("close", () => {
    ended = true;
  });
  const prompt = (): void => {
    if (ended) return; // Ctrl-C or Ctrl-D while a reply was awaited
    rl.setPrompt(`ringkv ${client.address}> `);
    rl.prompt();
  };
  prompt();
  for (;;) {
    const next = await lines.next();
    if (next.done === true) break;
    const input: string = next.value;
    const result = await runLine(client, input);
    if (result === "exit") break;
    if (result !== undefined) console.log(pretty(input, result));
    prompt();
  }
  rl.close();
  saveHistory(historyFile, history);
  return 0;
}

/** How a result looks at the terminal: errors marked, INFO and RING as indented JSON. */
function pretty(input: string, result: Result): string {
  if (result.kind === "failed") return `(error) ${result.code} ${result.message}`;
  const line = result.line;
  if (line.startsWith("ERR ")) return `(error) ${line.slice(4)}`;
  const word = commandWord(input.trim());
  if ((word === "INFO" || word === "RING") && line.startsWith("{")) {
    try {
      return JSON.stringify(JSON.parse(line), null, 2);
    } catch {
      return line;
    }
  }
  return line;
}

/** History lines newest first (readline's order), from a file written oldest first. */
function loadHistory(file: string): string[] {
  try {
    const lines = fs.readFileSync(file, "utf8").split("\n").filter((line) => line.trim() !== "");
    return lines.slice(-HISTORY_LINES).reverse();
  } catch {
    return [];
  }
}

function saveHistory(file: string, newestFirst: readonly string[]): void {
  if (newestFirst.length === 0) return;
  try {
    const lines = newestFirst.slice(0, HISTORY_LINES).reverse();
    fs.writeFileSync(file, lines.join("\n") + "\n", { mode: 0o600 });
  } catch (error) {
    console.error(`ringkv cli: could not save history to ${file}: ${(error as Error).message}`);
  }
}

// ---------------------------------------------------------------- the connection

interface Pending {
  resolve(line: string | undefined): void;
}

/**
 * One connection at a time to one of `nodes`, one request at a time. When a
 * connection fails, breaks or times out, the next node of the list is tried.
 */
class NodeClient {
  /** READONLY mode, replayed on each new connection. */
  readonly = false;
  #current = 0;
  #socket: net.Socket | undefined;
  #buffer = "";
  #pending: Pending | undefined;
  #closed = false;

  constructor(private readonly nodes: readonly Address[], private readonly timeoutMs: number) {}

  /** The node in use (or tried next). */
  get address(): string {
    return formatAddress(this.nodes[this.#current]);
  }

  /**
   * Connects to the first node that accepts, starting at the current one
   * and going once around the list. Returns an error message if none does.
   */
  async connect(): Promise<string | undefined> {
    if (this.#socket !== undefined) return undefined;
    const failures: string[] = [];
    for (let tried = 0; tried < this.nodes.length; tried++) {
      if (this.#closed) return "the client is closing";
      const at = (this.#current + tried) % this.nodes.length;
      const address = this.nodes[at];
      try {
        this.#socket = await this.#open(address);
        this.#current = at;
      } catch (error) {
        failures.push(`${formatAddress(address)} (${(error as Error).message})`);
        continue;
      }
      if (this.readonly) {
        const reply = await this.#exchange("READONLY");
        if (reply === undefined || isErrorReply(reply)) {
          failures.push(`${formatAddress(address)} (READONLY failed: ${reply ?? "no reply"})`);
          this.#drop(false);
          continue;
        }
      }
      return undefined;
    }
    return `cannot connect to ${this.nodes.length === 1 ? "" : "any of "}${failures.join(", ")}`;
  }

  /** Sends one command line and waits for its reply line; resends once elsewhere if `idempotent` and the connection broke. */
  async request(line: string, idempotent: boolean): Promise<Result> {
    for (let attempt = 0;; attempt++) {
      const failure = await this.connect();
      if (failure !== undefined) return { kind: "failed", code: "UNAVAILABLE", message: `${failure}; nothing was sent` };
      const address = this.address;
      const reply = await this.#exchange(line);
      if (reply !== undefined) return { kind: "reply", line: reply };
      if (idempotent && attempt === 0 && !this.#closed) continue;
      return {
        kind: "failed",
        code: "TIMEOUT",
        message: `no reply from ${address} within ${this.timeoutMs} ms or the connection broke; the outcome is unknown`,
      };
    }
  }

  /** Closes the connection; a request in flight ends without a reply. */
  close(): void {
    this.#closed = true;
    this.#drop(false);
  }

  #open(address: Address): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: address.host, port: address.port, noDelay: true });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no connection within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      socket.once("error", (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new Error(error.code ?? error.message));
      });
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        socket.setEncoding("utf8");
        socket.on("data", (text: string) => this.#onData(socket, text));
        socket.on("error", () => {}); // "close" follows
        socket.on("close", () => this.#onClose(socket));
        resolve(socket);
      });
    });
  }

  /** Writes `line` and resolves with the reply line, or undefined on timeout or a broken connection. */
  #exchange(line: string): Promise<string | undefined> {
    const socket = this.#socket;
    if (socket === undefined) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        // The reply may still come: this connection can no longer tell whose it is.
        this.#pending = undefined;
        this.#drop(true);
        resolve(undefined);
      }, this.timeoutMs);
      this.#pending = {
        resolve: (reply) => {
          clearTimeout(timer);
          this.#pending = undefined;
          resolve(reply);
        },
      };
      socket.write(`${line}\n`);
    });
  }

  #onData(socket: net.Socket, text: string): void {
    if (socket !== this.#socket) return;
    this.#buffer += text;
    if (this.#buffer.length > MAX_REPLY_BYTES) {
      this.#drop(true);
      return;
    }
    for (;;) {
      const nl = this.#buffer.indexOf("\n");
      if (nl === -1) return;
      const end = nl > 0 && this.#buffer[nl - 1] === "\r" ? nl - 1 : nl;
      const line = this.#buffer.slice(0, end);
      this.#buffer = this.#buffer.slice(nl + 1);
      if (/^BYE( |$)/.test(line)) {
        // The server is closing (idle timeout, shutdown): not a reply to anything we sent.
        this.#drop(this.#pending !== undefined);
        return;
      }
      const pending = this.#pending;
      // A line nobody asked for (e.g. "too many connections" before close) is dropped.
      if (pending !== undefined) pending.resolve(line);
    }
  }

  #onClose(socket: net.Socket): void {
    if (socket !== this.#socket) return;
    this.#drop(this.#pending !== undefined);
  }

  /** Forgets the connection; with `failed`, the next connect() starts with the next node. */
  #drop(failed: boolean): void {
    const socket = this.#socket;
    if (socket === undefined) return;
    this.#socket = undefined;
    this.#buffer = "";
    socket.destroy();
    if (failed && this.nodes.length > 1) this.#current = (this.#current + 1) % this.nodes.length;
    this.#pending?.resolve(undefined);
  }
}
