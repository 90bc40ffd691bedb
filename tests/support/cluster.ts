/**
 * A real cluster for black-box tests: a real ZooKeeper (its own, on a free
 * port) and real node processes on distinct loopback addresses
 * (127.0.0.11, .12, ...), spoken to over raw TCP as netcat would.
 *
 * @module
 */
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { startTcpRelay, type TcpRelay } from "./tcp_relay.ts";
import { startZooKeeper, type ZooKeeperServer } from "./zookeeper.ts";
import { requestLine, startLocalCluster, type LocalCluster, type LocalNodeSpec } from "../../src/node/local_cluster.ts";

export { requestLine };
import { createRing, ownerOf } from "../../src/ring/ring.ts";
import { freePortRun } from "../../src/net/ports.ts";

/** Options for {@linkcode startTestCluster}. */
export interface TestClusterOptions {
  nodes?: number;
  partitions?: number;
  replicas?: number;
  sessionTimeoutMs?: number;
  args?: string[];
  /** On SIGINT/SIGTERM/SIGHUP kill ZooKeeper and the nodes, then exit (default true); false leaves signals to the caller. */
  handleSignals?: boolean;
  /**
   * Each node reaches ZooKeeper through a relay of its own, on its own
   * address (see tcp_relay.ts), so that iptables can cut one node off from
   * ZooKeeper. Defaults to false (the nodes connect to ZooKeeper directly).
   */
  zkRelays?: boolean;
}

/** A running test cluster. */
export interface TestCluster {
  zk: ZooKeeperServer;
  /** The relay each node reaches ZooKeeper through, by node id (empty without `zkRelays`). */
  zkRelays: ReadonlyMap<string, TcpRelay>;
  cluster: LocalCluster;
  specs: readonly LocalNodeSpec[];
  /** Sends one request line to node `id`, returns the reply line (rejects on timeout or a closed connection). */
  send(id: string, line: string, timeoutMs?: number): Promise<string>;
  /** Sends several lines on one connection (pipelined); resolves with as many reply lines. */
  sendLines(id: string, lines: string[], timeoutMs?: number): Promise<string[]>;
  /** The partition owning `key` (same ring as the nodes). */
  partitionOf(key: string): string;
  /** The node serving as leader of `partition` now, per the nodes' INFO. */
  leaderOf(partition: string): Promise<string | undefined>;
  /** Running node ids other than `except`. */
  others(except: string[]): string[];
  /** Polls `check` until it returns a value other than undefined, or fails after `timeoutMs`. */
  waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number): Promise<T>;
  stop(): Promise<void>;
}

/** Starts ZooKeeper and the nodes, and waits until every partition has a leader. */
export async function startTestCluster(options: TestClusterOptions = {}): Promise<TestCluster> {
  const count = options.nodes ?? 3;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "ringkv-cluster-"));
  const zk = await startZooKeeper({ handleSignals: options.handleSignals });
  const hosts = Array.from({ length: count }, (_, i) => `127.0.0.${11 + i}`);
  const basePort = await freePortRun(1, { hosts });
  const zkRelays = new Map<string, TcpRelay>();
  const closeRelays = () => Promise.all([...zkRelays.values()].map((relay) => relay.close()));
  let cluster: LocalCluster;
  try {
    if (options.zkRelays === true) {
      const [zkHost, zkPort] = zk.connect.split(":");
      // Node ids are n1..nN on hosts 127.0.0.11.. (startLocalCluster with distinctHosts).
      for (const [i, host] of hosts.entries()) zkRelays.set(`n${i + 1}`, await startTcpRelay(host, { host: zkHost, port: Number(zkPort) }));
    }
    cluster = await startLocalCluster({
      zk: zk.connect,
      nodeZk: Object.fromEntries([...zkRelays].map(([id, relay]) => [id, `${relay.host}:${relay.port}`])),
      nodes: count,
      partitions: options.partitions ?? count,
      replicas: options.replicas ?? 3,
      basePort,
      distinctHosts: true,
      dataDir,
      sessionTimeoutMs: options.sessionTimeoutMs ?? 2000,
      secret: "test-secret",
      args: options.args,
      handleSignals: options.handleSignals,
    });
    await cluster.waitForLeaders({ timeoutMs: 30_000 });
  } catch (error) {
    await closeRelays();
    await zk.stop();
    printLogs(dataDir);
    throw error;
  }
  const ring = createRing(Object.keys(cluster.layout));
  const spec = (id: string) => cluster.specs.find((s) => s.id === id)!;

  const test: TestCluster = {
    zk,
    zkRelays,
    cluster,
    specs: cluster.specs,
    send(id, line, timeoutMs = 10_000) {
      const s = spec(id);
      return requestLine(s.host, s.port, line, timeoutMs);
    },
    sendLines(id, lines, timeoutMs = 10_000) {
      const s = spec(id);
      return requestLines(s.host, s.port, lines, timeoutMs);
    },
    partitionOf: (key) => ownerOf(ring, key),
    async leaderOf(partition) {
      for (const s of cluster.specs) {
        if (cluster.pid(s.id) === undefined) continue;
        const line = await requestLine(s.host, s.port, "INFO", 2000).catch(() => undefined);
        if (line === undefined || !line.startsWith("{")) continue;
        const info = JSON.parse(line) as { partitions: Array<{ partition: string; role: string }> };
        if (info.partitions.some((p) => p.partition === partition && p.role === "leader")) return s.id;
      }
      return undefined;
    },
    others: (except) => cluster.specs.map((s) => s.id).filter((id) => !except.includes(id) && cluster.pid(id) !== undefined),
    async waitFor(what, check, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const value = await check();
        if (value !== undefined) return value;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      await cluster.stop();
      await closeRelays();
      await zk.stop();
      if (process.env.RINGKV_KEEP_TEST_DATA === undefined) fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return test;
}

/** Prints the tail of every node log (for a failing test's output). */
export function printLogs(dataDir: string, lines = 40): void {
  for (const name of fs.readdirSync(dataDir)) {
    if (!name.endsWith(".log")) continue;
    const text = fs.readFileSync(path.join(dataDir, name), "utf8").trim().split("\n");
    console.error(`--- ${name} (last ${lines} lines)\n${text.slice(-lines).join("\n")}`);
  }
}

/** Sends `lines` in one write on a fresh connection; resolves with the same number of reply lines. */
export function requestLines(host: string, port: number, lines: string[], timeoutMs: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    let buffer = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no ${lines.length} replies from ${host}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on("connect", () => socket.write(lines.map((l) => l + "\n").join("")));
    socket.on("data", (chunk) => {
      buffer += chunk.toString("utf8");
      const replies = buffer.split("\n");
      if (replies.length > lines.length) {
        clearTimeout(timer);
        socket.destroy();
        resolve(replies.slice(0, lines.length));
      }
    });
    socket.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}
