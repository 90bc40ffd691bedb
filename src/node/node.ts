/**
 * Composition root: wires config, storage, partitions, router and server into
 * a running node, and shuts it down cleanly.
 *
 * @module
 */
import path from "node:path";
import type { NodeConfig } from "../cli/config.ts";
import { createLogger, type Logger } from "../log/log.ts";
import { startServer, type Server } from "../server/server.ts";
import { createRouter, type Topology } from "../router/router.ts";
import { createRing } from "../ring/ring.ts";
import { lockDataDir } from "../storage/lock.ts";
import { openStandalonePartition } from "../replication/standalone.ts";
import type { PartitionHandle } from "../replication/partition.ts";
import { VERSION } from "../cli/version.ts";
import { collectPartitions, createNodeMetrics, fsyncObserver, instrumentHandler } from "../server/metrics.ts";
import { startHttpServer, type HttpServer } from "../server/http.ts";

/** A started node. */
export interface RunningNode {
  readonly port: number;
  readonly logger: Logger;
  /** Stops accepting, finishes in-flight requests, flushes, closes files. */
  close(): Promise<void>;
}

/** Starts a node as configured (standalone when `config.zk` is undefined). */
export async function startNode(config: NodeConfig, options: { logger?: Logger } = {}): Promise<RunningNode> {
  const logger = options.logger ?? createLogger(config.id, { level: config.logLevel });
  if (config.zk !== undefined) {
    const { startClusterNode } = await import("./cluster_node.ts");
    return startClusterNode(config, logger);
  }
  return startStandaloneNode(config, logger);
}

async function startStandaloneNode(config: NodeConfig, logger: Logger): Promise<RunningNode> {
  const dataDir = path.resolve(config.dataDir);
  const lock = lockDataDir(dataDir);
  const started = Date.now();
  const partitions = new Map<string, PartitionHandle>();
  const metrics = createNodeMetrics();
  const onBatch = fsyncObserver(metrics);
  try {
    for (const name of config.partitions) {
      partitions.set(name, await openStandalonePartition(dataDir, name, {
        fsync: config.fsync,
        onBatch,
        snapshotEvery: config.snapshotEvery,
        logger,
        nodeId: config.id,
      }));
    }
  } catch (error) {
    for (const p of partitions.values()) await p.close().catch(() => {});
    lock.release();
    throw error;
  }
  const ring = createRing(config.partitions);
  const topology: Topology = {
    ring: () => ring,
    local: (p) => partitions.get(p),
    locals: () => [...partitions.values()],
    leaderOf: () => ({ id: config.id, address: config.advertise }),
    members: () => Object.fromEntries(config.partitions.map((p) => [p, [config.id]])),
    info: () => ({ mode: "standalone", fsync: config.fsync }),
  };
  let server: Server | undefined;
  collectPartitions(metrics, () => [...partitions.values()].map((p) => p.status()));
  metrics.collect("ringkv_connections", () => [{ value: server?.connections() ?? 0 }]);
  const router = createRouter(topology, {
    nodeId: config.id,
    version: VERSION,
    secret: config.secret,
    forward: config.forward,
    logger,
    stats: () => ({ connections: server?.connections() ?? 0 }),
  });
  try {
    server = await startServer(instrumentHandler(router, metrics), {
      host: config.host,
      port: config.port,
      maxLine: config.maxLine,
      idleTimeoutMs: config.idleTimeoutMs,
      maxConnections: config.maxConnections,
      logger,
    });
  } catch (error) {
    for (const p of partitions.values()) await p.close().catch(() => {});
    lock.release();
    throw error;
  }
  let httpServer: HttpServer | undefined;
  if (config.httpPort !== undefined) {
    try {
      httpServer = await startHttpServer({
        host: config.host,
        port: config.httpPort,
        router,
        metrics,
        health: () => ({ ok: true }),
        maxBodyBytes: config.maxLine,
        logger,
      });
    } catch (error) {
      await server.close();
      for (const p of partitions.values()) await p.close().catch(() => {});
      lock.release();
      throw error;
    }
  }
  const running = server;
  if (config.fsync === "never") logger.warn("fsync_disabled", { message: "--fsync never: acknowledged writes can be lost on a crash; benchmarks only" });
  logger.info("listening", {
    host: config.host,
    port: running.port,
    mode: "standalone",
    partitions: config.partitions,
    dataDir,
    startupMs: Date.now() - started,
    version: VERSION,
  });
  let closing: Promise<void> | undefined;
  return {
    port: running.port,
    logger,
    close() {
      closing ??= (async () => {
        await httpServer?.close();
        // The same bound as a clustered node: every request started gets its reply.
        await running.close({ graceMs: config.requestTimeoutMs + 1_000 });
        for (const p of partitions.values()) await p.close();
        lock.release();
        logger.info("stopped", {});
      })();
      return closing;
    },
  };
}
