/**
 * A clustered node: ZooKeeper membership and elections (src/cluster/), one
 * replicated partition host per partition this node replicates, peer
 * transport, forwarding to leaders, and the client server.
 *
 * @module
 */
import { isUtf8 } from "node:buffer";
import path from "node:path";
import type { NodeConfig } from "../cli/config.ts";
import type { Logger } from "../log/log.ts";
import { startServer, type ConnectionContext, type Server } from "../server/server.ts";
import { createRouter, type KeyRequest, type PeerHandler, type Topology } from "../router/router.ts";
import { createRing, type Ring } from "../ring/ring.ts";
import { lockDataDir } from "../storage/lock.ts";
import { openReplica, type ReplicatedPartition } from "../replication/replica.ts";
import { SnapshotReceiver, Transport } from "../replication/transport.ts";
import { decodeMessage, isBase64 } from "../replication/codec.ts";
import type { Outcome, PartitionHandle } from "../replication/partition.ts";
import { joinCluster, preferredLeaders, type Cluster, type LeaderInfo, type NodeInfo } from "../cluster/mod.ts";
import { PeerError } from "../net/peer_client.ts";
import type { Reply } from "../protocol/types.ts";
import { validateKey } from "../protocol/parse.ts";
import { VERSION } from "../cli/version.ts";
import { collectPartitions, createNodeMetrics, fsyncObserver, instrumentHandler, stateSamples, ZK_SESSION_STATES } from "../server/metrics.ts";
import { startHttpServer, type HttpServer } from "../server/http.ts";
import type { RunningNode } from "./node.ts";
import { rebalanceStep, rebalanceWanted, type RebalanceStep, type RebalanceSummary } from "./rebalance.ts";

/** Heartbeat interval of every replicated partition. */
export const HEARTBEAT_MS = 50;
/** How often a request waiting for a leader re-checks. */
const LEADER_POLL_MS = 25;
/**
 * A graceful handover waits at most this long for in-flight requests and the
 * successor's catch-up, and as long again for the new leader to be published;
 * past it the node leaves anyway (safe: the next leader recovers what it lacks).
 */
export const HANDOVER_TIMEOUT_MS = 2_000;
/** How often a node looks for a rebalancing step to take (see rebalance.ts). */
const REBALANCE_CHECK_MS = 1_000;
/**
 * A leader hands over for rebalancing only to a successor at most this many
 * committed entries behind: the drain then waits milliseconds, not seconds.
 */
const REBALANCE_MAX_LAG = 1_000;

/** Starts a node that joins the cluster at `config.zk`. */
export async function startClusterNode(config: NodeConfig, logger: Logger): Promise<RunningNode> {
  const dataDir = path.resolve(config.dataDir);
  const lock = lockDataDir(dataDir);
  const node = new ClusterNode(config, logger, dataDir);
  try {
    await node.start();
  } catch (error) {
    await node.close().catch(() => {});
    lock.release();
    throw error;
  }
  let closing: Promise<void> | undefined;
  return {
    port: node.port,
    logger,
    close() {
      closing ??= node.close().finally(() => lock.release());
      return closing;
    },
  };
}

class ClusterNode implements PeerHandler {
  private ring: Ring = createRing([]);
  private members: Record<string, string[]> = {};
  private pending: string[] = [];
  private readonly replicas = new Map<string, ReplicatedPartition>();
  private readonly opening = new Set<string>();
  /** Desired candidacy per partition, applied when its replica opens. */
  private readonly candidacy = new Map<string, number | undefined>();
  private readonly leaders = new Map<string, LeaderInfo>();
  private readonly leaderWaiters = new Set<() => void>();
  private nodes = new Map<string, NodeInfo>();
  private readonly transport: Transport;
  private readonly snapshotReceivers = new Map<number, SnapshotReceiver>();
  private cluster: Cluster | undefined;
  private server: Server | undefined;
  private session = "connecting";
  private closed = false;
  private readonly metrics = createNodeMetrics();
  private readonly onBatch = fsyncObserver(this.metrics);
  private http: HttpServer | undefined;
  private ready = false;
  /** When the set of registered nodes last changed (performance.now()). */
  private nodesChangedAt = performance.now();
  /** When each partition's published leader last changed. */
  private readonly leaderChangedAt = new Map<string, number>();
  private rebalanceTimer: ReturnType<typeof setInterval> | undefined;
  /** The rebalancing step in progress, if any (one at a time; close() waits for it). */
  private rebalancing: Promise<void> | undefined;
  /** Partitions whose election a rebalancing step left and has not rejoined yet (ZooKeeper failed): retried each check. */
  private readonly rejoinPending = new Set<string>();

  constructor(private readonly config: NodeConfig, private readonly logger: Logger, private readonly dataDir: string) {
    this.transport = new Transport({
      nodeId: config.id,
      secret: config.secret,
      localAddress: config.host === "0.0.0.0" ? undefined : config.host,
      logger,
      requestTimeoutMs: config.requestTimeoutMs,
    });
  }

  get port(): number {
    return this.server?.port ?? this.config.port;
  }

  async start(): Promise<void> {
    if (this.config.defaultSecret) {
      this.logger.warn("default_secret", { message: "--secret is the development default: anyone who knows it can act as a peer; set RINGKV_SECRET" });
    }
    const topology: Topology = {
      ring: () => this.ring,
      local: (p) => this.replicas.get(p),
      locals: () => [...this.replicas.values()],
      forward: (p, request) => this.forward(p, request),
      leaderOf: (p) => {
        const leader = this.leaders.get(p);
        return leader === undefined ? undefined : { id: leader.id, address: leader.address };
      },
      members: () => this.members,
      waitForRing: () => this.waitForRing(),
      info: () => ({
        mode: "cluster",
        session: this.session,
        zk: this.cluster?.state(),
        pendingPartitions: this.pending,
        nodes: [...this.nodes.keys()].sort(),
      }),
    };
    const router = createRouter(topology, {
      nodeId: this.config.id,
      version: VERSION,
      secret: this.config.secret,
      forward: this.config.forward,
      logger: this.logger,
      peers: this,
      stats: () => ({ connections: this.server?.connections() ?? 0 }),
    });
    this.router = router;
    collectPartitions(this.metrics, () => [...this.replicas.values()].map((r) => r.status()));
    this.metrics.collect("ringkv_connections", () => [{ value: this.server?.connections() ?? 0 }]);
    this.metrics.collect("ringkv_zk_session_state", () => stateSamples(this.session, { label: "state", known: ZK_SESSION_STATES }));
    this.server = await startServer(
      instrumentHandler({
        handle: (request, context) => router.handle(request, context),
        closed: (context) => this.snapshotReceivers.delete(context.id),
      }, this.metrics),
      {
        host: this.config.host,
        port: this.config.port,
        maxLine: this.config.maxLine,
        idleTimeoutMs: this.config.idleTimeoutMs,
        maxConnections: this.config.maxConnections,
        logger: this.logger,
      },
    );
    const [host, port] = [this.config.advertise.slice(0, this.config.advertise.lastIndexOf(":")), Number(this.config.advertise.slice(this.config.advertise.lastIndexOf(":") + 1))];
    this.cluster = await joinCluster(
      {
        connect: this.config.zk!,
        node: { id: this.config.id, host, port, partitions: this.config.partitions },
        sessionTimeoutMs: this.config.sessionTimeoutMs,
        expectNodes: this.config.expectNodes,
      },
      {
        onNodes: (nodes) => this.onNodes(nodes),
        onRing: (ring) => this.onRing(ring),
        onCandidate: (p, state) => this.onCandidate(p, state?.epoch),
        onLeader: (p, leader) => this.onLeader(p, leader),
        onSession: (state) => this.onSession(state),
        log: (event, detail) => this.logger.info(event, detail),
      },
    );
    this.logger.info("listening", {
      host: this.config.host,
      port: this.server.port,
      mode: "cluster",
      advertise: this.config.advertise,
      partitions: this.config.partitions,
      zk: this.config.zk,
      expectNodes: this.config.expectNodes,
      version: VERSION,
    });
    if (this.config.httpPort !== undefined) {
      this.http = await startHttpServer({
        host: this.config.host,
        port: this.config.httpPort,
        router,
        metrics: this.metrics,
        health: () => this.health(),
        maxBodyBytes: this.config.maxLine,
        logger: this.logger,
      });
    }
    this.cluster.ready.then(
      () => {
        this.ready = true;
        this.logger.always("cluster_ready", { nodes: this.nodes.size, partitions: this.ring.partitions });
        if (this.config.rebalanceAfterMs > 0 && !this.closed) {
          this.rebalanceTimer = setInterval(() => this.rebalanceTick(), REBALANCE_CHECK_MS);
          this.rebalanceTimer.unref();
        }
      },
      (error) => this.logger.error("cluster_barrier_failed", { error }),
    );
  }

  private router: ReturnType<typeof createRouter> | undefined;

  // ---- graceful handover ----

  private async handOverAll(): Promise<void> {
    const cluster = this.cluster;
    if (cluster === undefined) return;
    const replicas = [...this.replicas.values()];
    // Leave the elections of the partitions we follow first, so that no
    // handover (ours or a peer's shutting down at the same time) picks us.
    const followed = replicas.filter((replica) => !replica.isServing());
    await Promise.all(followed.map((replica) =>
      cluster.withdraw(replica.name).catch((error) => this.logger.warn("withdraw_failed", { partition: replica.name, error }))
    ));
    // One at a time: each partition is unavailable only for its own handover
    // (ZooKeeper operations of one node run one after another anyway).
    for (const replica of replicas) {
      if (replica.isServing()) await this.handOver(cluster, replica);
    }
  }

  /**
   * Hands `replica`'s leadership to the next candidate in line: stop taking
   * requests (they wait and then go to the new leader), drain, let the next
   * candidate catch up, leave the election, wait until the new leader is
   * published. Write unavailability is the time from drain to publication.
   */
  private async handOver(cluster: Cluster, replica: ReplicatedPartition): Promise<void> {
    const partition = replica.name;
    const started = performance.now();
    const candidates = await cluster.candidates(partition).catch(() => []);
    const successor = candidates.find((c) => c.id !== this.config.id)?.id;
    const caughtUp = await replica.drain(successor, HANDOVER_TIMEOUT_MS);
    const drainedMs = performance.now() - started;
    await cluster.withdraw(partition).catch((error) => this.logger.warn("withdraw_failed", { partition, error }));
    const deadline = performance.now() + HANDOVER_TIMEOUT_MS;
    for (;;) {
      const leader = this.leaders.get(partition);
      if (leader !== undefined && leader.id !== this.config.id) {
        this.logger.always("handover", {
          partition,
          to: leader.id,
          epoch: leader.epoch,
          successorCaughtUp: caughtUp,
          drainMs: Math.round(drainedMs),
          ms: Math.round(performance.now() - started),
        });
        return;
      }
      const remaining = deadline - performance.now();
      const left = remaining > 0 ? await cluster.candidates(partition).catch(() => undefined) : undefined;
      if (remaining <= 0 || left?.length === 0) {
        // Nobody left in line (the whole group is stopping) or no leader in time: leave anyway.
        this.logger.warn("handover_incomplete", {
          partition,
          successor,
          successorCaughtUp: caughtUp,
          candidatesLeft: left?.length,
          ms: Math.round(performance.now() - started),
        });
        return;
      }
      await this.waitForLeaderChange(Math.min(remaining, LEADER_POLL_MS * 4));
    }
  }

  // ---- rebalancing ----

  /** Takes at most one rebalancing step (see rebalance.ts), for the first partition that needs one. */
  private rebalanceTick(): void {
    if (this.rebalancing !== undefined || this.closed || !this.ready || this.session !== "connected") return;
    this.rebalancing = this.rebalanceOnce()
      .catch((error) => this.logger.warn("rebalance_failed", { error }))
      .finally(() => {
        this.rebalancing = undefined;
      });
  }

  private async rebalanceOnce(): Promise<void> {
    const cluster = this.cluster;
    if (cluster === undefined) return;
    for (const partition of [...this.rejoinPending]) {
      await cluster.rejoin(partition);
      this.rejoinPending.delete(partition);
      this.logger.info("rebalance_rejoined", { partition });
    }
    const preferred = preferredLeaders(this.members);
    const afterMs = this.config.rebalanceAfterMs;
    const summary = (partition: string): RebalanceSummary => {
      const want = preferred.get(partition);
      return {
        self: this.config.id,
        preferred: want,
        preferredRegistered: want !== undefined && this.nodes.has(want),
        leader: this.leaders.get(partition)?.id,
        calmMs: this.calmMs(partition),
      };
    };
    for (const [partition, replica] of this.replicas) {
      // Most checks end here, without asking ZooKeeper for the election line.
      if (!rebalanceWanted(summary(partition), { afterMs })) continue;
      const line = (await cluster.candidates(partition)).map((candidate) => candidate.id);
      if (this.closed) return;
      const status = replica.status();
      const successor = line[1];
      const step = rebalanceStep({
        ...summary(partition), // again: things may have changed during the round trip
        line,
        serving: replica.isServing(),
        successorCaughtUp: status.followers.some((f) => f.id === successor && f.lag <= REBALANCE_MAX_LAG),
      }, { afterMs });
      if (step !== "none") {
        await this.takeRebalanceStep(cluster, replica, step, preferred.get(partition)!);
        return;
      }
    }
  }

  /** ms since the registered nodes or `partition`'s leader last changed. */
  private calmMs(partition: string): number {
    return performance.now() - Math.max(this.nodesChangedAt, this.leaderChangedAt.get(partition) ?? 0);
  }

  /** Stands again at the end of the line, handing leadership over first when leading. */
  private async takeRebalanceStep(cluster: Cluster, replica: ReplicatedPartition, step: RebalanceStep, preferred: string): Promise<void> {
    const partition = replica.name;
    this.logger.always("rebalance", { partition, step, preferred });
    // Whatever fails from here on, the next checks bring this node back into the line.
    this.rejoinPending.add(partition);
    if (step === "hand_over") {
      await this.handOver(cluster, replica);
      // Still serving if the handover did not happen (ZooKeeper refused the withdraw): serve again.
      replica.endDrain();
    } else {
      await cluster.withdraw(partition);
    }
    // A node shutting down stays out of the line (its close() hands over the rest).
    if (this.closed) return;
    await cluster.rejoin(partition);
    this.rejoinPending.delete(partition);
  }

  /** For GET /health: 200 only while this node can serve. */
  private health(): { ok: boolean; reason?: string } {
    if (this.closed) return { ok: false, reason: "shutting down" };
    if (this.session !== "connected") return { ok: false, reason: `ZooKeeper session is ${this.session}` };
    if (!this.ready) return { ok: false, reason: `waiting for ${this.config.expectNodes} nodes (--expect-nodes)` };
    return { ok: true };
  }

  // ---- ZooKeeper events ----

  private onNodes(nodes: Map<string, NodeInfo>): void {
    // A node that (re)appears has just started listening: no backoff from its downtime.
    for (const id of nodes.keys()) if (!this.nodes.has(id)) this.transport.peerBack(id);
    if (nodes.size !== this.nodes.size || [...nodes.keys()].some((id) => !this.nodes.has(id))) this.nodesChangedAt = performance.now();
    this.nodes = nodes;
    const addresses = new Map<string, string>();
    for (const [id, info] of nodes) addresses.set(id, `${info.host}:${info.port}`);
    this.transport.setPeers(addresses);
  }

  private onRing(ring: { partitions: Map<string, string[]>; pending: string[]; version: number }): void {
    this.ring = createRing([...ring.partitions.keys()]);
    this.members = Object.fromEntries([...ring.partitions].map(([p, m]) => [p, [...m].sort()]));
    this.pending = ring.pending;
    this.logger.always("ring_changed", { version: ring.version, partitions: this.ring.partitions, pending: ring.pending });
    for (const [partition, members] of ring.partitions) {
      if (!members.includes(this.config.id) || !this.config.partitions.includes(partition)) continue;
      const existing = this.replicas.get(partition);
      if (existing !== undefined || this.opening.has(partition)) continue;
      this.openPartition(partition, members);
    }
  }

  private openPartition(partition: string, members: string[]): void {
    this.opening.add(partition);
    openReplica(this.dataDir, {
      partition,
      self: this.config.id,
      members,
      fsync: this.config.fsync,
      onBatch: this.onBatch,
      snapshotEvery: this.config.snapshotEvery,
      heartbeatMs: HEARTBEAT_MS,
      requestTimeoutMs: this.config.requestTimeoutMs,
      transport: this.transport,
      logger: this.logger,
      onLeaderReady: (p, epoch) => this.publish(p, epoch),
      onLeaderLost: (p) => {
        this.cluster?.retractLeader(p).catch(() => {});
      },
      quorumTimeoutMs: this.config.sessionTimeoutMs,
      onQuorumLost: (p) => this.onQuorumLost(p),
    }).then(
      (replica) => {
        this.opening.delete(partition);
        if (this.closed) {
          replica.close().catch(() => {});
          return;
        }
        this.replicas.set(partition, replica);
        const leader = this.leaders.get(partition);
        replica.setLeaderHint(leader === undefined ? undefined : { id: leader.id, address: leader.address });
        const epoch = this.candidacy.get(partition);
        if (epoch !== undefined) replica.campaign(epoch);
      },
      (error) => {
        this.opening.delete(partition);
        // A corrupt log must stop the node loudly: serving without this partition's data would lose writes.
        this.logger.error("partition_open_failed", { partition, error });
        process.exitCode = 1;
        this.close().finally(() => process.exit(1));
      },
    );
  }

  /**
   * Leading `partition` but cut off from its replicas (ZooKeeper still sees
   * us, so nothing else would depose us): leave the election so a connected
   * replica takes over, and come back in line a session timeout later.
   */
  private onQuorumLost(partition: string): void {
    const cluster = this.cluster;
    if (cluster === undefined || this.closed) return;
    cluster.withdraw(partition).then(
      () => {
        const timer = setTimeout(() => {
          if (!this.closed) cluster.rejoin(partition).catch((error) => this.logger.warn("rejoin_failed", { partition, error }));
        }, this.config.sessionTimeoutMs);
        timer.unref();
      },
      (error) => this.logger.warn("withdraw_failed", { partition, error }),
    );
  }

  private onCandidate(partition: string, epoch: number | undefined): void {
    if (this.closed && epoch !== undefined) {
      // Shutting down: never take over a partition; pass the turn on at once.
      this.cluster?.withdraw(partition).catch(() => {});
      return;
    }
    this.candidacy.set(partition, epoch);
    const replica = this.replicas.get(partition);
    if (replica === undefined) return;
    if (epoch === undefined) replica.stepDown("election");
    else replica.campaign(epoch);
  }

  private publish(partition: string, epoch: number): void {
    const cluster = this.cluster;
    const replica = this.replicas.get(partition);
    if (cluster === undefined || replica === undefined) return;
    cluster.publishLeader(partition, epoch).then(
      (ok) => {
        if (ok) replica.setServing(epoch);
        else replica.stepDown("publish refused: no longer the lowest candidate");
      },
      (error) => {
        this.logger.warn("publish_leader_failed", { partition, epoch, error });
        replica.stepDown("publish failed");
      },
    );
  }

  private onLeader(partition: string, leader: LeaderInfo | undefined): void {
    if (leader?.id !== this.leaders.get(partition)?.id) this.leaderChangedAt.set(partition, performance.now());
    if (leader === undefined) this.leaders.delete(partition);
    else this.leaders.set(partition, leader);
    // A newly published leader is serving now: forwarding must not wait out a connect backoff.
    if (leader !== undefined && leader.id !== this.config.id) this.transport.peerBack(leader.id);
    this.replicas.get(partition)?.setLeaderHint(leader === undefined ? undefined : { id: leader.id, address: leader.address });
    for (const wake of [...this.leaderWaiters]) wake();
  }

  private onSession(state: string): void {
    this.session = state;
    this.logger.always("zk_session", { state });
    if (state === "deadline" || state === "expired") {
      for (const replica of this.replicas.values()) replica.stepDown(`zookeeper ${state}`);
    }
  }

  /** Waits (bounded by --request-timeout) until the ring is known. */
  private async waitForRing(): Promise<boolean> {
    const deadline = Date.now() + this.config.requestTimeoutMs;
    while (this.ring.partitions.length === 0 && !this.closed) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) return false;
      await new Promise((resolve) => setTimeout(resolve, Math.min(remaining, LEADER_POLL_MS * 4)));
    }
    return this.ring.partitions.length > 0;
  }

  // ---- forwarding ----

  private waitForLeaderChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.leaderWaiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.leaderWaiters.add(wake);
    });
  }

  /** Serves a key request whose partition this node does not lead: find the leader, forward, retry while safe. */
  private async forward(partition: string, request: KeyRequest): Promise<Outcome> {
    const deadline = Date.now() + this.config.requestTimeoutMs;
    const isRead = request.op === "get";
    for (;;) {
      const leader = this.leaders.get(partition);
      if (this.replicas.get(partition)?.isElecting()) {
        // We are taking over: whoever the (possibly stale) leader map names is
        // deposed or about to be; wait for our own publication instead.
        const remaining = deadline - Date.now();
        if (remaining <= 0) return { type: "unavailable", message: `partition ${partition} is electing a leader; nothing was written` };
        await this.waitForLeaderChange(Math.min(remaining, LEADER_POLL_MS));
        continue;
      }
      // Set when the leader on record was asked and said it does not serve.
      let refused = false;
      if (leader !== undefined && leader.id === this.config.id) {
        // Served here now (forwarded: true keeps it from forwarding again).
        const outcome = await this.router!.serveKey(request, { forwarded: true, readonly: false });
        if (outcome.type !== "not_leader") return outcome;
        refused = true;
      } else if (leader !== undefined) {
        const client = this.transport.client(leader.id);
        if (client !== undefined) {
          const remaining = deadline - Date.now();
          const result = await this.forwardOnce(client.request(encodeForward(request)), { partition, remainingMs: remaining, isRead, leader });
          if (result !== "retry") return result;
          refused = true;
        }
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        return { type: "unavailable", message: `no leader for partition ${partition} answered in time; nothing was written` };
      }
      // The leader changed while we were asking the old one: try the new one at once.
      if (this.leaders.get(partition) !== leader) continue;
      // A leader just published may not serve yet: its publication can reach
      // us (ZooKeeper's watch) before its own create reply reaches it. No
      // change of leader will wake us then, so ask again soon.
      await this.waitForLeaderChange(Math.min(remaining, refused ? LEADER_POLL_MS : LEADER_POLL_MS * 4));
    }
  }

  private forwardOnce(
    reply: Promise<string>,
    { partition, remainingMs, isRead, leader }: { partition: string; remainingMs: number; isRead: boolean; leader: LeaderInfo },
  ): Promise<Outcome | "retry"> {
    return new Promise((resolve) => {
      let settled = false;
      const finish = (outcome: Outcome | "retry") => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.leaderWaiters.delete(onLeaderChange);
        resolve(outcome);
      };
      const timer = setTimeout(() => {
        finish(isRead
          ? { type: "unavailable", message: "the leader did not answer in time" }
          : { type: "timeout", message: `the leader ${leader.address} did not answer in time; the write's outcome is unknown` });
      }, Math.max(1, remainingMs));
      // A read may move on to a new leader at once; a write already sent must not be sent twice.
      const onLeaderChange = () => {
        if (isRead && this.leaders.get(partition)?.id !== leader.id) finish("retry");
      };
      if (isRead) this.leaderWaiters.add(onLeaderChange);
      reply.then(
        (line) => {
          const outcome = decodeForwardReply(line);
          if (outcome.type === "not_leader") finish("retry");
          else finish(outcome);
        },
        (error) => {
          if (error instanceof PeerError && error.sent && !isRead) {
            finish({ type: "timeout", message: `lost the connection to the leader ${leader.address}; the write's outcome is unknown` });
          } else {
            finish("retry");
          }
        },
      );
    });
  }

  // ---- peer commands (authenticated connections only; the router checked) ----

  handle(name: string, rest: Buffer, context: ConnectionContext): Reply | Promise<Reply> {
    // Peers send UTF-8 (keys are UTF-8; values travel as base64).
    if (!isUtf8(rest)) return { type: "error", code: "BAD_REQUEST", message: `${name}: peer lines must be valid UTF-8` };
    const text = rest.toString("utf8");
    switch (name) {
      case "REPLICATE":
        return this.onReplicate(text, context);
      case "SNAPSHOT":
        return this.onSnapshot(text, context);
      case "FWD":
        return this.onForwarded(text);
      default:
        return { type: "error", code: "UNKNOWN_COMMAND", message: `unknown peer command ${name}` };
    }
  }

  private onReplicate(text: string, context: ConnectionContext): Reply {
    let message;
    try {
      message = decodeMessage(text);
    } catch (error) {
      this.logger.warn("peer_message_rejected", { from: context.peer, error });
      return { type: "error", code: "BAD_REQUEST", message: `bad REPLICATE: ${(error as Error).message}` };
    }
    if (message.from !== context.peer || message.to !== this.config.id) {
      this.logger.warn("peer_message_misaddressed", { peer: context.peer, from: message.from, to: message.to });
      return { type: "error", code: "FORBIDDEN", message: "message not from this peer or not for this node" };
    }
    const replica = this.replicas.get(message.partition);
    if (replica === undefined) return { type: "error", code: "UNAVAILABLE", message: `partition ${message.partition} is not open here` };
    replica.receive(message);
    return { type: "ok" };
  }

  private onSnapshot(text: string, context: ConnectionContext): Reply {
    let receiver = this.snapshotReceivers.get(context.id);
    if (receiver === undefined) {
      receiver = new SnapshotReceiver();
      this.snapshotReceivers.set(context.id, receiver);
    }
    const step = receiver.feed(text);
    if (step.type === "error") {
      this.logger.warn("snapshot_rejected", { from: context.peer, message: step.message });
      return { type: "error", code: "BAD_REQUEST", message: step.message };
    }
    if (step.type === "request") {
      const replica = this.replicas.get(step.partition);
      if (replica === undefined || step.epoch < replica.promisedEpoch || !this.isOtherMember(step.partition, context.peer)) {
        return { type: "error", code: "FORBIDDEN", message: "no such partition here, not a member of it, or a stale epoch" };
      }
      this.transport.sendSnapshot(context.peer!, step.partition, replica.snapshotImage());
      return { type: "ok" };
    }
    if (step.type === "complete") {
      const snapshot = step.snapshot;
      const replica = this.replicas.get(snapshot.partition);
      // Only another member of the group may offer our state (a snapshot holds
      // committed entries only; the core decides whether it is news to us).
      if (replica === undefined || !this.isOtherMember(snapshot.partition, context.peer)) {
        this.logger.warn("snapshot_refused", { partition: snapshot.partition, from: context.peer, epoch: snapshot.epoch });
        return { type: "error", code: "FORBIDDEN", message: "no such partition here, or the sender is not a member of it" };
      }
      replica.installSnapshot(snapshot).catch((error) => this.logger.error("snapshot_install_failed", { error }));
    }
    return { type: "ok" };
  }

  /** Is `peer` a member of `partition`'s replica group other than this node? */
  private isOtherMember(partition: string, peer: string | undefined): boolean {
    return peer !== undefined && peer !== this.config.id && (this.members[partition]?.includes(peer) ?? false);
  }

  private async onForwarded(text: string): Promise<Reply> {
    const request = decodeForward(text);
    if (request === undefined) return { type: "error", code: "BAD_REQUEST", message: "bad FWD request" };
    const outcome = await this.router!.serveKey(request, { forwarded: true, readonly: false });
    return { type: "raw", line: encodeForwardReply(outcome) };
  }

  /**
   * Planned shutdown (SIGTERM): hand every partition this node leads to an
   * up-to-date replica while still routing requests, then answer everything
   * already started and close the connections (a request that got no reply
   * was never executed), then leave ZooKeeper.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.rebalanceTimer);
    // A rebalancing step in progress finishes first (it may be handing a partition over).
    await this.rebalancing;
    await this.handOverAll();
    await this.http?.close();
    // Longer than any request may take, so every request started gets its reply.
    await this.server?.close({ graceMs: this.config.requestTimeoutMs + 1_000 });
    for (const replica of this.replicas.values()) replica.stepDown("shutdown");
    await this.cluster?.close().catch((error) => this.logger.warn("zk_close_failed", { error }));
    for (const replica of this.replicas.values()) await replica.close();
    this.transport.close();
    this.logger.info("stopped", {});
  }
}

/** `FWD PUT <key> <base64 value>` | `FWD DELETE <key>` | `FWD GET <key>`. */
export function encodeForward(request: KeyRequest): string {
  if (request.op === "put") return `FWD PUT ${request.key} ${request.value.toString("base64")}`;
  return `FWD ${request.op === "get" ? "GET" : "DELETE"} ${request.key}`;
}

/** Parses the text after "FWD "; undefined when malformed. */
export function decodeForward(text: string): KeyRequest | undefined {
  const words = text.split(" ");
  const key = words[1];
  if (key === undefined || validateKey(key) !== undefined) return undefined;
  if (words[0] === "PUT" && words.length === 3) {
    if (!isBase64(words[2])) return undefined;
    return { op: "put", key, value: Buffer.from(words[2], "base64") };
  }
  if (words[0] === "GET" && words.length === 2) return { op: "get", key, local: false };
  if (words[0] === "DELETE" && words.length === 2) return { op: "delete", key };
  return undefined;
}

/** The leader's reply line to a forwarded request. */
export function encodeForwardReply(outcome: Outcome): string {
  switch (outcome.type) {
    case "ok":
      return "OK";
    case "deleted":
      return "DELETED";
    case "not_found":
      return "NOT_FOUND";
    case "value":
      return `VALUE ${outcome.value.toString("base64")}`;
    case "unavailable":
      return `ERR UNAVAILABLE ${oneLine(outcome.message)}`;
    case "timeout":
      return `ERR TIMEOUT ${oneLine(outcome.message)}`;
    case "not_leader":
      return `ERR NOT_LEADER ${outcome.leader ?? "unknown"}`;
  }
}

/** Parses a forwarded reply line back into an outcome. */
export function decodeForwardReply(line: string): Outcome {
  if (line === "OK") return { type: "ok" };
  if (line === "DELETED") return { type: "deleted" };
  if (line === "NOT_FOUND") return { type: "not_found" };
  if (line.startsWith("VALUE ")) return { type: "value", value: Buffer.from(line.slice(6), "base64") };
  if (line.startsWith("ERR NOT_LEADER")) return { type: "not_leader", leader: undefined };
  if (line.startsWith("ERR UNAVAILABLE ")) return { type: "unavailable", message: line.slice(16) };
  if (line.startsWith("ERR TIMEOUT ")) return { type: "timeout", message: line.slice(12) };
  // Anything else from a leader (a bug or a version skew): the outcome is not known.
  return { type: "timeout", message: `unexpected reply from the leader: ${line.slice(0, 200)}` };
}

function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, " ");
}
