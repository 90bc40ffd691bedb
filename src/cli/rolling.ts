/**
 * The rolling-restart drill: steady load from many clients through every
 * node while each node in turn gets SIGTERM (a planned restart: it hands its
 * leaderships over, answers what it started, exits) and is started again.
 * A planned restart must be invisible: no request fails, none is lost, and
 * writes to a partition being handed over wait at most a few tens of ms.
 *
 *   ringkv rolling [--clients 8] [--rounds 1] [--base-port P] [--zk connect] [--keep]
 *
 * Clients follow the contract: a request answered by nobody because the
 * node closed the connection was never executed (the node answers all it
 * started before closing), so it is sent again through another node.
 *
 * @module
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { type LocalCluster, type LocalNodeSpec, requestLine, startLocalStack } from "../node/local_cluster.ts";
import { createRing, ownerOf } from "../ring/ring.ts";
import { freePortRun } from "../net/ports.ts";
import { parseCommandFlags } from "./args.ts";

/** Nodes of the local cluster (as `npm start`). */
export const ROLLING_NODES = 5;
/** Keys each client owns (spread over every partition). */
export const KEYS_PER_CLIENT = 16;
/** A request without a reply for this long fails the drill (longer than the nodes' request timeout). */
export const CLIENT_TIMEOUT_MS = 10_000;
/** Load before the first and after each restart, so every handover happens under load. */
export const SETTLE_MS = 1_000;
/** A restarted node must have caught up within this long. */
export const CATCH_UP_TIMEOUT_MS = 30_000;
/** The whole drill gives up after this long. */
export const DEFAULT_ROLLING_TIMEOUT_MS = 300_000;

/** What the drill measured. */
export interface RollingResult {
  /** Requests answered (each counted once, however often it was sent). */
  requests: number;
  writes: number;
  reads: number;
  /** Replies that were errors, or reads that did not return the client's last acknowledged value. */
  failures: string[];
  /** Requests sent again because their node closed the connection without answering them. */
  resent: number;
  /** Keys whose final value (read from every node) differs from the last acknowledged write. */
  lost: string[];
  restarts: RestartFigure[];
}

/** One planned restart. */
export interface RestartFigure {
  node: string;
  /** Partitions the node led when it got SIGTERM. */
  led: string[];
  /** From SIGTERM to the process's exit (handover + drain). */
  stopMs: number;
  /**
   * Longest latency of a write to a partition the node led, among writes
   * started between SIGTERM and exit: the write unavailability a client saw.
   */
  maxHandoverWriteMs: number;
  /** Writes to those partitions in that window. */
  handoverWrites: number;
  /** The node's own account, from its `handover` log lines (ms per partition). */
  handoverLogMs: number[];
  /** From start to caught up with every partition. */
  catchUpMs: number;
}

/** Options for {@linkcode runRolling}. */
export interface RollingOptions {
  /** Concurrent clients. Defaults to 8. */
  clients?: number;
  /** Times every node is restarted. Defaults to 1. */
  rounds?: number;
  /** Progress lines. Defaults to console.log. */
  log?: (line: string) => void;
}

/** A write or read a client made: its partition, when it started and how long it took. */
interface Sample {
  partition: string;
  write: boolean;
  startedAt: number;
  ms: number;
}

/** Runs the drill on a running cluster (every partition led); see the module doc. */
export async function runRolling(cluster: LocalCluster, options: RollingOptions = {}): Promise<RollingResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  const clients = options.clients ?? 8;
  const rounds = options.rounds ?? 1;
  assert(clients >= 1 && rounds >= 1);
  const ring = createRing(Object.keys(cluster.layout));
  const run = randomBytes(3).toString("hex");
  const samples: Sample[] = [];
  const result: RollingResult = { requests: 0, writes: 0, reads: 0, failures: [], resent: 0, lost: [], restarts: [] };
  /** Last acknowledged value of every key (each key has one writer: its client). */
  const acknowledged = new Map<string, string>();
  let stopping = false;

  async function client(index: number): Promise<void> {
    const keys = Array.from({ length: KEYS_PER_CLIENT }, (_, k) => `roll-${run}-${index}-${k}`);
    const connection = new LoadConnection(cluster);
    let sequence = 0;
    try {
      while (!stopping && result.failures.length === 0) {
        const key = keys[Math.floor(Math.random() * keys.length)];
        const write = Math.random() < 0.5;
        const value = `${index}.${++sequence}`;
        const line = write ? `PUT ${key} ${value}` : `GET ${key}`;
        const startedAt = performance.now();
        const { reply, resent } = await connection.request(line);
        const ms = performance.now() - startedAt;
        result.resent += resent;
        result.requests++;
        samples.push({ partition: ownerOf(ring, key), write, startedAt, ms });
        const expected = acknowledged.get(key);
        if (write) {
          result.writes++;
          if (reply === "OK") acknowledged.set(key, value);
          else result.failures.push(`${line} → ${reply}`);
        } else {
          result.reads++;
          const ok = expected === undefined ? reply === "NOT_FOUND" : reply === `VALUE ${expected}`;
          if (!ok) result.failures.push(`${line} → ${reply} (last acknowledged: ${expected ?? "none"})`);
        }
      }
    } catch (error) {
      result.failures.push(`client ${index}: ${(error as Error).message}`);
    } finally {
      connection.close();
    }
  }

  const load = Promise.all(Array.from({ length: clients }, (_, i) => client(i)));
  try {
    await sleep(SETTLE_MS);
    for (let round = 0; round < rounds && result.failures.length === 0; round++) {
      for (const spec of cluster.specs) {
        if (result.failures.length > 0) break;
        result.restarts.push(await restart(cluster, spec, samples));
        const figure = result.restarts.at(-1)!;
        log(`rolling: ${spec.id} restarted: led ${figure.led.join(",") || "nothing"}, stop ${figure.stopMs} ms, longest write to its partitions ${figure.maxHandoverWriteMs.toFixed(1)} ms over ${figure.handoverWrites} writes (node: ${figure.handoverLogMs.join(",") || "-"} ms), caught up in ${figure.catchUpMs} ms; ${result.requests} requests so far, ${result.failures.length} failed`);
        await sleep(SETTLE_MS);
      }
    }
  } finally {
    stopping = true;
    await load;
  }
  // Every node must hold every acknowledged write.
  for (const [key, value] of acknowledged) {
    for (const spec of cluster.specs) {
      const reply = await requestLine(spec.host, spec.port, `GET ${key}`, CLIENT_TIMEOUT_MS).catch((error: Error) => `(${error.message})`);
      if (reply !== `VALUE ${value}`) result.lost.push(`${key} on ${spec.id}: ${reply}, expected VALUE ${value}`);
    }
  }
  return result;
}

/** SIGTERM one node, measure its handover under the running load, start it again, wait until it caught up. */
async function restart(cluster: LocalCluster, spec: LocalNodeSpec, samples: Sample[]): Promise<RestartFigure> {
  const info = await infoOf(spec);
  const led = (info?.partitions ?? []).filter((p) => p.role === "leader").map((p) => p.partition);
  const logBefore = fs.existsSync(spec.logFile) ? fs.statSync(spec.logFile).size : 0;
  const stoppedAt = performance.now();
  await cluster.kill(spec.id, "SIGTERM");
  const exitedAt = performance.now();
  const window = samples.filter((s) => s.write && led.includes(s.partition) && s.startedAt >= stoppedAt && s.startedAt <= exitedAt);
  const handoverLogMs = handoverLines(spec.logFile, logBefore);
  const startedAt = Date.now();
  await cluster.start(spec.id);
  await waitCaughtUp(cluster, spec);
  return {
    node: spec.id,
    led,
    stopMs: Math.round(exitedAt - stoppedAt),
    maxHandoverWriteMs: Math.max(0, ...window.map((s) => s.ms)),
    handoverWrites: window.length,
    handoverLogMs,
    catchUpMs: Date.now() - startedAt,
  };
}

/** The `ms` of each `handover` line the node logged after `offset`. */
function handoverLines(logFile: string, offset: number): number[] {
  if (!fs.existsSync(logFile)) return [];
  const text = fs.readFileSync(logFile, "utf8").slice(offset);
  const figures: number[] = [];
  for (const line of text.split("\n")) {
    if (!line.includes('"handover"')) continue;
    try {
      const event = JSON.parse(line) as { event?: string; msg?: string; ms?: number };
      if (typeof event.ms === "number") figures.push(event.ms);
    } catch {
      // Not a JSON log line.
    }
  }
  return figures;
}

interface PartitionInfo {
  partition: string;
  role: string;
  commitIndex: number;
  appliedIndex: number;
}

async function infoOf(spec: { host: string; port: number }): Promise<{ partitions: PartitionInfo[] } | undefined> {
  const line = await requestLine(spec.host, spec.port, "INFO", 2_000).catch(() => undefined);
  if (line === undefined || !line.startsWith("{")) return undefined;
  return JSON.parse(line) as { partitions: PartitionInfo[] };
}

/** Until every partition of `spec` has applied what its leader had committed when we started waiting. */
async function waitCaughtUp(cluster: LocalCluster, spec: LocalNodeSpec): Promise<void> {
  const deadline = Date.now() + CATCH_UP_TIMEOUT_MS;
  let targets: Map<string, number> | undefined;
  for (;;) {
    if (targets === undefined) {
      targets = new Map();
      for (const other of cluster.specs) {
        if (other.id === spec.id) continue;
        for (const p of (await infoOf(other))?.partitions ?? []) {
          if (p.role === "leader" && spec.partitions.includes(p.partition)) targets.set(p.partition, p.commitIndex);
        }
      }
      if (targets.size < spec.partitions.length) targets = undefined; // a partition without a leader right now
    }
    const mine = await infoOf(spec);
    if (targets !== undefined && mine !== undefined) {
      const behind = [...targets].filter(([p, index]) => (mine.partitions.find((x) => x.partition === p)?.appliedIndex ?? -1) < index);
      if (behind.length === 0) return;
    }
    if (Date.now() > deadline) throw new Error(`${spec.id} did not catch up within ${CATCH_UP_TIMEOUT_MS} ms`);
    await sleep(50);
  }
}

/**
 * One client connection that moves to another node when its node goes away.
 * A request the node never answered (it closed the connection) was never
 * executed, so it is sent again elsewhere.
 */
class LoadConnection {
  private socket: net.Socket | undefined;
  private buffer = "";
  private waiter: ((line: string | undefined) => void) | undefined;
  private closed = false;

  constructor(private readonly cluster: LocalCluster) {}

  async request(line: string): Promise<{ reply: string; resent: number }> {
    const deadline = Date.now() + CLIENT_TIMEOUT_MS;
    for (let attempt = 0;; attempt++) {
      if (Date.now() > deadline) throw new Error(`no node answered ${line} within ${CLIENT_TIMEOUT_MS} ms`);
      const socket = this.socket ?? await this.connect();
      if (socket === undefined) {
        await sleep(20);
        continue;
      }
      const reply = await new Promise<string | undefined>((resolve) => {
        const timer = setTimeout(() => resolve(`(no reply within ${CLIENT_TIMEOUT_MS} ms)`), CLIENT_TIMEOUT_MS);
        this.waiter = (got) => {
          clearTimeout(timer);
          this.waiter = undefined;
          resolve(got);
        };
        socket.write(line + "\n");
      });
      if (reply !== undefined) return { reply, resent: attempt };
      // Closed without a reply: never executed there; go elsewhere.
    }
  }

  close(): void {
    this.closed = true;
    this.socket?.destroy();
  }

  /** Connects to a random running node; undefined when none accepts right now. */
  private connect(): Promise<net.Socket | undefined> {
    const running = this.cluster.specs.filter((s) => this.cluster.pid(s.id) !== undefined);
    if (running.length === 0 || this.closed) return Promise.resolve(undefined);
    const spec = running[Math.floor(Math.random() * running.length)];
    return new Promise((resolve) => {
      const socket = net.connect({ host: spec.host, port: spec.port, noDelay: true });
      socket.once("error", () => resolve(undefined));
      socket.once("connect", () => {
        this.socket = socket;
        this.buffer = "";
        socket.on("error", () => {}); // a reset while the node shuts down; "close" follows
        socket.on("data", (chunk: Buffer) => this.onData(chunk));
        socket.on("close", () => {
          if (this.socket === socket) this.socket = undefined;
          this.waiter?.(undefined);
        });
        resolve(socket);
      });
    });
  }

  private onData(chunk: Buffer): void {
    this.buffer += chunk.toString("utf8");
    for (;;) {
      const end = this.buffer.indexOf("\n");
      if (end < 0) return;
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 1);
      this.waiter?.(line);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** One line summing up a run; starts with "rolling: PASS" or "rolling: FAIL". */
export function formatRolling(result: RollingResult): string {
  const handovers = result.restarts.filter((r) => r.led.length > 0);
  const worst = Math.max(0, ...handovers.map((r) => r.maxHandoverWriteMs));
  const nodeWorst = Math.max(0, ...result.restarts.flatMap((r) => r.handoverLogMs));
  const verdict = result.failures.length === 0 && result.lost.length === 0 ? "PASS" : "FAIL";
  return `rolling: ${verdict} (${result.restarts.length} restarts, ${handovers.reduce((n, r) => n + r.led.length, 0)} handovers, ${result.requests} requests: ${result.writes} writes, ${result.reads} reads; ${result.failures.length} failed, ${result.lost.length} lost, ${result.resent} resent after a node closed; longest write to a partition being handed over ${worst.toFixed(1)} ms, longest handover by the nodes' logs ${nodeWorst} ms)`;
}

const USAGE = `usage: ringkv rolling [flags]

The rolling-restart drill: starts ZooKeeper and ${ROLLING_NODES} local nodes, puts steady
load on them, restarts every node in turn with SIGTERM (graceful handover)
and checks that no request failed and no acknowledged write was lost.
Ends with "rolling: PASS (...)" or "rolling: FAIL ...".

  --clients <n>      concurrent clients (default 8)
  --rounds <n>       restarts of every node (default 1)
  --zk <connect>     use this ZooKeeper instead of starting one
  --base-port <p>    first node port (default: free consecutive ports)
  --keep             keep the temp dir (node logs) even on PASS`;

/** `ringkv rolling`: resolves to the exit code (0 PASS, 1 FAIL, 2 usage). */
export async function main(argv: string[]): Promise<number> {
  const values = parseCommandFlags(argv, {
    name: "ringkv rolling",
    usage: USAGE,
    options: {
      "clients": { type: "string", default: "8" },
      "rounds": { type: "string", default: "1" },
      "zk": { type: "string" },
      "base-port": { type: "string" },
      "keep": { type: "boolean", default: false },
    },
  });
  if (typeof values === "number") return values;
  const clients = Number(values.clients);
  const rounds = Number(values.rounds);
  const basePort = values["base-port"] === undefined ? undefined : Number(values["base-port"]);
  if (!Number.isInteger(clients) || clients < 1 || clients > 1000 || !Number.isInteger(rounds) || rounds < 1 || rounds > 100 ||
    (basePort !== undefined && (!Number.isInteger(basePort) || basePort < 1 || basePort > 65535 - ROLLING_NODES))) {
    console.error(`ringkv rolling: --clients must be 1-1000, --rounds 1-100, --base-port a port\n\n${USAGE}`);
    return 2;
  }
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "ringkv-rolling-"));
  let passed = false;
  let verdict: string;
  const stack = await startLocalStack({
    zk: values.zk,
    nodes: ROLLING_NODES,
    basePort: basePort ?? await freePortRun(ROLLING_NODES),
    dataDir,
    secret: randomBytes(16).toString("hex"),
  }).catch((error: Error) => error);
  if (stack instanceof Error) {
    console.log(`rolling: FAIL the local cluster did not come up: ${stack.message} (logs in ${dataDir})`);
    return 1;
  }
  const stop = (): void => void stack.close().finally(() => process.exit(130));
  process.once("SIGINT", stop);
  const timer = setTimeout(() => {
    console.log(`rolling: FAIL took longer than ${DEFAULT_ROLLING_TIMEOUT_MS / 1000} s (logs in ${dataDir})`);
    stop();
  }, DEFAULT_ROLLING_TIMEOUT_MS);
  try {
    const result = await runRolling(stack.cluster, { clients, rounds });
    for (const failure of result.failures.slice(0, 10)) console.log(`rolling: failed: ${failure}`);
    for (const lost of result.lost.slice(0, 10)) console.log(`rolling: lost: ${lost}`);
    verdict = formatRolling(result);
    passed = verdict.startsWith("rolling: PASS");
  } catch (error) {
    verdict = `rolling: FAIL ${(error as Error).message}`;
  }
  clearTimeout(timer);
  process.off("SIGINT", stop);
  await stack.close();
  if (passed && !values.keep) fs.rmSync(dataDir, { recursive: true, force: true });
  console.log(passed ? verdict : `${verdict} (logs in ${dataDir})`);
  return passed ? 0 : 1;
}
