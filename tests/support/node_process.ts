/**
 * Real ringkv node processes for black-box tests: spawn `ringkv node` with
 * execa, wait (with a deadline) for its `"event":"listening"` log line, and
 * stop, kill or restart it. Data directories are temporary and removed when
 * the test process exits; every node still running then is killed by PID.
 *
 * The CLI is found relative to this file (`../../src/cli/main.js`), so the
 * same compiled test runs from dist/ and from a private build folder.
 *
 * @module
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa, type ResultPromise } from "execa";

/** The compiled CLI next to this compiled file. */
export const CLI_PATH: string = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

/** How long a node may take to log "listening". */
export const READY_TIMEOUT_MS = 10_000;
/** How long {@linkcode NodeHandle.stop} waits after SIGTERM before SIGKILL. */
export const STOP_TIMEOUT_MS = 10_000;
/** How long a CLI run that is expected to exit by itself may take. */
export const EXIT_TIMEOUT_MS = 15_000;
/** Most stderr bytes kept per node (the oldest are dropped past it). */
export const MAX_STDERR_BYTES = 8 * 1_048_576;

/** Options for {@linkcode startNode}. */
export interface StartNodeOptions {
  /**
   * Extra `ringkv node` flags. `--id n1`, `--host 127.0.0.1`, `--port 0` and
   * `--data-dir <dataDir>` are added unless the flag or its variable in `env` is given.
   */
  args?: string[];
  /** Data directory; a fresh temporary one when absent. */
  dataDir?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Deadline for the listening line. Defaults to {@linkcode READY_TIMEOUT_MS}. */
  readyTimeoutMs?: number;
}

/** How a process ended. */
export interface Exit {
  /** Exit code, or null when a signal ended it. */
  code: number | null;
  signal: string | null;
}

/** A running (or stopped) node process. */
export interface NodeHandle {
  /** Client port of the current process. */
  readonly port: number;
  /** PID of the current process. */
  readonly pid: number;
  readonly dataDir: string;
  /** Everything the current process wrote to stderr so far (its JSON log). */
  stderr(): string;
  /** Its stdout so far. */
  stdout(): string;
  /** The stderr lines that are JSON objects, parsed. */
  events(): Record<string, unknown>[];
  /** Waits until a log event matches `predicate`; rejects after `timeoutMs`. */
  waitForEvent(predicate: (event: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** True until the current process has exited. */
  alive(): boolean;
  /** Sends `signal` and resolves with the exit code (null if the signal ended it). */
  kill(signal: NodeJS.Signals): Promise<number | null>;
  /** Resolves with how the current process ended (whenever it does). */
  exited(): Promise<Exit>;
  /** SIGTERM, then SIGKILL past {@linkcode STOP_TIMEOUT_MS}; resolves with the exit code (128 + 9 if it had to be killed). */
  stop(): Promise<number>;
  /** Stops the process if running and starts a new one on the same data dir (and the same args plus `extraArgs`). */
  restart(extraArgs?: string[]): Promise<NodeHandle>;
}

/** Result of a CLI run that ends by itself. */
export interface CliResult {
  exitCode: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Options for {@linkcode runCli}. */
export interface RunCliOptions {
  env?: Record<string, string>;
  /** Kill the run after this long (then `signal` is set). Defaults to {@linkcode EXIT_TIMEOUT_MS}. */
  timeoutMs?: number;
}

const liveChildren = new Set<number>();
const tempDirs = new Set<string>();

process.on("exit", () => {
  for (const pid of liveChildren) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  for (const dir of tempDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // A node killed just now may still be creating files: leave the rest to the OS's tmp cleaning.
    }
  }
});

/** A fresh temporary directory under os.tmpdir(), removed when the test process exits. */
export function makeTempDir(prefix = "ringkv-bbox-"): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** Runs the `ringkv` CLI with `args` until it exits by itself (bad flags, --help, refusing to start). */
export async function runCli(args: string[], options: RunCliOptions = {}): Promise<CliResult> {
  const child = execa("node", [CLI_PATH, ...args], {
    reject: false,
    env: { NO_COLOR: "1", ...options.env },
    timeout: options.timeoutMs ?? EXIT_TIMEOUT_MS,
    killSignal: "SIGKILL",
    stdin: "ignore",
  });
  if (child.pid !== undefined) liveChildren.add(child.pid);
  const result = await child;
  if (child.pid !== undefined) liveChildren.delete(child.pid);
  return {
    exitCode: result.exitCode ?? null,
    signal: result.signal ?? null,
    stdout: String(result.stdout ?? ""),
    stderr: String(result.stderr ?? ""),
  };
}

/** Starts `ringkv node` and resolves once it listens (rejects with its stderr if it exits or misses the deadline). */
export async function startNode(options: StartNodeOptions = {}): Promise<NodeHandle> {
  const dataDir = options.dataDir ?? makeTempDir();
  const handle = new NodeProcess(dataDir, options.args ?? [], options.env ?? {}, options.readyTimeoutMs ?? READY_TIMEOUT_MS);
  await handle.launch([]);
  return handle;
}

/** The value following `flag` in `args`, if any. */
function flagValue(args: readonly string[], flag: string): string | undefined {
  const at = args.indexOf(flag);
  return at === -1 ? undefined : args[at + 1];
}

class NodeProcess implements NodeHandle {
  #port = 0;
  #pid = 0;
  #child: ResultPromise | undefined;
  #stderr = "";
  #stdout = "";
  #exit: Promise<Exit> = Promise.resolve({ code: null, signal: null });
  #running = false;
  #extraArgs: string[] = [];
  #listeners = new Set<() => void>();

  constructor(
    readonly dataDir: string,
    private readonly args: string[],
    private readonly env: Record<string, string>,
    private readonly readyTimeoutMs: number,
  ) {}

  get port(): number {
    return this.#port;
  }

  get pid(): number {
    return this.#pid;
  }

  /** The full argument list: defaults first so the caller's flags win on repeats. */
  #argv(): string[] {
    const given = [...this.args, ...this.#extraArgs];
    const argv = ["node"];
    // A default only where neither a flag nor its environment variable says otherwise.
    const unset = (flag: string, env: string): boolean => flagValue(given, flag) === undefined && this.env[env] === undefined;
    if (unset("--id", "RINGKV_ID")) argv.push("--id", "n1");
    if (unset("--host", "RINGKV_HOST")) argv.push("--host", "127.0.0.1");
    if (unset("--port", "RINGKV_PORT")) argv.push("--port", "0");
    if (unset("--data-dir", "RINGKV_DATA_DIR")) argv.push("--data-dir", this.dataDir);
    return [...argv, ...given];
  }

  async launch(extraArgs: string[]): Promise<void> {
    assert(!this.#running, "launch while a process is running");
    this.#extraArgs = [...this.#extraArgs, ...extraArgs];
    this.#stderr = "";
    this.#stdout = "";
    const child = execa("node", [CLI_PATH, ...this.#argv()], {
      reject: false,
      buffer: false,
      stdin: "ignore",
      env: { NO_COLOR: "1", ...this.env },
    });
    this.#child = child;
    assert(child.pid !== undefined, "the node process did not spawn");
    const pid = child.pid;
    this.#pid = pid;
    this.#running = true;
    liveChildren.add(pid);
    this.#exit = new Promise<Exit>((resolve) => {
      child.on("exit", (code, signal) => {
        this.#running = false;
        liveChildren.delete(pid);
        this.#notify();
        resolve({ code, signal });
      });
    });
    // execa's own promise: settles after exit; reject is off, so it never rejects.
    void child.then(() => {}, () => {});
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (text: string) => {
      this.#stderr += text;
      if (this.#stderr.length > MAX_STDERR_BYTES) this.#stderr = this.#stderr.slice(-MAX_STDERR_BYTES / 2);
      this.#notify();
    });
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (text: string) => {
      this.#stdout += text;
      if (this.#stdout.length > MAX_STDERR_BYTES) this.#stdout = this.#stdout.slice(-MAX_STDERR_BYTES / 2);
    });
    let listening: Record<string, unknown>;
    try {
      listening = await this.waitForEvent((e) => e.event === "listening", this.readyTimeoutMs);
    } catch (error) {
      if (this.#running) {
        process.kill(pid, "SIGKILL");
        await this.#exit;
      }
      throw new Error(`node did not start: ${(error as Error).message}\n--- stderr ---\n${this.#stderr}`);
    }
    assert(typeof listening.port === "number" && listening.port > 0, `listening line without a port: ${JSON.stringify(listening)}`);
    this.#port = listening.port;
  }

  #notify(): void {
    for (const listener of [...this.#listeners]) listener();
  }

  stderr(): string {
    return this.#stderr;
  }

  stdout(): string {
    return this.#stdout;
  }

  events(): Record<string, unknown>[] {
    const events: Record<string, unknown>[] = [];
    for (const line of this.#stderr.split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        const parsed = JSON.parse(line) as unknown;
        if (typeof parsed === "object" && parsed !== null) events.push(parsed as Record<string, unknown>);
      } catch {
        // A line cut by the stderr cap, or not JSON: skip it.
      }
    }
    return events;
  }

  waitForEvent(predicate: (event: Record<string, unknown>) => boolean, timeoutMs = READY_TIMEOUT_MS): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const found = this.events().find(predicate);
        if (found !== undefined) {
          done();
          resolve(found);
        } else if (!this.#running) {
          done();
          reject(new Error("the process exited before the awaited log event"));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no matching log event within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.#listeners.delete(check);
      };
      this.#listeners.add(check);
      check();
    });
  }

  alive(): boolean {
    return this.#running;
  }

  exited(): Promise<Exit> {
    return this.#exit;
  }

  async kill(signal: NodeJS.Signals): Promise<number | null> {
    if (this.#running) process.kill(this.#pid, signal);
    return (await this.#exit).code;
  }

  async stop(): Promise<number> {
    if (this.#running) process.kill(this.#pid, "SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<"late">((resolve) => {
      timer = setTimeout(() => resolve("late"), STOP_TIMEOUT_MS);
    });
    const first = await Promise.race([this.#exit, deadline]);
    clearTimeout(timer);
    if (first !== "late") return first.code ?? 128 + signalNumber(first.signal);
    process.kill(this.#pid, "SIGKILL");
    await this.#exit;
    return 128 + 9;
  }

  async restart(extraArgs: string[] = []): Promise<NodeHandle> {
    if (this.#running) await this.stop();
    await this.launch(extraArgs);
    return this;
  }
}

function signalNumber(signal: string | null): number {
  return signal === null ? 0 : (os.constants.signals as Record<string, number>)[signal] ?? 0;
}
