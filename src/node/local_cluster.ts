/**
 * A cluster of real node processes on this machine: what `ringkv cluster`
 * (npm start), the failover drill and the cluster tests run. Each node gets
 * its own address (127.0.0.11, .12, ... by default with `distinctHosts`) or
 * its own port on one address, its own data dir and log file.
 *
 * @module
 */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { type ChildProcess, spawn } from "node:child_process";
import { forget, killOnExit } from "../process/owned.ts";

/** One node's place in the local cluster. */
export interface LocalNodeSpec {
  id: string;
  host: string;
  port: number;
  partitions: string[];
  dataDir: string;
  logFile: string;
  /** HTTP API port, when the cluster was given `httpBasePort`. */
  httpPort?: number;
}

/** A node process started by {@linkcode startLocalCluster}, and its exit. */
interface NodeProcess {
  child: ChildProcess;
  exited: Promise<void>;
}

/** Options for {@linkcode startLocalCluster}. */
export interface LocalClusterOptions {
  /** ZooKeeper connect string (started by the caller). */
  zk: string;
  /** A connect string for some nodes (by id) instead of `zk`: the fault suite gives each node its own route to ZooKeeper. */
  nodeZk?: Readonly<Record<string, string>>;
  /** Number of nodes. Defaults to 5. */
  nodes?: number;
  /** Replicas per partition. Defaults to 3. */
  replicas?: number;
  /** Partitions: defaults to one per node, p1..pN. */
  partitions?: number;
  /** First port (nodes take consecutive ports). Defaults to 9001. */
  basePort?: number;
  /** First HTTP API port (node i gets httpBasePort + i - 1); undefined: no HTTP API. */
  httpBasePort?: number;
  /** Listen address of every node when `distinctHosts` is false. Defaults to 127.0.0.1. */
  host?: string;
  /** Give node i the address 127.0.0.(10+i) (separate hosts for partition tests). */
  distinctHosts?: boolean;
  /** Root of the nodes' data dirs and log files. */
  dataDir: string;
  sessionTimeoutMs?: number;
  secret?: string;
  /** Extra flags for every node. */
  args?: string[];
  /** Where `dist/src/cli/main.js` is. Defaults to this build's. */
  mainScript?: string;
  /**
   * The nodes run in their own process groups and are killed if this process
   * exits; true (default): also on SIGINT/SIGTERM/SIGHUP, then exit. False:
   * the caller handles signals and stops the cluster (`ringkv cluster`).
   */
  handleSignals?: boolean;
}

/** A running local cluster. */
export interface LocalCluster {
  readonly specs: readonly LocalNodeSpec[];
  /** The partition layout: partition → member ids. */
  readonly layout: Record<string, string[]>;
  /** PID of a running node, or undefined when stopped. */
  pid(id: string): number | undefined;
  /** Starts a stopped node (same data dir). */
  start(id: string): Promise<void>;
  /** Sends a signal; SIGKILL/SIGTERM wait for the exit. */
  kill(id: string, signal?: NodeJS.Signals): Promise<void>;
  /** SIGSTOP / SIGCONT. */
  pause(id: string): void;
  resume(id: string): void;
  /** Waits until every partition has a serving leader that answers; resolves the leaders by partition. */
  waitForLeaders(options?: { timeoutMs?: number }): Promise<Record<string, string>>;
  /** Stops every node (SIGTERM, then SIGKILL after a grace period). */
  stop(): Promise<void>;
}

/** The default layout: partition i on nodes i, i+1, ..., i+replicas-1 (mod n): any single node may die. */
export function ringLayout(nodeIds: readonly string[], partitions: number, replicas: number): Record<string, string[]> {
  if (replicas > nodeIds.length) throw new RangeError(`${replicas} replicas need at least ${replicas} nodes`);
  const layout: Record<string, string[]> = {};
  for (let p = 0; p < partitions; p++) {
    const members: string[] = [];
    for (let r = 0; r < replicas; r++) members.push(nodeIds[(p + r) % nodeIds.length]);
    layout[`p${p + 1}`] = members;
  }
  return layout;
}

/** Starts the nodes and waits until every partition has a leader. */
export async function startLocalCluster(options: LocalClusterOptions): Promise<LocalCluster> {
  const count = options.nodes ?? 5;
  const basePort = options.basePort ?? 9001;
  const ids = Array.from({ length: count }, (_, i) => `n${i + 1}`);
  const layout = ringLayout(ids, options.partitions ?? count, options.replicas ?? 3);
  const mainScript = options.mainScript ?? new URL("../cli/main.js", import.meta.url).pathname;
  fs.mkdirSync(options.dataDir, { recursive: true });
  const specs: LocalNodeSpec[] = ids.map((id, i) => ({
    id,
    host: options.distinctHosts ? `127.0.0.${11 + i}` : options.host ?? "127.0.0.1",
    port: options.distinctHosts ? basePort : basePort + i,
    partitions: Object.entries(layout).filter(([, members]) => members.includes(id)).map(([p]) => p),
    dataDir: path.join(options.dataDir, id),
    logFile: path.join(options.dataDir, `${id}.log`),
    httpPort: options.httpBasePort === undefined ? undefined : options.httpBasePort + i,
  }));
  const processes = new Map<string, NodeProcess>();

  function launch(spec: LocalNodeSpec): void {
    const args = [
      mainScript, "node",
      "--id", spec.id,
      "--host", spec.host,
      "--port", String(spec.port),
      "--partitions", spec.partitions.join(","),
      "--zk", options.nodeZk?.[spec.id] ?? options.zk,
      "--data-dir", spec.dataDir,
      "--expect-nodes", String(count),
      "--session-timeout", String(options.sessionTimeoutMs ?? 2000),
      ...(options.secret ? ["--secret", options.secret] : []),
      ...(spec.httpPort === undefined ? [] : ["--http-port", String(spec.httpPort)]),
      ...(options.args ?? []),
    ];
    // The node writes its log file itself (an inherited descriptor, not a
    // pipe through this process): its last lines survive this process's
    // death, and this process does not copy every log line.
    // (node:child_process here: execa's types refuse a descriptor held in a `number`.)
    const log = fs.openSync(spec.logFile, "a");
    let child: ChildProcess;
    try {
      // Its own process group: a Ctrl-C in the terminal reaches only the
      // process running the cluster, which stops the nodes in order.
      child = spawn(process.execPath, args, { stdio: ["ignore", log, log], detached: true });
    } finally {
      fs.closeSync(log); // the child has its own copy
    }
    const exited = new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      // Could not be started (there is no exit then); a listener stays, so a failed kill is never an uncaught 'error'.
      child.on("error", () => {
        if (child.pid === undefined) resolve();
      });
    });
    const running: NodeProcess = { child, exited };
    processes.set(spec.id, running);
    const pid = child.pid;
    if (pid !== undefined) killOnExit(pid, { handleSignals: options.handleSignals });
    exited.then(() => {
      if (pid !== undefined) forget(pid);
      if (processes.get(spec.id) === running) processes.delete(spec.id);
    });
  }

  const specOf = (id: string): LocalNodeSpec => {
    const spec = specs.find((s) => s.id === id);
    if (spec === undefined) throw new Error(`no node ${id}`);
    return spec;
  };

  const cluster: LocalCluster = {
    specs,
    layout,
    pid: (id) => processes.get(id)?.child.pid,
    async start(id) {
      if (processes.has(id)) return;
      const spec = specOf(id);
      launch(spec);
      await waitForPort(spec.host, spec.port, 15_000);
    },
    async kill(id, signal = "SIGKILL") {
      const running = processes.get(id);
      if (running === undefined) return;
      const { child, exited } = running;
      if (signal === "SIGCONT" || signal === "SIGSTOP") {
        child.kill(signal);
        return;
      }
      child.kill("SIGCONT"); // a paused process cannot handle SIGTERM
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
    pause: (id) => processes.get(id)?.child.kill("SIGSTOP"),
    resume: (id) => processes.get(id)?.child.kill("SIGCONT"),
    async waitForLeaders(waitOptions = {}) {
      const deadline = Date.now() + (waitOptions.timeoutMs ?? 30_000);
      for (;;) {
        const leaders = await readLeaders(specs, processes);
        if (leaders !== undefined && Object.keys(layout).every((p) => leaders[p] !== undefined)) return leaders;
        if (Date.now() > deadline) throw new Error(`not every partition has a leader after ${waitOptions.timeoutMs ?? 30_000} ms (see ${options.dataDir}/*.log)`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async stop() {
      await Promise.all([...processes.keys()].map((id) => cluster.kill(id, "SIGTERM")));
    },
  };
  process.once("exit", () => {
    for (const { child } of processes.values()) child.kill("SIGKILL");
  });
  for (const spec of specs) launch(spec);
  try {
    await Promise.all(specs.map((s) => waitForPort(s.host, s.port, 20_000)));
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}

/** Leaders that serve, by partition, from the running nodes' INFO; undefined while none answers. */
async function readLeaders(specs: readonly LocalNodeSpec[], processes: Map<string, unknown>): Promise<Record<string, string> | undefined> {
  const leaders: Record<string, string> = {};
  let answered = false;
  for (const spec of specs) {
    if (!processes.has(spec.id)) continue;
    const line = await requestLine(spec.host, spec.port, "INFO", 1000).catch(() => undefined);
    if (line === undefined || !line.startsWith("{")) continue;
    answered = true;
    const info = JSON.parse(line) as { partitions?: Array<{ partition: string; role: string }> };
    for (const p of info.partitions ?? []) if (p.role === "leader") leaders[p.partition] = spec.id;
  }
  return answered ? leaders : undefined;
}

/** Sends one line, resolves with the first reply line. */
export function requestLine(host: string, port: number, line: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    let buffer = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no reply from ${host}:${port} to ${line.slice(0, 40)} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on("connect", () => socket.write(line + "\n"));
    socket.on("data", (chunk) => {
      buffer += chunk.toString("utf8");
      const end = buffer.indexOf("\n");
      if (end >= 0) {
        clearTimeout(timer);
        socket.destroy();
        resolve(buffer.slice(0, end));
      }
    });
    socket.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      reject(new Error(`connection to ${host}:${port} closed without a reply`));
    });
  });
}

/** Waits until `host:port` accepts connections. */
export async function waitForPort(host: string, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host, port });
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${host}:${port} did not accept connections within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Options for {@linkcode startLocalStack}: a local cluster plus, unless `zk` is given, its own ZooKeeper. */
export interface LocalStackOptions extends Omit<LocalClusterOptions, "zk"> {
  /** An existing ZooKeeper to use; undefined: start one in `<dataDir>/zookeeper`. */
  zk?: string;
  /** How long to wait for a leader of every partition. Defaults to 60 s. */
  leadersTimeoutMs?: number;
}

/** A local cluster with the ZooKeeper it runs on. */
export interface LocalStack {
  cluster: LocalCluster;
  /** ZooKeeper connect string. */
  zk: string;
  /** Did the stack start that ZooKeeper (and so stops it on close)? */
  ownsZooKeeper: boolean;
  /** Stops the nodes, then the ZooKeeper the stack started. */
  close(): Promise<void>;
}

/** Starts ZooKeeper (unless given) and a local cluster, and waits until every partition has a leader. */
export async function startLocalStack(options: LocalStackOptions): Promise<LocalStack> {
  let zookeeper: { connect: string; stop(): Promise<void> } | undefined;
  let connect = options.zk;
  if (connect === undefined) {
    const zk = await import("../cluster/zookeeper_process.ts");
    if (!zk.zooKeeperAvailable()) throw new Error("ZooKeeper is not installed (apt-get install zookeeper), and no ZooKeeper address was given");
    zookeeper = await zk.startZooKeeper({ dataDir: path.join(options.dataDir, "zookeeper"), tickTime: 200, handleSignals: options.handleSignals });
    connect = zookeeper.connect;
  }
  let cluster: LocalCluster | undefined;
  try {
    cluster = await startLocalCluster({ ...options, zk: connect, dataDir: path.join(options.dataDir, "nodes") });
    await cluster.waitForLeaders({ timeoutMs: options.leadersTimeoutMs ?? 60_000 });
  } catch (error) {
    await cluster?.stop();
    await zookeeper?.stop();
    throw error;
  }
  const running = cluster;
  return {
    cluster: running,
    zk: connect,
    ownsZooKeeper: zookeeper !== undefined,
    async close() {
      await running.stop();
      await zookeeper?.stop();
    },
  };
}
