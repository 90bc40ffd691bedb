/**
 * `ringkv bench-suite` (behind `npm run bench`): starts ringkv, Redis and
 * etcd on loopback, drives them with the same load shapes, and prints a
 * Markdown comparison; `--write-docs` puts it into docs/performance.md.
 *
 * The targets it shows are benchmarks, not tests: the suite reports whether
 * they were met and never fails because they were not. It fails (exit 1)
 * only when a server would not start or a run saw errors.
 *
 * @module
 */
import { freePort, freePortRun } from "../net/ports.ts";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import {
  type BenchResult,
  keyName,
  LatencyHistogram,
  type LatencySummary,
  loadKeys,
  ReplyKind,
  RespReplyParser,
  runBench,
  summarize,
} from "./bench.ts";
import { startLocalStack, type LocalStack } from "../node/local_cluster.ts";
import { formatRolling, ROLLING_NODES, type RollingResult, runRolling } from "./rolling.ts";

/** How long a started server gets to accept connections. */
export const START_TIMEOUT_MS = 30_000;
/** How long a stopped server gets to exit after SIGTERM before SIGKILL. */
export const STOP_TIMEOUT_MS = 10_000;
/** How long a restarted node may take to answer its first GET before the measurement gives up. */
export const RESTART_TIMEOUT_MS = 60_000;
/** Between restart probes. */
const RESTART_POLL_MS = 5;
/** One RESP request/reply exchange of the suite's own (not the load). */
const COMMAND_TIMEOUT_MS = 5_000;
/** One HTTP request to etcd. */
export const HTTP_REQUEST_TIMEOUT_MS = 10_000;
/** Bytes of a child's output kept to explain a failure. */
const OUTPUT_TAIL_BYTES = 16 * 1024;
/** Random GETs after a restart that must all hit. */
export const RESTART_VERIFY_GETS = 2_000;
/** Restart target from the issue: spawn to first successful GET. */
export const RESTART_TARGET_S = 2;
/** How long a replicated cluster gets to accept its first write. */
const CLUSTER_READY_TIMEOUT_MS = 90_000;

/** The standalone shapes: (connections, pipeline). */
export const STANDALONE_SHAPES: readonly Shape[] = [
  { connections: 1, pipeline: 1 },
  { connections: 8, pipeline: 1 },
  { connections: 8, pipeline: 32 },
];

/** The replicated shapes: in flight 1, 8, 64 (one request per connection), then 8 connections × 32. */
export const CLUSTER_SHAPES: readonly Shape[] = [
  { connections: 1, pipeline: 1 },
  { connections: 8, pipeline: 1 },
  { connections: 64, pipeline: 1 },
  { connections: 8, pipeline: 32 },
];

const VALUE_SIZE = 100;
const KEYSPACE = 100_000;

/** A load shape: connections × requests in flight per connection. */
export interface Shape {
  connections: number;
  pipeline: number;
}

/** The sections the suite can run. */
export type Section = "standalone" | "ceiling" | "memory" | "etcd" | "cluster" | "handover";
const ALL_SECTIONS: readonly Section[] = ["standalone", "ceiling", "memory", "etcd", "cluster", "handover"];

/** What one measured run reports (a {@linkcode BenchResult} or the etcd HTTP client's equivalent). */
export interface Measurement {
  ops: number;
  opsPerSec: number;
  errors: number;
  errorSamples: string[];
  misses: number;
  latencyMs: LatencySummary;
  clientCpu: number;
  failure?: string;
}

/** One row of a comparison table. */
export interface ComparisonRow {
  workload: string;
  shape: Shape;
  ringkv?: Measurement;
  other?: Measurement;
}

/** The memory and restart measurements of one server. */
export interface MemoryReport {
  keys: number;
  loadSeconds?: number;
  loadOpsPerSec?: number;
  rssBytes?: number;
  peakRssBytes?: number;
  /** Did SIGTERM stop it within {@linkcode STOP_TIMEOUT_MS}? */
  gracefulStop?: boolean;
  /** Seconds from spawn to the first GET that returned a loaded key's value. */
  restartSeconds?: number;
  /** Replies that were not the value (miss, error) before the first hit. */
  probesBeforeHit?: number;
  /** Random GETs after restart that found their key, out of {@linkcode RESTART_VERIFY_GETS}. */
  verifiedHits?: number;
  note?: string;
  failure?: string;
}

/** Everything one suite run measured. */
export interface SuiteReport {
  startedAt: string;
  machine: MachineInfo;
  durationS: number;
  warmupS: number;
  standalone?: { rows: ComparisonRow[]; ringkvFailure?: string; redisFailure?: string };
  /**
   * ringkv against the Node.js ceiling server: what a Node server reaches
   * here. `replicated` has only the ceiling's side; ringkv's is the
   * cluster section's (shown together when both ran).
   */
  ceiling?: { rows: ComparisonRow[]; replicated: ComparisonRow[]; ringkvFailure?: string; ceilingFailure?: string };
  memory?: { ringkv: MemoryReport; redis: MemoryReport };
  cluster?: { rows: ComparisonRow[]; ringkvFailure?: string; etcdFailure?: string; etcdLeader?: string };
  /** Planned restarts (graceful handover) under load: the rolling-restart drill. */
  handover?: { result?: RollingResult; failure?: string };
}

/** Where the numbers were measured. */
export interface MachineInfo {
  cpus: number;
  cpuModel: string;
  node: string;
  redis: string;
  etcd: string;
  kernel: string;
  dataFilesystem: string;
  loadAverage: string;
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/** Every child still running, so an interrupted suite can stop them (by PID). */
const running = new Set<ManagedProcess>();

/** Options for {@linkcode ManagedProcess.start}. */
export interface StartOptions {
  /** Name used in messages. Defaults to the command's base name. */
  name?: string;
}

/** A server process the suite started; stopped by its PID only. */
export class ManagedProcess {
  readonly name: string;
  readonly child: ChildProcess;
  /** When it was spawned (performance.now() ms). */
  readonly spawnedAt: number;
  #output = "";
  #exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exited: Promise<void>;

  private constructor(name: string, child: ChildProcess, spawnedAt: number) {
    this.name = name;
    this.child = child;
    this.spawnedAt = spawnedAt;
    const keep = (chunk: Buffer) => {
      this.#output = (this.#output + chunk.toString("utf8")).slice(-OUTPUT_TAIL_BYTES);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.#exit = { code, signal };
        running.delete(this);
        resolve();
      });
      child.once("error", (error) => {
        this.#output += `\nspawn error: ${error.message}`;
        this.#exit ??= { code: null, signal: null };
        running.delete(this);
        resolve();
      });
    });
  }

  /** Spawns `command args` with output captured (the last {@linkcode OUTPUT_TAIL_BYTES}). */
  static start(command: string, args: readonly string[], options: StartOptions = {}): ManagedProcess {
    const name = options.name ?? path.basename(command);
    const spawnedAt = performance.now();
    const child = spawn(command, [...args], { stdio: ["ignore", "pipe", "pipe"] });
    const managed = new ManagedProcess(name, child, spawnedAt);
    running.add(managed);
    return managed;
  }

  /** The PID (undefined if the spawn failed). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** True once the process exited. */
  get hasExited(): boolean {
    return this.#exit !== undefined;
  }

  /** The end of its output and how it exited, to explain a failure. */
  describe(): string {
    const how = this.#exit === undefined
      ? "still running"
      : `exited with ${this.#exit.signal ?? `code ${this.#exit.code}`}`;
    const lines = this.#output.trim().split("\n").filter((line) => line.trim() !== "");
    // The first error line says more than the end of a stack trace.
    const firstError = lines.find((line) => /error/i.test(line));
    const tail = [...(firstError === undefined ? [] : [firstError.trim()]), ...lines.slice(-3).map((line) => line.trim())];
    return `${this.name} (pid ${this.pid ?? "none"}) ${how}${tail.length > 0 ? `; output: ${[...new Set(tail)].join(" / ")}` : ""}`;
  }

  /** SIGTERM, then SIGKILL after `timeoutMs`; resolves true if it exited on SIGTERM alone. */
  async stop(timeoutMs: number = STOP_TIMEOUT_MS): Promise<boolean> {
    if (this.hasExited) return true;
    this.child.kill("SIGTERM");
    if (await within(this.exited, timeoutMs)) return true;
    this.child.kill("SIGKILL");
    await within(this.exited, timeoutMs);
    return false;
  }
}

/** Resolves true if `promise` settles within `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Options for {@linkcode waitForPort} and {@linkcode respCommand}. */
export interface WaitOptions {
  /** Deadline in ms (waitForPort: {@linkcode START_TIMEOUT_MS}; respCommand: 5 s). */
  timeoutMs?: number;
}

/** Waits until 127.0.0.1:`port` accepts a connection; throws if `owner` exits first or the deadline passes. */
export async function waitForPort(port: number, owner: ManagedProcess, options: WaitOptions = {}): Promise<void> {
  const timeoutMs = options.timeoutMs ?? START_TIMEOUT_MS;
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (owner.hasExited) throw new Error(`did not start: ${owner.describe()}`);
    if (await canConnect(port)) return;
    await sleep(20);
  }
  throw new Error(`port ${port} not accepting after ${timeoutMs} ms: ${owner.describe()}`);
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Sends one RESP command and returns the reply's kind and text; throws on a timeout or a closed connection. */
export function respCommand(
  port: number,
  args: readonly string[],
  options: WaitOptions = {},
): Promise<{ kind: ReplyKind; text: string | undefined }> {
  const timeoutMs = options.timeoutMs ?? COMMAND_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.1" });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${args[0]} on port ${port}: no reply within ${timeoutMs} ms`));
    }, timeoutMs);
    const parser = new RespReplyParser((kind, text) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ kind, text });
    });
    socket.on("data", (chunk: Buffer) => {
      try {
        parser.feed(chunk);
      } catch (error) {
        clearTimeout(timer);
        socket.destroy();
        reject(error);
      }
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.once("close", () => {
      clearTimeout(timer);
      reject(new Error(`${args[0]} on port ${port}: connection closed before a reply`));
    });
    socket.write(encodeResp(args));
  });
}

function encodeResp(args: readonly string[]): string {
  return `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join("")}`;
}

/** VmRSS and VmHWM of `pid` in bytes, from /proc/<pid>/status. */
export function readRss(pid: number): { rss: number; peak: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name: string): number => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status);
    if (match === null) throw new Error(`no ${name} in /proc/${pid}/status`);
    return Number(match[1]) * 1024;
  };
  return { rss: field("VmRSS"), peak: field("VmHWM") };
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

/** A started server: where it listens and how to stop it. */
interface Server {
  port: number;
  process: ManagedProcess;
}

/** Where the suite keeps data dirs and finds the ringkv entry point. */
interface Context {
  tmpRoot: string;
  mainJs: string;
  log: (line: string) => void;
  durationS: number;
  warmupS: number;
}

/** Starts `command args`, a server that will listen on `port`; resolves once it accepts connections, else stops it and throws. */
async function startListening(command: string, args: readonly string[], options: { port: number; name: string }): Promise<Server> {
  const managed = ManagedProcess.start(command, args, { name: options.name });
  try {
    await waitForPort(options.port, managed);
  } catch (error) {
    await managed.stop();
    throw error;
  }
  return { port: options.port, process: managed };
}

async function startRingkvNode(
  context: Context,
  dataDir: string,
  options: { fsync: "always" | "never"; port?: number },
): Promise<Server> {
  const port = options.port ?? await freePort();
  const args = [
    context.mainJs,
    "node",
    "--id",
    "bench1",
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "--data-dir",
    dataDir,
    "--fsync",
    options.fsync,
    "--log-level",
    "warn",
  ];
  return startListening(process.execPath, args, { port, name: `ringkv node (fsync ${options.fsync})` });
}

async function startRedis(dir: string, durable: boolean): Promise<Server> {
  const port = await freePort();
  const persistence = durable
    ? ["--appendonly", "yes", "--appendfsync", "always"]
    : ["--appendonly", "no"];
  const args = [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--dir",
    dir,
    "--save",
    "",
    ...persistence,
    "--daemonize",
    "no",
    "--protected-mode",
    "no",
    "--logfile",
    "",
  ];
  return startListening("redis-server", args, { port, name: `redis-server (${durable ? "appendfsync always" : "no persistence"})` });
}

function makeDir(context: Context, name: string): string {
  const dir = path.join(context.tmpRoot, name);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

// ---------------------------------------------------------------------------
// Standalone section
// ---------------------------------------------------------------------------

function shapeLabel(shape: Shape): string {
  return `${shape.connections}×${shape.pipeline}`;
}

async function measure(
  context: Context,
  port: number | readonly number[],
  label: string,
  shape: Shape,
  op: "put" | "get",
): Promise<BenchResult> {
  const result = await runBench({
    ports: typeof port === "number" ? [port] : port,
    connections: shape.connections,
    pipeline: shape.pipeline,
    valueSize: VALUE_SIZE,
    keyspace: KEYSPACE,
    ratio: op === "put" ? 1 : 0,
    durationS: context.durationS,
    warmupS: context.warmupS,
  });
  context.log(`  ${label} ${op.toUpperCase()} ${shapeLabel(shape)}: ${describeMeasurement(result)}`);
  return result;
}

function describeMeasurement(m: Measurement): string {
  if (m.failure !== undefined) return `FAILED: ${m.failure}`;
  const l = m.latencyMs;
  return `${Math.round(m.opsPerSec)} ops/s, p50 ${fmtMs(l.p50)} p99 ${fmtMs(l.p99)} p999 ${fmtMs(l.p999)} ms, ` +
    `${m.errors} errors, ${m.misses} misses, client cpu ${Math.round(m.clientCpu * 100)} %`;
}

/** One side of the standalone comparison: its durable server, its GET server, or why it is missing. */
interface Side {
  label: string;
  durable?: Server;
  reads?: Server;
  failure?: string;
}

async function startSide(label: string, start: () => Promise<Pick<Side, "durable" | "reads">>, log: Context["log"]): Promise<Side> {
  try {
    const side: Side = { label, ...(await start()) };
    log(`${label}: durable on port ${side.durable?.port} (pid ${side.durable?.process.pid}), ` +
      `reads on port ${side.reads?.port} (pid ${side.reads?.process.pid})`);
    return side;
  } catch (error) {
    log(`${label}: ${(error as Error).message}`);
    return { label, failure: (error as Error).message };
  }
}

/** Measures one cell unless the side already failed; a failed run marks the side failed. */
async function cell(context: Context, side: Side, server: Server | undefined, shape: Shape, op: "put" | "get"): Promise<BenchResult | undefined> {
  if (side.failure !== undefined || server === undefined) return undefined;
  const result = await measure(context, server.port, side.label, shape, op);
  if (result.failure !== undefined) side.failure = `${op.toUpperCase()} ${shapeLabel(shape)}: ${result.failure}`;
  return result;
}

async function preloadSide(context: Context, side: Side): Promise<void> {
  if (side.failure !== undefined || side.reads === undefined) return;
  const loaded = await loadKeys({ port: side.reads.port, keyspace: KEYSPACE, valueSize: VALUE_SIZE, log: context.log });
  if (loaded.failure !== undefined) side.failure = `preload: ${loaded.failure}`;
}

/** What {@linkcode compareSection} measured. */
interface Comparison {
  rows: ComparisonRow[];
  ringkvFailure?: string;
  otherFailure?: string;
}

/**
 * ringkv's standalone node against another server, PUT then GET at each
 * shape. Every server up at once (idle ones cost nothing), cells
 * alternating ringkv, other, ringkv, … so background load that drifts
 * during the run hits both sides alike.
 */
async function compareSection(
  context: Context,
  shapes: readonly Shape[],
  options: { skipRingkv: boolean; other: Side },
): Promise<Comparison> {
  const rows: ComparisonRow[] = [
    ...shapes.map((shape) => ({ workload: "durable PUT", shape })),
    ...shapes.map((shape) => ({ workload: "GET (preloaded)", shape })),
  ];
  const other = options.other;
  const ringkv: Side = options.skipRingkv
    ? { label: "ringkv", failure: "skipped (--skip-ringkv)" }
    : await startSide("ringkv", async () => {
      // GETs go to the same fsync-always node: reads do not fsync, and it is the node users run.
      const node = await startRingkvNode(context, makeDir(context, "ringkv-standalone"), { fsync: "always" });
      return { durable: node, reads: node };
    }, context.log);
  try {
    for (const [i, shape] of shapes.entries()) {
      rows[i].ringkv = await cell(context, ringkv, ringkv.durable, shape, "put");
      rows[i].other = await cell(context, other, other.durable, shape, "put");
    }
    await preloadSide(context, ringkv);
    await preloadSide(context, other);
    for (const [i, shape] of shapes.entries()) {
      const row = rows[shapes.length + i];
      row.ringkv = await cell(context, ringkv, ringkv.reads, shape, "get");
      row.other = await cell(context, other, other.reads, shape, "get");
    }
  } finally {
    const servers = new Set([ringkv.durable, ringkv.reads, other.durable, other.reads]);
    await Promise.all([...servers].map((server) => server?.process.stop()));
  }
  return { rows, ringkvFailure: ringkv.failure, otherFailure: other.failure };
}

async function standaloneSection(
  context: Context,
  skipRingkv: boolean,
): Promise<NonNullable<SuiteReport["standalone"]>> {
  const redis = await startSide("redis", async () => {
    const durable = await startRedis(makeDir(context, "redis-durable"), true);
    try {
      return { durable, reads: await startRedis(makeDir(context, "redis-memory"), false) };
    } catch (error) {
      await durable.process.stop();
      throw error;
    }
  }, context.log);
  const compared = await compareSection(context, STANDALONE_SHAPES, { skipRingkv, other: redis });
  return { rows: compared.rows, ringkvFailure: compared.ringkvFailure, redisFailure: compared.otherFailure };
}

/** The ceiling shapes: the standalone targets' shape, and the replicated target's in-flight count. */
export const CEILING_SHAPES: readonly Shape[] = [
  { connections: 8, pipeline: 32 },
  { connections: 64, pipeline: 1 },
];

/** The Node.js ceiling server (bench/ceiling_server.ts), next to this file once built. */
const CEILING_SERVER_JS = fileURLToPath(new URL("../../bench/ceiling_server.js", import.meta.url));

/** Starts one ceiling server process (`extra`: its role flags); resolves once it listens. */
async function startCeilingProcess(context: Context, name: string, extra: readonly string[]): Promise<Server> {
  const port = await freePort();
  const log = path.join(makeDir(context, "ceiling"), `${name}.log`);
  return startListening(process.execPath, [CEILING_SERVER_JS, "--port", String(port), "--log", log, ...extra], {
    port,
    name: `Node ceiling server (${name})`,
  });
}

/**
 * The replicated ceiling, as the replicated rows are driven: its leader
 * and two followers each keep a copy, a write is answered once durable on
 * two of the three. Every cell goes to the leader (etcd's best case).
 */
async function replicatedCeiling(context: Context): Promise<{ rows: ComparisonRow[]; failure?: string }> {
  const rows: ComparisonRow[] = CLUSTER_SHAPES.map((shape) => ({ workload: "replicated durable PUT", shape }));
  const started: Server[] = [];
  try {
    for (const name of ["follower1", "follower2"]) started.push(await startCeilingProcess(context, name, ["--follower"]));
    const followers = started.map((server) => String(server.port)).join(",");
    const leader = await startCeilingProcess(context, "leader", ["--followers", followers]);
    started.push(leader);
    context.log(`ceiling (3 copies): leader on port ${leader.port}, followers on ${followers}`);
    for (const row of rows) {
      row.other = await measure(context, leader.port, "ceiling (3 copies)", row.shape, "put");
      if (row.other.failure !== undefined) return { rows, failure: `PUT ${shapeLabel(row.shape)}: ${row.other.failure}` };
    }
    return { rows };
  } catch (error) {
    context.log(`ceiling (3 copies): ${(error as Error).message}`);
    return { rows, failure: (error as Error).message };
  } finally {
    await Promise.all(started.map((server) => server.process.stop()));
  }
}

/** ringkv against the least a Node.js server can do (see bench/ceiling_server.ts), alone and with 3 copies. */
async function ceilingSection(context: Context, skipRingkv: boolean): Promise<NonNullable<SuiteReport["ceiling"]>> {
  const ceiling = await startSide("ceiling", async () => {
    const server = await startCeilingProcess(context, "standalone", []);
    return { durable: server, reads: server };
  }, context.log);
  const compared = await compareSection(context, CEILING_SHAPES, { skipRingkv, other: ceiling });
  const replicated = await replicatedCeiling(context);
  return {
    rows: compared.rows,
    replicated: replicated.rows,
    ringkvFailure: compared.ringkvFailure,
    ceilingFailure: compared.otherFailure ?? replicated.failure,
  };
}

// ---------------------------------------------------------------------------
// Memory and restart section
// ---------------------------------------------------------------------------

/** Polls GET `key` from spawn until it returns a value; returns seconds since `process.spawnedAt`. */
async function timeToFirstHit(
  port: number,
  owner: ManagedProcess,
  key: string,
): Promise<{ seconds: number; probesBeforeHit: number }> {
  const deadline = owner.spawnedAt + RESTART_TIMEOUT_MS;
  let probes = 0;
  while (performance.now() < deadline) {
    if (owner.hasExited) throw new Error(`exited during restart: ${owner.describe()}`);
    try {
      const reply = await respCommand(port, ["GET", key], { timeoutMs: 1_000 });
      if (reply.kind === ReplyKind.VALUE) {
        return { seconds: (performance.now() - owner.spawnedAt) / 1000, probesBeforeHit: probes };
      }
      probes++; // served, but not the value yet (a miss or an error such as LOADING)
    } catch {
      // not listening yet
    }
    await sleep(RESTART_POLL_MS);
  }
  throw new Error(`no successful GET ${key} within ${RESTART_TIMEOUT_MS} ms of spawn`);
}

/** Loads `keys` keys, reads RSS; then (via `restart`) stops, restarts, and times the first hit. */
async function memoryOf(
  context: Context,
  keys: number,
  server: Server,
  restart: (previous: Server) => Promise<Server>,
  report: MemoryReport,
): Promise<Server> {
  const loaded = await loadKeys({ port: server.port, keyspace: keys, valueSize: VALUE_SIZE, connections: 8, log: context.log });
  if (loaded.failure !== undefined) throw new Error(`load: ${loaded.failure}`);
  report.loadSeconds = loaded.windowS;
  report.loadOpsPerSec = loaded.opsPerSec;
  assert(server.process.pid !== undefined, "a running server has a pid");
  const { rss, peak } = readRss(server.process.pid);
  report.rssBytes = rss;
  report.peakRssBytes = peak;
  context.log(`  ${server.process.name}: ${keys} keys, RSS ${mib(rss)} MiB (peak ${mib(peak)} MiB)`);
  const next = await restart(server);
  const probeKey = keyName(Math.floor(keys / 2));
  const first = await timeToFirstHit(next.port, next.process, probeKey);
  report.restartSeconds = first.seconds;
  report.probesBeforeHit = first.probesBeforeHit;
  const verify = await runBench({
    port: next.port,
    connections: 1,
    pipeline: 16,
    keyspace: keys,
    valueSize: VALUE_SIZE,
    ratio: 0,
    requests: RESTART_VERIFY_GETS,
    warmupS: 0,
  });
  if (verify.failure !== undefined) throw new Error(`verify after restart: ${verify.failure}`);
  report.verifiedHits = verify.gets - verify.misses;
  context.log(
    `  ${next.process.name}: first GET hit ${first.seconds.toFixed(3)} s after spawn; ` +
      `${report.verifiedHits}/${RESTART_VERIFY_GETS} random keys found`,
  );
  return next;
}

async function memorySection(
  context: Context,
  keys: number,
  skipRingkv: boolean,
): Promise<NonNullable<SuiteReport["memory"]>> {
  const ringkv: MemoryReport = {
    keys,
    note: "loaded with --fsync never (loading only); SIGTERM, then restarted on the same data dir",
  };
  const redis: MemoryReport = {
    keys,
    note: "no persistence while loading; then SAVE (RDB), SIGTERM, restarted on the same dir",
  };
  if (skipRingkv) ringkv.failure = "skipped (--skip-ringkv)";
  else {
    const dataDir = makeDir(context, "ringkv-memory");
    let server: Server | undefined;
    try {
      server = await startRingkvNode(context, dataDir, { fsync: "never" });
      context.log(`ringkv node (fsync never) on port ${server.port}, pid ${server.process.pid}`);
      server = await memoryOf(context, keys, server, async (previous) => {
        ringkv.gracefulStop = await previous.process.stop();
        const managed = startRingkvProcessOnly(context, dataDir, previous.port);
        return { port: previous.port, process: managed };
      }, ringkv);
    } catch (error) {
      ringkv.failure = (error as Error).message;
      context.log(`ringkv memory: ${ringkv.failure}`);
    } finally {
      if (server !== undefined) await server.process.stop();
    }
  }
  const redisDir = makeDir(context, "redis-rdb");
  let server: Server | undefined;
  try {
    server = await startRedis(redisDir, false);
    context.log(`redis (no persistence) on port ${server.port}, pid ${server.process.pid}`);
    server = await memoryOf(context, keys, server, async (previous) => {
      const saved = await respCommand(previous.port, ["SAVE"], { timeoutMs: 120_000 });
      if (saved.kind !== ReplyKind.OK) throw new Error(`SAVE: ${saved.text}`);
      redis.gracefulStop = await previous.process.stop();
      // Same flags as startRedis, same port: redis loads dump.rdb from --dir at start.
      const managed = ManagedProcess.start("redis-server", [
        "--port",
        String(previous.port),
        "--bind",
        "127.0.0.1",
        "--dir",
        redisDir,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "no",
        "--logfile",
        "",
      ], { name: "redis-server (restart from RDB)" });
      return { port: previous.port, process: managed };
    }, redis);
  } catch (error) {
    redis.failure = (error as Error).message;
    context.log(`redis memory: ${redis.failure}`);
  } finally {
    if (server !== undefined) await server.process.stop();
  }
  return { ringkv, redis };
}

/** Spawns a ringkv node without waiting for its port: the restart clock starts at spawn. */
function startRingkvProcessOnly(context: Context, dataDir: string, port: number): ManagedProcess {
  return ManagedProcess.start(process.execPath, [
    context.mainJs,
    "node",
    "--id",
    "bench1",
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "--data-dir",
    dataDir,
    "--fsync",
    "never",
    "--log-level",
    "warn",
  ], { name: "ringkv node (restarted)" });
}

// ---------------------------------------------------------------------------
// Replicated section: etcd (3 members) and ringkv's cluster
// ---------------------------------------------------------------------------

/** A started 3-member etcd cluster. */
interface EtcdCluster {
  members: { name: string; clientPort: number; process: ManagedProcess }[];
  /** Client port of the current leader (the suite drives the leader: etcd's best case). */
  leaderPort: number;
  leaderName: string;
}

async function startEtcd(context: Context): Promise<EtcdCluster> {
  const names = ["e0", "e1", "e2"];
  const clientPorts: number[] = [];
  const peerPorts: number[] = [];
  for (let i = 0; i < names.length; i++) {
    clientPorts.push(await freePort());
    peerPorts.push(await freePort());
  }
  const initialCluster = names.map((name, i) => `${name}=http://127.0.0.1:${peerPorts[i]}`).join(",");
  const members: EtcdCluster["members"] = [];
  for (const [i, name] of names.entries()) {
    const client = `http://127.0.0.1:${clientPorts[i]}`;
    const peer = `http://127.0.0.1:${peerPorts[i]}`;
    const managed = ManagedProcess.start("etcd", [
      "--name",
      name,
      "--data-dir",
      makeDir(context, `etcd-${name}`),
      "--listen-client-urls",
      client,
      "--advertise-client-urls",
      client,
      "--listen-peer-urls",
      peer,
      "--initial-advertise-peer-urls",
      peer,
      "--initial-cluster",
      initialCluster,
      "--initial-cluster-token",
      `ringkv-bench-${process.pid}`,
      "--initial-cluster-state",
      "new",
      "--logger",
      "zap",
      "--log-outputs",
      "stderr",
      "--log-level",
      "warn",
    ], { name: `etcd ${name}` });
    members.push({ name, clientPort: clientPorts[i], process: managed });
  }
  try {
    const deadline = performance.now() + START_TIMEOUT_MS;
    for (const member of members) {
      while (!(await etcdHealthy(member.clientPort))) {
        if (member.process.hasExited) throw new Error(`did not start: ${member.process.describe()}`);
        if (performance.now() > deadline) throw new Error(`not healthy in time: ${member.process.describe()}`);
        await sleep(50);
      }
    }
    const leader = await etcdLeader(members);
    return { members, leaderPort: leader.clientPort, leaderName: leader.name };
  } catch (error) {
    await stopEtcd({ members, leaderPort: 0, leaderName: "" });
    throw error;
  }
}

async function stopEtcd(cluster: EtcdCluster): Promise<void> {
  await Promise.all(cluster.members.map((member) => member.process.stop()));
}

async function etcdHealthy(port: number): Promise<boolean> {
  try {
    const reply = await httpJson(port, "GET", "/health", undefined);
    return reply.status === 200 && (reply.body as { health?: string }).health === "true";
  } catch {
    return false;
  }
}

async function etcdLeader(members: EtcdCluster["members"]): Promise<EtcdCluster["members"][number]> {
  // maintenance/status names the member answering and the leader it knows.
  for (const member of members) {
    const reply = await httpJson(member.clientPort, "POST", "/v3/maintenance/status", {});
    const body = reply.body as { header?: { member_id?: string }; leader?: string };
    if (body.leader !== undefined && body.header?.member_id === body.leader) return member;
  }
  throw new Error("no etcd member reports itself as leader");
}

/** One JSON request over a fresh connection (setup and health checks, not the load). */
function httpJson(port: number, method: string, urlPath: string, body: unknown): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const request = http.request({
      host: "127.0.0.1",
      port,
      method,
      path: urlPath,
      localAddress: "127.0.0.1",
      timeout: COMMAND_TIMEOUT_MS,
      headers: payload === undefined ? {} : { "content-type": "application/json", "content-length": Buffer.byteLength(payload) },
    }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () => {
        try {
          resolve({ status: response.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) });
        } catch (error) {
          reject(error);
        }
      });
    });
    request.on("timeout", () => request.destroy(new Error(`${method} ${urlPath}: timed out`)));
    request.on("error", reject);
    request.end(payload);
  });
}

/** Options for {@linkcode runEtcdPutBench}. */
export interface EtcdBenchOptions {
  /** Concurrent requests, each on its own keep-alive connection (HTTP/1.1 has no pipelining). */
  inFlight: number;
  durationS: number;
  warmupS: number;
  valueSize?: number;
  keyspace?: number;
}

/**
 * Drives etcd's JSON gateway (`POST /v3/kv/put`, base64 key and value) on
 * 127.0.0.1:`port` with `inFlight` concurrent requests for a duration;
 * same window rules as {@linkcode runBench}: a request counts if sent and
 * answered inside the window.
 */
export async function runEtcdPutBench(port: number, options: EtcdBenchOptions): Promise<Measurement> {
  const valueSize = options.valueSize ?? VALUE_SIZE;
  const keyspace = options.keyspace ?? KEYSPACE;
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.inFlight, maxFreeSockets: options.inFlight });
  const values = Array.from({ length: 256 }, () => randomPrintable(valueSize).toString("base64"));
  const histogram = new LatencyHistogram();
  const errorSamples: string[] = [];
  let errors = 0;
  let ops = 0;
  let failure: string | undefined;
  const start = performance.now();
  const measureStart = start + options.warmupS * 1000;
  const measureEnd = measureStart + options.durationS * 1000;
  let cpuAtStart: NodeJS.CpuUsage | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && performance.now() < measureEnd) {
      const key = Buffer.from(keyName(Math.floor(Math.random() * keyspace))).toString("base64");
      const body = `{"key":"${key}","value":"${values[Math.floor(Math.random() * values.length)]}"}`;
      const sentAt = performance.now();
      if (cpuAtStart === undefined && sentAt >= measureStart) cpuAtStart = process.cpuUsage();
      let outcome: string | undefined;
      try {
        outcome = await etcdPut(port, agent, body);
      } catch (error) {
        failure = `etcd put: ${(error as Error).message}`;
        return;
      }
      const doneAt = performance.now();
      if (sentAt < measureStart || doneAt > measureEnd) continue;
      if (outcome !== undefined) {
        errors++;
        if (errorSamples.length < 5 && !errorSamples.includes(outcome)) errorSamples.push(outcome);
        continue;
      }
      ops++;
      histogram.record((doneAt - sentAt) * 1e6);
    }
  };
  await Promise.all(Array.from({ length: options.inFlight }, worker));
  const cpu = process.cpuUsage(cpuAtStart);
  agent.destroy();
  return {
    ops,
    opsPerSec: ops / options.durationS,
    errors,
    errorSamples,
    misses: 0,
    latencyMs: summarize(histogram),
    clientCpu: (cpu.user + cpu.system) / 1e6 / options.durationS,
    failure,
  };
}

/** One PUT through the gateway; resolves undefined on success, else the error text. */
function etcdPut(port: number, agent: http.Agent, body: string): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const request = http.request({
      host: "127.0.0.1",
      port,
      method: "POST",
      path: "/v3/kv/put",
      agent,
      localAddress: "127.0.0.1",
      timeout: HTTP_REQUEST_TIMEOUT_MS,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
    }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        // Success is 200 with a response header; errors come as {"error": ..., "code": ...}.
        if (response.statusCode === 200 && text.includes('"header"') && !text.includes('"error"')) resolve(undefined);
        else resolve(`HTTP ${response.statusCode}: ${text.slice(0, 200)}`);
      });
    });
    request.on("timeout", () => request.destroy(new Error(`no reply within ${HTTP_REQUEST_TIMEOUT_MS} ms`)));
    request.on("error", reject);
    request.end(body);
  });
}

function randomPrintable(size: number): Buffer {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const buf = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) buf[i] = alphabet.charCodeAt(Math.floor(Math.random() * alphabet.length));
  return buf;
}

/** Options of the ringkv side of the replicated section. */
interface ClusterOptions {
  /** ZooKeeper connect string passed as --zk (without it `ringkv cluster` starts its own on port 2181). */
  zk: string | undefined;
  /** Extra flags for `ringkv cluster`. */
  extraArgs: string[];
}

/** Nodes of the benchmarked cluster: `ringkv cluster --nodes 3` puts every partition on all three. */
const CLUSTER_NODES = 3;

/**
 * The ringkv side of the replicated comparison: `ringkv cluster --nodes 3`
 * (each partition replicated on all 3 nodes), connections spread
 * round-robin over the 3 nodes; a node forwards what it does not lead.
 */
async function ringkvCluster(context: Context, options: ClusterOptions, rows: ComparisonRow[]): Promise<string | undefined> {
  // Integration hook: `ringkv cluster` makes one partition per node, so this is 3 partitions ×
  // 3 replicas (3 leaders), not etcd's single group; a `--partitions 1` flag on the cluster
  // command would make it exactly one 3-replica group (pass it with --cluster-arg=...).
  const clusterJs = path.join(path.dirname(context.mainJs), "cluster.js");
  if (!fs.existsSync(clusterJs)) return `not available yet: ${clusterJs} is not built (the \`ringkv cluster\` command)`;
  const basePort = await freePortRun(CLUSTER_NODES);
  const ports = Array.from({ length: CLUSTER_NODES }, (_, i) => basePort + i);
  const args = [
    context.mainJs,
    "cluster",
    "--nodes",
    String(CLUSTER_NODES),
    "--base-port",
    String(basePort),
    "--data-dir",
    makeDir(context, "ringkv-cluster"),
    "--fresh",
  ];
  if (options.zk !== undefined) args.push("--zk", options.zk);
  args.push(...options.extraArgs);
  const managed = ManagedProcess.start(process.execPath, args, { name: "ringkv cluster" });
  try {
    for (const port of ports) await waitForPort(port, managed, { timeoutMs: CLUSTER_READY_TIMEOUT_MS });
    for (const port of ports) await waitForFirstWrite(port, managed);
    context.log(`ringkv cluster accepting writes on ports ${ports.join(",")}, pid ${managed.pid}`);
    for (const [i, shape] of CLUSTER_SHAPES.entries()) {
      rows[i].ringkv = await measure(context, ports, "ringkv cluster", shape, "put");
    }
    return undefined;
  } catch (error) {
    context.log(`ringkv cluster: ${(error as Error).message}`);
    return (error as Error).message;
  } finally {
    await managed.stop();
  }
}

/** Retries one PUT until the cluster acknowledges it (leaders elected, quorum up). */
async function waitForFirstWrite(port: number, owner: ManagedProcess): Promise<void> {
  const deadline = performance.now() + CLUSTER_READY_TIMEOUT_MS;
  let last = "no reply";
  while (performance.now() < deadline) {
    if (owner.hasExited) throw new Error(`exited: ${owner.describe()}`);
    try {
      const reply = await respCommand(port, ["SET", "bench:ready", "1"]);
      if (reply.kind === ReplyKind.OK) return;
      last = reply.text ?? `kind ${reply.kind}`;
    } catch (error) {
      last = (error as Error).message;
    }
    await sleep(200);
  }
  throw new Error(`no write acknowledged within ${CLUSTER_READY_TIMEOUT_MS} ms (last: ${last})`);
}

async function clusterSection(
  context: Context,
  runRingkv: boolean,
  options: ClusterOptions,
): Promise<NonNullable<SuiteReport["cluster"]>> {
  const rows: ComparisonRow[] = CLUSTER_SHAPES.map((shape) => ({ workload: "replicated durable PUT", shape }));
  const ringkvFailure = runRingkv ? await ringkvCluster(context, options, rows) : "not run (add --cluster)";
  let etcdFailure: string | undefined;
  let etcdLeader: string | undefined;
  let cluster: EtcdCluster | undefined;
  try {
    cluster = await startEtcd(context);
    etcdLeader = cluster.leaderName;
    context.log(`etcd: 3 members up, leader ${cluster.leaderName} on port ${cluster.leaderPort}`);
    for (const [i, shape] of CLUSTER_SHAPES.entries()) {
      const inFlight = shape.connections * shape.pipeline;
      const result = await runEtcdPutBench(cluster.leaderPort, {
        inFlight,
        durationS: context.durationS,
        warmupS: context.warmupS,
      });
      context.log(`  etcd PUT ${inFlight} in flight: ${describeMeasurement(result)}`);
      rows[i].other = result;
    }
  } catch (error) {
    etcdFailure = (error as Error).message;
    context.log(`etcd: ${etcdFailure}`);
  } finally {
    if (cluster !== undefined) await stopEtcd(cluster);
  }
  return { rows, ringkvFailure, etcdFailure, etcdLeader };
}

// ---------------------------------------------------------------------------
// Planned restarts: graceful handover under load
// ---------------------------------------------------------------------------

async function handoverSection(context: Context, zk: string | undefined): Promise<NonNullable<SuiteReport["handover"]>> {
  let stack: LocalStack | undefined;
  try {
    stack = await startLocalStack({
      zk,
      nodes: ROLLING_NODES,
      basePort: await freePortRun(ROLLING_NODES),
      dataDir: makeDir(context, "handover"),
      secret: "bench-secret",
      mainScript: context.mainJs,
    });
    const result = await runRolling(stack.cluster, { clients: 8, rounds: 2, log: context.log });
    context.log(formatRolling(result));
    return { result };
  } catch (error) {
    return { failure: (error as Error).message };
  } finally {
    await stack?.close();
  }
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

function versionOf(command: string, args: string[], pattern: RegExp): string {
  try {
    const out = execFileSync(command, args, { encoding: "utf8", timeout: 5_000, stdio: ["ignore", "pipe", "pipe"] });
    return pattern.exec(out)?.[1] ?? "unknown";
  } catch {
    return "not installed";
  }
}

/** The filesystem holding `dir` (from /proc/mounts: the longest mount point that contains it). */
function filesystemOf(dir: string): string {
  try {
    const real = fs.realpathSync(dir);
    let best = { point: "", text: "unknown" };
    for (const line of fs.readFileSync("/proc/mounts", "utf8").split("\n")) {
      const [device, point, type] = line.split(" ");
      if (point === undefined || type === undefined) continue;
      const inside = real === point || real.startsWith(point.endsWith("/") ? point : `${point}/`);
      if (inside && point.length >= best.point.length) best = { point, text: `${type} (${device} on ${point})` };
    }
    return best.text;
  } catch {
    return "unknown";
  }
}

/** Collects the machine description printed with the results. */
export function machineInfo(dataDir: string): MachineInfo {
  let cpuModel = os.cpus()[0]?.model ?? "unknown";
  try {
    cpuModel = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? cpuModel;
  } catch {
    // not Linux: os.cpus() is good enough
  }
  return {
    cpus: os.availableParallelism(),
    cpuModel,
    node: process.version,
    redis: versionOf("redis-server", ["--version"], /v=(\S+)/),
    etcd: versionOf("etcd", ["--version"], /etcd Version: (\S+)/),
    kernel: `${os.type()} ${os.release()}`,
    dataFilesystem: filesystemOf(dataDir),
    loadAverage: os.loadavg().map((load) => load.toFixed(2)).join(" "),
  };
}

function fmtMs(value: number): string {
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value >= 1 ? value.toFixed(2) : value.toFixed(3);
}

function mib(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(1);
}

function opsCell(m: Measurement | undefined): string {
  if (m === undefined) return "—";
  if (m.failure !== undefined) return "failed";
  const errors = m.errors > 0 ? ` (${m.errors} errors)` : "";
  return `${Math.round(m.opsPerSec).toLocaleString("en-US")}${errors}`;
}

function latencyCell(m: Measurement | undefined): string {
  if (m === undefined || m.failure !== undefined) return "—";
  const l = m.latencyMs;
  return `${fmtMs(l.p50)} / ${fmtMs(l.p99)} / ${fmtMs(l.p999)}`;
}

function ratioOf(row: ComparisonRow): number | undefined {
  const a = row.ringkv;
  const b = row.other;
  if (a === undefined || b === undefined || a.failure !== undefined || b.failure !== undefined) return undefined;
  if (b.opsPerSec === 0) return undefined;
  return a.opsPerSec / b.opsPerSec;
}

function ratioCell(row: ComparisonRow): string {
  const ratio = ratioOf(row);
  return ratio === undefined ? "—" : `${ratio.toFixed(2)}×`;
}

function targetLine(name: string, row: ComparisonRow | undefined, target: number, versus: string): string {
  const ratio = row === undefined ? undefined : ratioOf(row);
  if (ratio === undefined) return `- ${name}: target ≥ ${target}× ${versus} — **not measured**`;
  return `- ${name}: ${ratio.toFixed(2)}× ${versus} (target ≥ ${target}×) — **${ratio >= target ? "met" : "not met"}**`;
}

/** Characters of a failure reason shown under a table. */
const FAILURE_TEXT_LIMIT = 400;

function failureLines(failures: Record<string, string | undefined>): string[] {
  return Object.entries(failures)
    .filter((entry): entry is [string, string] => entry[1] !== undefined)
    .map(([who, why]) => `- ${who}: ${why.replace(/\s+/g, " ").slice(0, FAILURE_TEXT_LIMIT)}`);
}

/** Renders the report as Markdown (what is printed, and what --write-docs puts between the markers). */
export function renderMarkdown(report: SuiteReport): string {
  const m = report.machine;
  const lines: string[] = [
    `Measured ${report.startedAt} on ${m.cpus} × ${m.cpuModel}, ${m.kernel}; Node ${m.node}, ` +
    `Redis ${m.redis}, etcd ${m.etcd}; data on ${m.dataFilesystem}; load average at start ${m.loadAverage}. ` +
    `Each cell: ${report.warmupS} s warmup, then ${report.durationS} s measured; ${VALUE_SIZE} B values, ` +
    `${KEYSPACE.toLocaleString("en-US")} keys of 16 B chosen uniformly; latency p50 / p99 / p999 in ms.`,
    "",
  ];
  if (report.standalone !== undefined) {
    const s = report.standalone;
    lines.push(
      "### Standalone node vs Redis (same RESP client)",
      "",
      "| workload | C×P | ringkv ops/s | ringkv p50 / p99 / p999 | Redis ops/s | Redis p50 / p99 / p999 | ringkv ÷ Redis |",
      "|---|---|--:|--:|--:|--:|--:|",
    );
    for (const row of s.rows) {
      lines.push(
        `| ${row.workload} | ${shapeLabel(row.shape)} | ${opsCell(row.ringkv)} | ${latencyCell(row.ringkv)} | ` +
          `${opsCell(row.other)} | ${latencyCell(row.other)} | ${ratioCell(row)} |`,
      );
    }
    const at = (workload: string) =>
      s.rows.find((row) => row.workload === workload && row.shape.connections === 8 && row.shape.pipeline === 32);
    lines.push(
      "",
      "Durable PUT: ringkv `--fsync always` vs Redis `appendonly yes, appendfsync always`. " +
        "GET: the same ringkv node vs Redis without persistence, both preloaded with every key.",
      "",
      targetLine("durable PUT at 8×32", at("durable PUT"), 1, "Redis appendfsync always"),
      targetLine("GET at 8×32", at("GET (preloaded)"), 0.8, "Redis"),
      ...failureLines({ "ringkv": s.ringkvFailure, "Redis": s.redisFailure }),
      "",
    );
  }
  if (report.ceiling !== undefined) lines.push(...ceilingLines(report));
  if (report.memory !== undefined) {
    const { ringkv, redis } = report.memory;
    const cell = (r: MemoryReport, value: (r: MemoryReport) => string | undefined): string =>
      r.failure !== undefined ? (r.failure.startsWith("skipped") ? "skipped" : "failed") : value(r) ?? "—";
    lines.push(
      `### Memory and restart: ${ringkv.keys.toLocaleString("en-US")} keys (16 B keys, ${VALUE_SIZE} B values)`,
      "",
      "| | ringkv | Redis |",
      "|---|--:|--:|",
      `| load rate (8×64 pipelined PUT) | ${cell(ringkv, (r) => rate(r.loadOpsPerSec))} | ${cell(redis, (r) => rate(r.loadOpsPerSec))} |`,
      `| RSS after load (VmRSS) | ${cell(ringkv, (r) => mibCell(r.rssBytes))} | ${cell(redis, (r) => mibCell(r.rssBytes))} |`,
      `| peak RSS (VmHWM) | ${cell(ringkv, (r) => mibCell(r.peakRssBytes))} | ${cell(redis, (r) => mibCell(r.peakRssBytes))} |`,
      `| stopped by SIGTERM alone | ${cell(ringkv, (r) => yesNo(r.gracefulStop))} | ${cell(redis, (r) => yesNo(r.gracefulStop))} |`,
      `| restart: spawn → first GET hit | ${cell(ringkv, (r) => seconds(r.restartSeconds))} | ${cell(redis, (r) => seconds(r.restartSeconds))} |`,
      `| replies before the first hit | ${cell(ringkv, (r) => r.probesBeforeHit?.toString())} | ${cell(redis, (r) => r.probesBeforeHit?.toString())} |`,
      `| random GETs found after restart | ${cell(ringkv, (r) => verified(r))} | ${cell(redis, (r) => verified(r))} |`,
      "",
      `ringkv: ${ringkv.note}. Redis: ${redis.note}.`,
      "",
      ringkv.restartSeconds === undefined
        ? `- restart to first GET ≤ ${RESTART_TARGET_S} s: **not measured**`
        : `- restart to first GET: ${ringkv.restartSeconds.toFixed(2)} s (target ≤ ${RESTART_TARGET_S} s) — **${
          ringkv.restartSeconds <= RESTART_TARGET_S ? "met" : "not met"
        }**`,
      ...failureLines({ "ringkv": ringkv.failure, "Redis": redis.failure }),
      "",
    );
  }
  if (report.cluster !== undefined) {
    const c = report.cluster;
    lines.push(
      "### Replicated: ringkv (3 replicas) vs etcd (3 members)",
      "",
      "| workload | in flight | ringkv ops/s | ringkv p50 / p99 / p999 | etcd ops/s | etcd p50 / p99 / p999 | ringkv ÷ etcd |",
      "|---|---|--:|--:|--:|--:|--:|",
    );
    for (const row of c.rows) {
      const inFlight = row.shape.connections * row.shape.pipeline;
      const label = row.shape.pipeline === 1 ? `${inFlight}` : `${inFlight} (${shapeLabel(row.shape)})`;
      lines.push(
        `| ${row.workload} | ${label} | ${opsCell(row.ringkv)} | ${latencyCell(row.ringkv)} | ` +
          `${opsCell(row.other)} | ${latencyCell(row.other)} | ${ratioCell(row)} |`,
      );
    }
    lines.push(
      "",
      "ringkv: RESP SET, C connections × P pipelined, spread over the 3 nodes of `ringkv cluster --nodes 3` " +
        "(3 partitions, each replicated on all 3 nodes; a node forwards what it does not lead). " +
        `etcd: \`POST /v3/kv/put\` (JSON gateway, base64) to the leader${c.etcdLeader ? ` (${c.etcdLeader})` : ""}, ` +
        "one keep-alive HTTP/1.1 connection per request in flight (HTTP/1.1 cannot pipeline).",
      "",
      ...failureLines({ "ringkv cluster": c.ringkvFailure, "etcd": c.etcdFailure }),
      "",
    );
  }
  if (report.handover !== undefined) lines.push(...handoverLines(report.handover));
  return lines.join("\n");
}

/** The ceiling tables, and what the throughput targets ask next to what the ceiling reached. */
function ceilingLines(report: SuiteReport): string[] {
  const c = report.ceiling!;
  const find = (rows: ComparisonRow[] | undefined, workload: string, shape: Shape) =>
    rows?.find((row) => row.workload === workload && row.shape.connections === shape.connections && row.shape.pipeline === shape.pipeline);
  // The replicated ceiling next to ringkv's cluster, when the cluster section ran too.
  const replicated = c.replicated.map((row) => ({ ...row, ringkv: find(report.cluster?.rows, row.workload, row.shape)?.ringkv }));
  const lines = [
    "### Node.js ceiling: ringkv vs the least a Node server can do",
    "",
    "| workload | C×P | ringkv ops/s | ringkv p50 / p99 / p999 | ceiling ops/s | ceiling p50 / p99 / p999 | ringkv ÷ ceiling |",
    "|---|---|--:|--:|--:|--:|--:|",
  ];
  for (const row of [...c.rows, ...replicated]) {
    lines.push(
      `| ${row.workload} | ${shapeLabel(row.shape)} | ${opsCell(row.ringkv)} | ${latencyCell(row.ringkv)} | ` +
        `${opsCell(row.other)} | ${latencyCell(row.other)} | ${ratioCell(row)} |`,
    );
  }
  const ops = (m: Measurement | undefined) => (m === undefined || m.failure !== undefined ? undefined : m.opsPerSec);
  const wide = { connections: 8, pipeline: 32 };
  const narrow = { connections: 64, pipeline: 1 };
  const reach = (target: string, needed: number | undefined, reached: number | undefined) =>
    needed === undefined || reached === undefined
      ? []
      : [`- ${target} needs ${Math.round(needed).toLocaleString("en-US")} ops/s; the ceiling reached ` +
        `${Math.round(reached).toLocaleString("en-US")} (${(reached / needed).toFixed(2)}× of it)`];
  const redisPut = ops(find(report.standalone?.rows, "durable PUT", wide)?.other);
  const redisGet = ops(find(report.standalone?.rows, "GET (preloaded)", wide)?.other);
  const etcdPut = ops(find(report.cluster?.rows, "replicated durable PUT", narrow)?.other);
  lines.push(
    "",
    "The ceiling server (`bench/ceiling_server.ts`) answers RESP GET and SET with no checks and no objects per " +
      "request, keeps a Map, and appends the SETs of each event-loop turn to an `O_DSYNC` file in one thread-pool " +
      "write before it replies (the same group commit as ringkv, which measured faster here than a blocking write). " +
      "For the replicated rows three of them run: the leader sends each batch to two followers, which append it to " +
      "their own `O_DSYNC` files and answer one byte; the replies go out once two of the three copies are durable, " +
      "and every client talks to the leader. It is unsafe by design (no CRC, no validation, no epochs, reads see " +
      "writes before they are durable) and does far less per request than any real store, so its numbers are about " +
      "the most a Node.js server reaches on this machine.",
    "",
    ...reach("durable PUT at 8×32 ≥ 1× Redis", redisPut, ops(find(c.rows, "durable PUT", wide)?.other)),
    ...reach("GET at 8×32 ≥ 0.8× Redis", redisGet === undefined ? undefined : 0.8 * redisGet, ops(find(c.rows, "GET (preloaded)", wide)?.other)),
    ...reach(
      "replicated durable PUT at 64 in flight ≥ 10× etcd",
      etcdPut === undefined ? undefined : 10 * etcdPut,
      ops(find(c.replicated, "replicated durable PUT", narrow)?.other),
    ),
    ...failureLines({ "ringkv": c.ringkvFailure, "ceiling": c.ceilingFailure }),
    "",
  );
  return lines;
}

/** Target of the write unavailability during a planned restart. */
export const HANDOVER_TARGET_MS = 100;

function handoverLines(handover: NonNullable<SuiteReport["handover"]>): string[] {
  const lines = ["### Planned restarts: graceful handover under load", ""];
  const result = handover.result;
  if (result === undefined) return [...lines, `- not measured: ${handover.failure}`, ""];
  lines.push(
    "| node | partitions it led | SIGTERM → exit | longest write to those partitions (writes) | handover per partition (node log) |",
    "|---|---|--:|--:|--:|",
  );
  for (const r of result.restarts) {
    lines.push(`| ${r.node} | ${r.led.join(", ") || "—"} | ${r.stopMs} ms | ${r.led.length === 0 ? "—" : `${r.maxHandoverWriteMs.toFixed(1)} ms (${r.handoverWrites})`} | ${r.handoverLogMs.map((ms) => `${ms} ms`).join(", ") || "—"} |`);
  }
  const worst = Math.max(0, ...result.restarts.filter((r) => r.led.length > 0).map((r) => r.maxHandoverWriteMs));
  lines.push(
    "",
    `\`ringkv rolling\`: 5 local nodes (5 partitions × 3 replicas, ZooKeeper with fsync), 8 clients doing sequential PUT/GET through random nodes; ` +
      `every node restarted ${result.restarts.length / ROLLING_NODES} times with SIGTERM. ${result.requests.toLocaleString("en-US")} requests: ` +
      `${result.failures.length} failed, ${result.lost.length} acknowledged writes lost, ${result.resent} sent again after their node closed the connection unanswered.`,
    "",
    `- write unavailability during a planned restart (longest write to a partition being handed over): ${worst.toFixed(1)} ms (target ≤ ${HANDOVER_TARGET_MS} ms) — **${worst <= HANDOVER_TARGET_MS ? "met" : "not met"}**`,
    "",
  );
  return lines;
}

function rate(value: number | undefined): string | undefined {
  return value === undefined ? undefined : `${Math.round(value).toLocaleString("en-US")} keys/s`;
}

function mibCell(bytes: number | undefined): string | undefined {
  return bytes === undefined ? undefined : `${mib(bytes)} MiB`;
}

function yesNo(value: boolean | undefined): string | undefined {
  return value === undefined ? undefined : value ? "yes" : "no (SIGKILL)";
}

function seconds(value: number | undefined): string | undefined {
  return value === undefined ? undefined : `${value.toFixed(3)} s`;
}

function verified(report: MemoryReport): string | undefined {
  return report.verifiedHits === undefined ? undefined : `${report.verifiedHits} / ${RESTART_VERIFY_GETS}`;
}

/** The markers --write-docs replaces between. */
export const DOCS_BEGIN = "<!-- bench:begin -->";
/** See {@linkcode DOCS_BEGIN}. */
export const DOCS_END = "<!-- bench:end -->";

/** Returns `doc` with the text between the bench markers replaced by `section`; throws if the markers are missing. */
export function replaceMarkedSection(doc: string, section: string): string {
  const begin = doc.indexOf(DOCS_BEGIN);
  const end = doc.indexOf(DOCS_END);
  if (begin === -1 || end === -1 || end < begin) {
    throw new Error(`the document has no ${DOCS_BEGIN} … ${DOCS_END} section`);
  }
  return `${doc.slice(0, begin + DOCS_BEGIN.length)}\n${section.trim()}\n${doc.slice(end)}`;
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/** Options for {@linkcode runSuite}. */
export interface SuiteOptions {
  /** Measured seconds per cell. Defaults to 5. */
  durationS?: number;
  /** Warmup seconds per cell. Defaults to 1. */
  warmupS?: number;
  /** Keys for the memory and restart section. Defaults to 1,000,000. */
  keys?: number;
  /** Sections to run. Defaults to standalone, memory, etcd (cluster too when `cluster` is set). */
  sections?: readonly Section[];
  /** Drive ringkv's replicated cluster too (`ringkv cluster`). Defaults to false. */
  cluster?: boolean;
  /** Passed to `ringkv cluster` as --zk. */
  zk?: string;
  /** Extra flags for `ringkv cluster`. */
  clusterArgs?: string[];
  /** Run only the other servers' side (ringkv not built or not wanted). Defaults to false. */
  skipRingkv?: boolean;
  /** ringkv's entry point. Defaults to main.js next to this file. */
  mainJs?: string;
  /** Parent of the data dirs. Defaults to the OS temp dir. */
  tmpDir?: string;
  /** Keep the data dirs afterwards. Defaults to false. */
  keepData?: boolean;
  /** Progress lines. Defaults to stderr. */
  log?: (line: string) => void;
}

/** Runs the selected sections and returns what they measured; stops every server it started. */
export async function runSuite(options: SuiteOptions = {}): Promise<SuiteReport> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const tmpRoot = fs.mkdtempSync(path.join(options.tmpDir ?? os.tmpdir(), "ringkv-bench-"));
  const context: Context = {
    tmpRoot,
    mainJs: options.mainJs ?? fileURLToPath(new URL("./main.js", import.meta.url)),
    log,
    durationS: options.durationS ?? 5,
    warmupS: options.warmupS ?? 1,
  };
  const sections = new Set(options.sections ?? ["standalone", "ceiling", "memory", "etcd", ...(options.cluster ? ["cluster" as const, "handover" as const] : [])]);
  const skipRingkv = options.skipRingkv ?? false;
  const report: SuiteReport = {
    startedAt: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    machine: machineInfo(tmpRoot),
    durationS: context.durationS,
    warmupS: context.warmupS,
  };
  log(`bench-suite: data under ${tmpRoot} (${report.machine.dataFilesystem})`);
  try {
    if (!skipRingkv && !fs.existsSync(context.mainJs)) {
      throw new Error(`${context.mainJs} not found: build first (npm run build) or pass --skip-ringkv`);
    }
    if (sections.has("standalone")) report.standalone = await standaloneSection(context, skipRingkv);
    if (sections.has("ceiling")) report.ceiling = await ceilingSection(context, skipRingkv);
    if (sections.has("memory")) report.memory = await memorySection(context, options.keys ?? 1_000_000, skipRingkv);
    if (sections.has("etcd") || sections.has("cluster")) {
      report.cluster = await clusterSection(context, sections.has("cluster") && !skipRingkv, {
        zk: options.zk,
        extraArgs: options.clusterArgs ?? [],
      });
    }
    if (sections.has("handover") && !skipRingkv) report.handover = await handoverSection(context, options.zk);
  } finally {
    await stopAll();
    if (!options.keepData) fs.rmSync(tmpRoot, { recursive: true, force: true });
  }
  return report;
}

/** Stops every child still running (by PID). */
async function stopAll(): Promise<void> {
  await Promise.all([...running].map((child) => child.stop()));
}

/** True when a section measured something wrong: a server that would not start, a failed run, error replies. */
export function hasFailures(report: SuiteReport, skipRingkv: boolean): boolean {
  const bad = (m: Measurement | undefined) => m !== undefined && (m.failure !== undefined || m.errors > 0);
  const rows = [
    ...(report.standalone?.rows ?? []),
    ...(report.ceiling?.rows ?? []),
    ...(report.ceiling?.replicated ?? []),
    ...(report.cluster?.rows ?? []),
  ];
  if (rows.some((row) => bad(row.ringkv) || bad(row.other))) return true;
  if (report.standalone?.redisFailure !== undefined || report.cluster?.etcdFailure !== undefined) return true;
  if (report.ceiling?.ceilingFailure !== undefined) return true;
  if (!skipRingkv && report.ceiling?.ringkvFailure !== undefined) return true;
  const clusterFailure = report.cluster?.ringkvFailure;
  if (!skipRingkv && clusterFailure !== undefined && !clusterFailure.startsWith("not run")) return true;
  if (!skipRingkv && report.standalone?.ringkvFailure !== undefined) return true;
  if (report.memory?.redis.failure !== undefined) return true;
  if (!skipRingkv && report.memory?.ringkv.failure !== undefined) return true;
  const handover = report.handover;
  if (handover !== undefined && (handover.failure !== undefined || (handover.result?.failures.length ?? 0) > 0 || (handover.result?.lost.length ?? 0) > 0)) return true;
  return false;
}

/** `ringkv bench-suite` usage text. */
export const SUITE_USAGE = `usage: ringkv bench-suite [flags]        (npm run bench)

Starts a standalone ringkv node, Redis (appendfsync always, and without
persistence), the Node.js ceiling server (bench/ceiling_server.ts) and a
3-member etcd on loopback, drives them with the same shapes, and prints a
Markdown table.

  --duration S        measured seconds per cell (5)
  --warmup S          warmup seconds per cell (1)
  --keys N            keys for the memory/restart section (1000000)
  --only LIST         comma list of sections: standalone,ceiling,memory,etcd,
                      cluster,handover (default: standalone,ceiling,memory,etcd;
                      cluster,handover with --cluster)
  --cluster           also drive \`ringkv cluster\` (3 replicas) against etcd, and
                      measure planned restarts (the rolling-restart drill)
  --zk CONNECT        ZooKeeper connect string for \`ringkv cluster\`
  --cluster-arg=FLAG  extra flag for \`ringkv cluster\` (repeatable; use the
                      = form when FLAG starts with a dash)
  --skip-ringkv       measure only Redis and etcd
  --write-docs        replace the bench section of docs/performance.md
  --docs PATH         the document to write (docs/performance.md)
  --json-out PATH     also write the raw measurements as JSON
  --main PATH         ringkv entry point (main.js next to this file)
  --tmp-dir DIR       parent of the data dirs (OS temp dir); must be a real
                      disk for fsync numbers to mean anything
  --keep-data         keep the data dirs
  -h, --help          this text

Exit code: 0 measured (targets met or not: these are benchmarks); 1 a server
did not start or a run failed or saw errors; 2 bad flags.`;

/** Parsed `ringkv bench-suite` flags. */
export interface SuiteArgs {
  options: SuiteOptions;
  writeDocs: boolean;
  docsPath: string;
  jsonOut: string | undefined;
  help: boolean;
}

/** Parses `ringkv bench-suite` flags; throws on bad ones. */
export function parseSuiteArgs(argv: readonly string[]): SuiteArgs {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: false,
    options: {
      "duration": { type: "string" },
      "warmup": { type: "string" },
      "keys": { type: "string" },
      "only": { type: "string" },
      "cluster": { type: "boolean" },
      "zk": { type: "string" },
      "cluster-arg": { type: "string", multiple: true },
      "skip-ringkv": { type: "boolean" },
      "write-docs": { type: "boolean" },
      "docs": { type: "string" },
      "json-out": { type: "string" },
      "main": { type: "string" },
      "tmp-dir": { type: "string" },
      "keep-data": { type: "boolean" },
      "help": { type: "boolean", short: "h" },
    },
  });
  const durationS = positive("duration", values.duration, 600);
  const warmupS = values.warmup === undefined ? undefined : nonNegative("warmup", values.warmup, 60);
  const keys = positive("keys", values.keys, 100_000_000);
  if (keys !== undefined && !Number.isInteger(keys)) throw new RangeError(`--keys must be an integer`);
  let sections: Section[] | undefined;
  if (values.only !== undefined) {
    sections = values.only.split(",").map((name) => name.trim()) as Section[];
    for (const name of sections) {
      if (!ALL_SECTIONS.includes(name)) throw new RangeError(`--only: unknown section "${name}" (${ALL_SECTIONS.join(", ")})`);
    }
  }
  return {
    options: {
      durationS,
      warmupS,
      keys,
      sections,
      cluster: values.cluster ?? false,
      zk: values.zk,
      clusterArgs: values["cluster-arg"] ?? [],
      skipRingkv: values["skip-ringkv"] ?? false,
      mainJs: values.main === undefined ? undefined : path.resolve(values.main),
      tmpDir: values["tmp-dir"],
      keepData: values["keep-data"] ?? false,
    },
    writeDocs: values["write-docs"] ?? false,
    docsPath: path.resolve(values.docs ?? "docs/performance.md"),
    jsonOut: values["json-out"],
    help: values.help ?? false,
  };
}

function positive(name: string, value: string | undefined, max: number): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (value.trim() === "" || !Number.isFinite(parsed) || parsed <= 0 || parsed > max) {
    throw new RangeError(`--${name} must be a number in (0, ${max}], got ${JSON.stringify(value)}`);
  }
  return parsed;
}

function nonNegative(name: string, value: string, max: number): number {
  const parsed = Number(value);
  if (value.trim() === "" || !Number.isFinite(parsed) || parsed < 0 || parsed > max) {
    throw new RangeError(`--${name} must be a number in [0, ${max}], got ${JSON.stringify(value)}`);
  }
  return parsed;
}

/**
 * `ringkv bench-suite` entry point (`npm run bench`); `argv` is the flags
 * after `bench-suite`. Returns the exit code (see {@linkcode SUITE_USAGE}).
 */
export async function main(argv: string[]): Promise<number> {
  let args: SuiteArgs;
  try {
    args = parseSuiteArgs(argv);
  } catch (error) {
    process.stderr.write(`ringkv bench-suite: ${(error as Error).message}\n\n${SUITE_USAGE}\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(`${SUITE_USAGE}\n`);
    return 0;
  }
  if (args.writeDocs) {
    // Fail before minutes of measuring, not after.
    replaceMarkedSection(fs.readFileSync(args.docsPath, "utf8"), "");
  }
  const interrupt = () => {
    process.stderr.write("bench-suite: interrupted, stopping servers\n");
    void stopAll().finally(() => process.exit(130));
  };
  process.once("SIGINT", interrupt);
  process.once("SIGTERM", interrupt);
  try {
    const report = await runSuite(args.options);
    const markdown = renderMarkdown(report);
    process.stdout.write(`${markdown}\n`);
    if (args.jsonOut !== undefined) fs.writeFileSync(args.jsonOut, `${JSON.stringify(report, null, 2)}\n`);
    if (args.writeDocs) {
      const doc = fs.readFileSync(args.docsPath, "utf8");
      fs.writeFileSync(args.docsPath, replaceMarkedSection(doc, markdown));
      process.stderr.write(`bench-suite: wrote ${args.docsPath}\n`);
    }
    return hasFailures(report, args.options.skipRingkv ?? false) ? 1 : 0;
  } finally {
    process.removeListener("SIGINT", interrupt);
    process.removeListener("SIGTERM", interrupt);
  }
}

/** Throws when an invariant does not hold: a bug in the suite. */
function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

// Runnable on its own too (`node dist/src/cli/bench_suite.js ...`).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2));
}

/** Re-exported for the bench tests. */
export { freePort };
