/**
 * `ringkv drill`: the failover drill an operator runs before trusting a
 * cluster. It writes to a key, stops the leader of the key's partition,
 * measures how long writes are refused (the write gap), checks that every
 * surviving node serves the latest acknowledged value, restarts the old
 * leader and checks that it caught up (READONLY read of its own copy).
 *
 *   ringkv drill --target local      # its own ZooKeeper + 5 node processes in a temp dir
 *   ringkv drill --target compose    # the cluster of compose.yaml (docker compose stop/start)
 *
 * It speaks the plain line protocol over TCP, as `nc` would. Every wait has
 * a deadline; the last line is `drill: PASS (...)` (exit 0) or
 * `drill: FAIL <why>` (exit 1).
 *
 * @module
 */
import { freePortRun } from "../net/ports.ts";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { execa } from "execa";
import { startLocalStack, waitForPort, type LocalStack } from "../node/local_cluster.ts";
import { createRing, ownerOf, ringPosition } from "../ring/ring.ts";

/** Acknowledged writes before the leader is stopped, unless `--writes`. */
export const DEFAULT_WRITES = 20;
/** Most writes `--writes` may ask for. */
export const MAX_WRITES = 10_000;
/** Nodes of the local cluster (5: every partition on 3 of them, any one may die). */
export const LOCAL_NODES = 5;
/** One request's deadline: longer than a node's own request timeout (5 s), so the node answers first. */
export const REQUEST_TIMEOUT_MS = 8_000;
/** Until the cluster is up: every partition has a leader that answers. */
export const SETUP_TIMEOUT_MS = 60_000;
/** Until a write is acknowledged again after the leader stopped. */
export const FAILOVER_TIMEOUT_MS = 30_000;
/** Until a write or read that is refused as UNAVAILABLE (no leader yet) gets through. */
export const RETRY_TIMEOUT_MS = 15_000;
/** Until the restarted leader has applied what the others committed. */
export const CATCH_UP_TIMEOUT_MS = 30_000;
/** A `docker compose stop/start` command. */
export const DOCKER_TIMEOUT_MS = 60_000;
/** The whole drill, unless `--timeout`. */
export const DEFAULT_DRILL_TIMEOUT_MS = 300_000;
/** Pause between two attempts while the cluster has no leader for the key. */
const RETRY_PAUSE_MS = 20;
/** Pause between two polls of INFO / RING. */
const POLL_PAUSE_MS = 100;
/** Longest reply line read (INFO of a node with many partitions is the longest). */
export const MAX_REPLY_BYTES = 4 * 1_048_576;

const USAGE = `usage: ringkv drill --target local|compose [flags]

The failover drill: write to a key, stop the leader of its partition, measure
the write gap, check every survivor reads the latest value, restart the old
leader and check it caught up. Ends with "drill: PASS (...)" or "drill: FAIL <why>".

  --target local|compose   local: start ZooKeeper and ${LOCAL_NODES} node processes in a temp dir
                           compose: drive the cluster of --compose-file (docker compose stop/start;
                           a node's compose service must be named after its RINGKV_ID)
  --nodes host:port,...    compose: the nodes' client addresses (default 127.0.0.1:9001-9005)
  --compose-file <file>    compose: the compose file (default compose.yaml)
  --zk <connect>           local: use this ZooKeeper instead of starting one
  --base-port <port>       local: first node port (default: ${LOCAL_NODES} free consecutive ports)
  --writes <n>             acknowledged writes before the leader stops (default ${DEFAULT_WRITES})
  --timeout <s>            give up on the whole drill after this long (default ${DEFAULT_DRILL_TIMEOUT_MS / 1000})
  --keep                   local: keep the temp dir (node logs) even on PASS`;

/** One node the drill talks to. */
export interface DrillNode {
  id: string;
  host: string;
  port: number;
}

/** What the drill runs against: a set of nodes it can stop and start again. */
export interface DrillTarget {
  /** "local" or "compose", for the report. */
  readonly name: string;
  /** Every node, with its id as the node reports it (INFO). */
  readonly nodes: readonly DrillNode[];
  /** Stops a node; resolves once it is down, with how (for the report). */
  stop(id: string): Promise<string>;
  /** Starts a stopped node again (same data); resolves once its port accepts connections. */
  start(id: string): Promise<void>;
}

/** Options for {@linkcode runDrill}. */
export interface DrillOptions {
  /** Acknowledged writes before the leader stops. Defaults to {@linkcode DEFAULT_WRITES}. */
  writes?: number;
  /** Where the step lines go. Defaults to console.log. */
  log?: (line: string) => void;
  /** Absolute time (Date.now() ms) past which every wait gives up. Defaults to now + {@linkcode DEFAULT_DRILL_TIMEOUT_MS}. */
  deadline?: number;
}

/** What a passed drill measured. */
export interface DrillResult {
  key: string;
  partition: string;
  oldLeader: string;
  newLeader: string;
  /** From the stop command to the first write acknowledged afterwards. */
  gapMs: number;
  /** How long the stop command itself took (part of the gap). */
  stopMs: number;
  /** Acknowledged writes, all steps. */
  writes: number;
  /** Writes refused or timed out while there was no leader. */
  refused: number;
  /** From the restart to the old leader having applied the others' commit index. */
  catchUpMs: number;
  /** The commit index the old leader caught up to. */
  catchUpIndex: number;
}

/** A drill that did not pass: the message is the verdict's reason. */
export class DrillFailure extends Error {
  override name = "DrillFailure";
}

// ---------------------------------------------------------------------------
// The plain line protocol, as nc speaks it
// ---------------------------------------------------------------------------

/**
 * Sends `lines` on one connection (pipelined) and resolves with as many reply
 * lines; rejects on a connection error, an early close or the deadline.
 */
function exchange(node: DrillNode, lines: readonly string[], timeoutMs: number): Promise<string[]> {
  assert(lines.length > 0 && lines.every((l) => !l.includes("\n")));
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: node.host, port: node.port, noDelay: true });
    const replies: string[] = [];
    let buffer = "";
    let done = false;
    function finish(error: Error | undefined): void {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (error === undefined) resolve(replies);
      else reject(error);
    }
    const timer = setTimeout(() => finish(new Error(`${node.id} (${node.host}:${node.port}) gave no reply within ${timeoutMs} ms`)), timeoutMs);
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(lines.map((l) => l + "\n").join("")));
    socket.on("data", (chunk: string) => {
      buffer += chunk;
      if (buffer.length > MAX_REPLY_BYTES) return finish(new Error(`${node.id}: reply longer than ${MAX_REPLY_BYTES} bytes`));
      for (let nl = buffer.indexOf("\n"); nl >= 0 && replies.length < lines.length; nl = buffer.indexOf("\n")) {
        replies.push(buffer.slice(0, nl).replace(/\r$/, ""));
        buffer = buffer.slice(nl + 1);
      }
      if (replies.length === lines.length) finish(undefined);
    });
    socket.on("error", (error) => finish(new Error(`${node.id} (${node.host}:${node.port}): ${error.message}`)));
    socket.on("close", () => finish(new Error(`${node.id} closed the connection after ${replies.length} of ${lines.length} replies`)));
  });
}

/** One request, one reply line. */
async function request(node: DrillNode, line: string, timeoutMs = REQUEST_TIMEOUT_MS): Promise<string> {
  return (await exchange(node, [line], timeoutMs))[0];
}

/** A partition as INFO reports it. */
interface PartitionInfo {
  partition: string;
  role: string;
  epoch?: number;
  commitIndex: number;
  appliedIndex: number;
}

/** INFO, parsed; undefined when the node does not answer with JSON. */
async function infoOf(node: DrillNode): Promise<{ id: string; partitions: PartitionInfo[] } | undefined> {
  const line = await request(node, "INFO", 2_000).catch(() => undefined);
  if (line === undefined || !line.startsWith("{")) return undefined;
  const info = JSON.parse(line) as { id?: unknown; partitions?: unknown };
  if (typeof info.id !== "string" || !Array.isArray(info.partitions)) return undefined;
  const partitions = (info.partitions as Record<string, unknown>[]).map((p) => ({
    partition: String(p.partition),
    role: String(p.role),
    epoch: typeof p.epoch === "number" ? p.epoch : undefined,
    commitIndex: Number(p.commitIndex ?? 0),
    // A node without appliedIndex in INFO has applied what it committed.
    appliedIndex: Number(p.appliedIndex ?? p.commitIndex ?? 0),
  }));
  return { id: info.id, partitions };
}

/** RING as the drill needs it. */
interface RingInfo {
  partitions: string[];
  vnodes: Record<string, number[]> | undefined;
  members: Record<string, string[]>;
  leaders: Record<string, string | null>;
}

async function ringOf(node: DrillNode): Promise<RingInfo | undefined> {
  const line = await request(node, "RING", 2_000).catch(() => undefined);
  if (line === undefined || !line.startsWith("{")) return undefined;
  const ring = JSON.parse(line) as Partial<RingInfo>;
  if (!Array.isArray(ring.partitions) || ring.partitions.length === 0) return undefined;
  return {
    partitions: ring.partitions,
    vnodes: ring.vnodes,
    members: ring.members ?? {},
    leaders: ring.leaders ?? {},
  };
}

/** The partition owning `key`, from the vnode positions the cluster reports (this build's ring when absent). */
function partitionOf(ring: RingInfo, key: string): string {
  if (ring.vnodes === undefined) return ownerOf(createRing(ring.partitions), key);
  const points: Array<{ partition: string; position: number }> = [];
  for (const [partition, positions] of Object.entries(ring.vnodes)) {
    for (const position of positions) points.push({ partition, position });
  }
  assert(points.length > 0, "RING lists no vnodes");
  points.sort((a, b) => a.position - b.position || (a.partition < b.partition ? -1 : a.partition > b.partition ? 1 : 0));
  const position = ringPosition(key);
  const owner = points.find((p) => p.position >= position) ?? points[0];
  return owner.partition;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------
// The drill
// ---------------------------------------------------------------------------

/** Replies that mean "no leader / no quorum right now": retry. */
function isRetryable(reply: string): boolean {
  return reply.startsWith("ERR UNAVAILABLE") || reply.startsWith("ERR NOT_LEADER");
}

/**
 * Runs the drill against `target`; resolves with the measurements, or throws
 * {@linkcode DrillFailure} with the reason. Stops exactly one node and starts
 * it again (also when the drill fails after stopping it).
 */
export async function runDrill(target: DrillTarget, options: DrillOptions = {}): Promise<DrillResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  const writesWanted = options.writes ?? DEFAULT_WRITES;
  assert(Number.isInteger(writesWanted) && writesWanted >= 1 && writesWanted <= MAX_WRITES);
  const drillDeadline = options.deadline ?? Date.now() + DEFAULT_DRILL_TIMEOUT_MS;
  /** Deadline of a step: its own budget, never past the drill's. */
  function until(ms: number): number {
    return Math.min(Date.now() + ms, drillDeadline);
  }
  const byId = new Map(target.nodes.map((n) => [n.id, n]));
  function node(id: string): DrillNode {
    const found = byId.get(id);
    if (found === undefined) throw new DrillFailure(`the cluster names node ${id}, which is not among the drill's nodes (${[...byId.keys()].join(",")})`);
    return found;
  }

  const run = randomBytes(4).toString("hex");
  const key = `drill-${run}`;
  let sequence = 0;
  let acknowledged = 0;
  /** Values a read may return: the last acknowledged one and any later write whose outcome is unknown. */
  let readable = new Set<string>();

  /** One write attempt: acknowledged (ok), refused (nothing changed) or timed out (outcome unknown). */
  async function tryWrite(via: DrillNode): Promise<{ ok: boolean; unknown: boolean; reply: string; value: string }> {
    const value = `${run}-${++sequence}`;
    let reply: string;
    try {
      reply = await request(via, `PUT ${key} ${value}`);
    } catch (error) {
      reply = `(no reply: ${(error as Error).message})`;
    }
    if (reply === "OK") {
      acknowledged++;
      readable = new Set([value]);
      return { ok: true, unknown: false, reply, value };
    }
    if (reply.startsWith("ERR UNAVAILABLE") || reply.startsWith("ERR NOT_LEADER") || /ECONNREFUSED/.test(reply)) {
      return { ok: false, unknown: false, reply, value }; // definitely not written
    }
    if (reply.startsWith("ERR TIMEOUT") || reply.startsWith("(no reply")) {
      readable.add(value); // outcome unknown: a later read may see it
      return { ok: false, unknown: true, reply, value };
    }
    throw new DrillFailure(`PUT through ${via.id} got an unexpected reply: ${reply}`);
  }

  /** Writes through `via` (retrying while there is no leader) until acknowledged. */
  async function write(via: () => DrillNode, budgetMs: number, what: string): Promise<number> {
    const stepDeadline = until(budgetMs);
    let refused = 0;
    for (;;) {
      const attempt = await tryWrite(via());
      if (attempt.ok) return refused;
      refused++;
      if (Date.now() > stepDeadline) throw new DrillFailure(`${what}: no write acknowledged within ${budgetMs} ms (last reply: ${attempt.reply})`);
      await sleep(RETRY_PAUSE_MS);
    }
  }

  /**
   * Writes through every node of `via` at once, each retrying until one write
   * is acknowledged; waits for the others' last attempts to settle. Resolves
   * with when the first acknowledgement arrived.
   */
  async function writeUntilAcknowledged(via: readonly DrillNode[], budgetMs: number, what: string): Promise<{ at: number; refused: number }> {
    const stepDeadline = until(budgetMs);
    let at: number | undefined;
    let refused = 0;
    let lastReply = "";
    const before = acknowledged;
    const maybe = new Set<string>();
    async function writer(n: DrillNode): Promise<void> {
      while (at === undefined && Date.now() <= stepDeadline) {
        const attempt = await tryWrite(n);
        if (attempt.ok || attempt.unknown) maybe.add(attempt.value);
        if (attempt.ok) {
          at ??= Date.now();
          return;
        }
        refused++;
        lastReply = `${n.id}: ${attempt.reply}`;
        await sleep(RETRY_PAUSE_MS);
      }
    }
    await Promise.all(via.map(writer));
    if (at === undefined) throw new DrillFailure(`${what}: no write acknowledged within ${budgetMs} ms (last reply: ${lastReply})`);
    assert(acknowledged > before);
    // Concurrent writes: whichever committed last is the value; any of them may be read.
    readable = maybe;
    return { at, refused };
  }

  /** A linearizable GET through `via` must return a readable value. */
  async function checkRead(via: DrillNode, what: string, prefix: string[] = []): Promise<void> {
    const stepDeadline = until(RETRY_TIMEOUT_MS);
    for (;;) {
      let reply: string;
      try {
        const replies = await exchange(via, [...prefix, `GET ${key}`], REQUEST_TIMEOUT_MS);
        if (prefix.length > 0 && replies.slice(0, prefix.length).some((r) => r !== "OK")) {
          throw new DrillFailure(`${what}: ${prefix.join(", ")} on ${via.id} answered ${replies.slice(0, prefix.length).join(", ")}`);
        }
        reply = replies[prefix.length];
      } catch (error) {
        if (error instanceof DrillFailure) throw error;
        reply = `(no reply: ${(error as Error).message})`;
      }
      if (reply.startsWith("VALUE ")) {
        const value = reply.slice("VALUE ".length);
        if (readable.has(value)) return;
        throw new DrillFailure(`${what}: GET on ${via.id} returned ${JSON.stringify(value)}, expected ${[...readable].map((v) => JSON.stringify(v)).join(" or ")}`);
      }
      if (reply === "NOT_FOUND") throw new DrillFailure(`${what}: GET on ${via.id} returned NOT_FOUND after acknowledged writes`);
      if (!isRetryable(reply) && !reply.startsWith("(no reply") && !reply.startsWith("ERR TIMEOUT")) {
        throw new DrillFailure(`${what}: GET on ${via.id} got an unexpected reply: ${reply}`);
      }
      if (Date.now() > stepDeadline) throw new DrillFailure(`${what}: GET on ${via.id} failed for ${RETRY_TIMEOUT_MS} ms (last reply: ${reply})`);
      await sleep(RETRY_PAUSE_MS);
    }
  }

  /** Polls INFO until one of `candidates` reports itself leader of `partition`. */
  async function waitForLeader(partition: string, candidates: readonly string[], budgetMs: number): Promise<{ id: string; epoch: number | undefined }> {
    const stepDeadline = until(budgetMs);
    for (;;) {
      for (const id of candidates) {
        const info = await infoOf(node(id));
        const p = info?.partitions.find((x) => x.partition === partition);
        if (p?.role === "leader") return { id, epoch: p.epoch };
      }
      if (Date.now() > stepDeadline) throw new DrillFailure(`no node of ${candidates.join(",")} reports leading ${partition} after ${budgetMs} ms`);
      await sleep(POLL_PAUSE_MS);
    }
  }

  // Step 1: the key, its partition and leader; K acknowledged writes.
  let ring: RingInfo | undefined;
  const ringDeadline = until(SETUP_TIMEOUT_MS);
  while (ring === undefined) {
    for (const n of target.nodes) {
      const r = await ringOf(n);
      if (r !== undefined && r.partitions.every((p) => typeof r.leaders[p] === "string")) {
        ring = r;
        break;
      }
    }
    if (ring !== undefined) break;
    if (Date.now() > ringDeadline) throw new DrillFailure(`no node reported a ring with a leader for every partition within ${SETUP_TIMEOUT_MS} ms`);
    await sleep(POLL_PAUSE_MS);
  }
  const partition = partitionOf(ring, key);
  const members = ring.members[partition] ?? [];
  if (members.length < 3) {
    throw new DrillFailure(`partition ${partition} has ${members.length} replica(s) (${members.join(",")}): stopping its leader would leave no majority; the drill needs 3 or more`);
  }
  for (const id of members) node(id); // every member must be reachable by the drill
  let leader = await waitForLeader(partition, members, SETUP_TIMEOUT_MS);
  const firstLeader = leader.id;
  let refusedBefore = 0;
  for (let i = 0; i < writesWanted; i++) {
    refusedBefore += await write(() => target.nodes[Math.floor(Math.random() * target.nodes.length)], RETRY_TIMEOUT_MS, `write ${i + 1} of ${writesWanted}`);
  }
  await checkRead(target.nodes[Math.floor(Math.random() * target.nodes.length)], "read back before the failover");
  log(`drill: step 1/5: key ${key} is in partition ${partition} (replicas ${members.join(",")}, leader ${firstLeader}); ${acknowledged} writes through random nodes acknowledged${refusedBefore > 0 ? ` (${refusedBefore} refused and retried)` : ""}, and the key reads back`);

  // Step 2: stop the leader (the one leading now: it may have changed while writing).
  leader = await waitForLeader(partition, members, SETUP_TIMEOUT_MS);
  const oldLeader = leader.id;
  const survivors = target.nodes.filter((n) => n.id !== oldLeader);
  const stoppedAt = Date.now();
  const how = await target.stop(oldLeader).catch((error: Error) => {
    throw new DrillFailure(`could not stop ${oldLeader}: ${error.message}`);
  });
  const stopMs = Date.now() - stoppedAt;
  let stopped = true;
  try {
    log(`drill: step 2/5: stopped leader ${oldLeader} of ${partition}${leader.epoch === undefined ? "" : ` (epoch ${leader.epoch})`}: ${how} (${stopMs} ms)`);

    // Step 3: the write gap. One writer per survivor, so a request held by
    // one node (waiting for a leader) does not hide another's success.
    const gap = await writeUntilAcknowledged(survivors, FAILOVER_TIMEOUT_MS, `after stopping ${oldLeader}`);
    const gapMs = gap.at - stoppedAt;
    const refused = gap.refused;
    const newLeader = await waitForLeader(partition, members.filter((id) => id !== oldLeader), RETRY_TIMEOUT_MS);
    log(`drill: step 3/5: write gap ${gapMs} ms until a write was acknowledged again (${survivors.length} writers, one per survivor; ${refused} attempts refused or timed out meanwhile); new leader ${newLeader.id}${newLeader.epoch === undefined ? "" : ` (epoch ${newLeader.epoch})`}`);

    // Step 4: every survivor writes, and every survivor reads what was written.
    for (const via of survivors) {
      await write(() => via, RETRY_TIMEOUT_MS, `write through ${via.id}`);
      for (const reader of survivors) await checkRead(reader, `read after the write through ${via.id}`);
    }
    log(`drill: step 4/5: each of ${survivors.length} survivors (${survivors.map((n) => n.id).join(",")}) acknowledged a write, and all of them read the latest value after each (${survivors.length * survivors.length} reads)`);

    // Step 5: the old leader comes back and catches up.
    const restartedAt = Date.now();
    await target.start(oldLeader).catch((error: Error) => {
      throw new DrillFailure(`could not restart ${oldLeader}: ${error.message}`);
    });
    stopped = false;
    const catchUpDeadline = until(CATCH_UP_TIMEOUT_MS);
    let caughtUp: { index: number; applied: number } | undefined;
    let last = "no INFO yet";
    while (caughtUp === undefined) {
      let target_ = 0;
      for (const id of members.filter((m) => m !== oldLeader)) {
        const p = (await infoOf(node(id)))?.partitions.find((x) => x.partition === partition);
        if (p !== undefined) target_ = Math.max(target_, p.commitIndex);
      }
      const mine = (await infoOf(node(oldLeader)))?.partitions.find((x) => x.partition === partition);
      if (mine !== undefined) {
        last = `${oldLeader} applied ${mine.appliedIndex}, commit ${mine.commitIndex}, role ${mine.role}; the others committed ${target_}`;
        if (target_ > 0 && mine.appliedIndex >= target_ && mine.commitIndex >= target_) caughtUp = { index: target_, applied: mine.appliedIndex };
      }
      if (caughtUp !== undefined) break;
      if (Date.now() > catchUpDeadline) throw new DrillFailure(`${oldLeader} did not catch up within ${CATCH_UP_TIMEOUT_MS} ms (${last})`);
      await sleep(POLL_PAUSE_MS);
    }
    const catchUpMs = Date.now() - restartedAt;
    await checkRead(node(oldLeader), `READONLY read on the restarted ${oldLeader}`, ["READONLY"]);
    await checkRead(node(oldLeader), `linearizable read through the restarted ${oldLeader}`);
    log(`drill: step 5/5: restarted ${oldLeader}; it applied ${partition} up to index ${caughtUp.applied} (the others committed ${caughtUp.index}) ${catchUpMs} ms after the restart, and its own copy (READONLY GET) has the latest value`);
    return {
      key,
      partition,
      oldLeader,
      newLeader: newLeader.id,
      gapMs,
      stopMs,
      writes: acknowledged,
      refused,
      catchUpMs,
      catchUpIndex: caughtUp.index,
    };
  } finally {
    // Leave the cluster as the drill found it, even after a failure.
    if (stopped) await target.start(oldLeader).catch((error: Error) => log(`drill: could not restart ${oldLeader}: ${error.message}`));
  }
}

// ---------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------

interface OwnedTarget {
  target: DrillTarget;
  /** Stops whatever the target started. */
  close(): Promise<void>;
}

async function localTarget(options: { zk?: string; basePort?: number; dataDir: string; log: (line: string) => void; deadline: number }): Promise<OwnedTarget> {
  let stack: LocalStack;
  try {
    const basePort = options.basePort ?? await freePortRun(LOCAL_NODES).catch((error: Error) => {
      throw new DrillFailure(`${error.message} (use --base-port)`);
    });
    stack = await startLocalStack({
      zk: options.zk,
      nodes: LOCAL_NODES,
      basePort,
      dataDir: options.dataDir,
      // A throwaway secret: the nodes would otherwise warn about the development default.
      secret: randomBytes(16).toString("hex"),
      leadersTimeoutMs: Math.max(1, Math.min(SETUP_TIMEOUT_MS, options.deadline - Date.now())),
    });
  } catch (error) {
    if (error instanceof DrillFailure) throw error;
    throw new DrillFailure(`the local cluster did not come up: ${(error as Error).message}`);
  }
  const running = stack.cluster;
  let closed = false;
  options.log(`drill: local cluster: ZooKeeper ${stack.zk}${stack.ownsZooKeeper ? " (started by the drill)" : ""}, nodes ${running.specs.map((s) => `${s.id}=${s.host}:${s.port}`).join(" ")}, logs in ${path.join(options.dataDir, "nodes")}`);
  return {
    target: {
      name: "local",
      nodes: running.specs.map((s) => ({ id: s.id, host: s.host, port: s.port })),
      async stop(id) {
        const pid = running.pid(id);
        await running.kill(id, "SIGKILL");
        return `SIGKILL to pid ${pid}`;
      },
      async start(id) {
        if (closed) throw new Error("the local cluster is stopped");
        await running.start(id);
      },
    },
    async close() {
      closed = true;
      await stack.close();
    },
  };
}

/** Parses `host:port,host:port,...`. */
function parseAddresses(text: string): Array<{ host: string; port: number }> {
  return text.split(",").map((item) => item.trim()).filter((item) => item !== "").map((item) => {
    const match = /^(.+):(\d{1,5})$/.exec(item);
    if (match === null || Number(match[2]) < 1 || Number(match[2]) > 65535) throw new DrillFailure(`--nodes: "${item}" is not host:port`);
    return { host: match[1], port: Number(match[2]) };
  });
}

async function composeTarget(options: { nodes: Array<{ host: string; port: number }>; file: string; log: (line: string) => void; deadline: number }): Promise<OwnedTarget> {
  if (!fs.existsSync(options.file)) throw new DrillFailure(`compose file ${options.file} not found (--compose-file)`);
  // Learn each address's node id from INFO: the drill addresses nodes by id.
  const nodes: DrillNode[] = [];
  const stepDeadline = Math.min(Date.now() + SETUP_TIMEOUT_MS, options.deadline);
  for (const address of options.nodes) {
    for (;;) {
      const info = await infoOf({ id: "?", ...address });
      if (info !== undefined) {
        nodes.push({ id: info.id, ...address });
        break;
      }
      if (Date.now() > stepDeadline) throw new DrillFailure(`${address.host}:${address.port} did not answer INFO within ${SETUP_TIMEOUT_MS} ms (is the cluster up? docker compose up -d)`);
      await sleep(POLL_PAUSE_MS);
    }
  }
  if (new Set(nodes.map((n) => n.id)).size !== nodes.length) throw new DrillFailure(`two addresses answer as the same node: ${nodes.map((n) => `${n.id}=${n.host}:${n.port}`).join(" ")}`);
  options.log(`drill: compose cluster (${options.file}): nodes ${nodes.map((n) => `${n.id}=${n.host}:${n.port}`).join(" ")}`);
  async function compose(verb: "stop" | "start", service: string): Promise<void> {
    const result = await execa("docker", ["compose", "-f", options.file, verb, service], { reject: false, timeout: DOCKER_TIMEOUT_MS, all: true });
    if (result.exitCode !== 0 || result.timedOut) {
      throw new Error(`docker compose ${verb} ${service} failed${result.timedOut ? ` (timed out after ${DOCKER_TIMEOUT_MS} ms)` : ""}: ${(result.all ?? "").trim().split("\n").slice(-3).join(" | ")}`);
    }
  }
  return {
    target: {
      name: "compose",
      nodes,
      async stop(id) {
        await compose("stop", id);
        return `docker compose -f ${options.file} stop ${id}`;
      },
      async start(id) {
        await compose("start", id);
        const n = nodes.find((x) => x.id === id)!;
        await waitForPort(n.host, n.port, Math.max(1, Math.min(SETUP_TIMEOUT_MS, options.deadline - Date.now())));
      },
    },
    async close() {},
  };
}

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

function wholeNumber(name: string, text: string | undefined, fallback: number, min: number, max: number): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) throw new RangeError(`--${name} must be a whole number from ${min} to ${max}, got "${text}"`);
  return Number(text);
}

/** `ringkv drill`: runs the drill and prints its steps and verdict; resolves to the exit code (0 PASS, 1 FAIL, 2 usage). */
export async function main(argv: string[]): Promise<number> {
  let values;
  let writes: number;
  let timeoutS: number;
  let basePort: number | undefined;
  try {
    values = parseArgs({
      args: argv,
      options: {
        "target": { type: "string" },
        "nodes": { type: "string", default: "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003,127.0.0.1:9004,127.0.0.1:9005" },
        "compose-file": { type: "string", default: "compose.yaml" },
        "zk": { type: "string" },
        "base-port": { type: "string" },
        "writes": { type: "string" },
        "timeout": { type: "string" },
        "keep": { type: "boolean", default: false },
        "help": { type: "boolean", default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values;
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (values.target !== "local" && values.target !== "compose") throw new RangeError(`--target must be local or compose, got ${values.target === undefined ? "nothing" : `"${values.target}"`}`);
    writes = wholeNumber("writes", values.writes, DEFAULT_WRITES, 1, MAX_WRITES);
    timeoutS = wholeNumber("timeout", values.timeout, DEFAULT_DRILL_TIMEOUT_MS / 1000, 10, 3600);
    basePort = values["base-port"] === undefined ? undefined : wholeNumber("base-port", values["base-port"], 0, 1, 65535 - LOCAL_NODES);
  } catch (error) {
    console.error(`ringkv drill: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const deadline = Date.now() + timeoutS * 1000;
  // After the verdict, nothing more: a drill abandoned at --timeout may still be unwinding.
  let finished = false;
  const log = (line: string): void => {
    if (!finished) console.log(line);
  };

  let owned: OwnedTarget | undefined;
  let tempDir: string | undefined;
  let closing: Promise<void> | undefined;
  function close(): Promise<void> {
    closing ??= (owned?.close() ?? Promise.resolve()).catch((error: Error) => log(`drill: cleanup failed: ${error.message}`));
    return closing;
  }
  // Ctrl-C (or a test's deadline) must not leave ZooKeeper and nodes behind.
  function onSignal(signal: NodeJS.Signals): void {
    log(`drill: FAIL interrupted by ${signal}${tempDir === undefined ? "" : ` (logs kept in ${tempDir})`}`);
    void close().finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  }
  // First in line: a ZooKeeper helper may exit the process from its own handler
  // (its exit hook and the local cluster's still kill every child).
  process.prependOnceListener("SIGINT", onSignal);
  process.prependOnceListener("SIGTERM", onSignal);
  let timer: NodeJS.Timeout | undefined;
  let verdict: string;
  let passed = false;
  try {
    if (values.target === "local") {
      tempDir = fs.mkdtempSync(path.join(os.tmpdir(), "ringkv-drill-"));
      owned = await localTarget({ zk: values.zk, basePort, dataDir: tempDir, log, deadline });
    } else {
      owned = await composeTarget({ nodes: parseAddresses(values.nodes!), file: values["compose-file"]!, log, deadline });
    }
    const overall = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DrillFailure(`the drill took longer than --timeout ${timeoutS} s`)), Math.max(0, deadline - Date.now()));
    });
    const result = await Promise.race([runDrill(owned.target, { writes, log, deadline }), overall]);
    verdict = `drill: PASS (gap ${result.gapMs} ms, ${result.writes} writes, ${result.partition} leader ${result.oldLeader} -> ${result.newLeader}, ${result.refused} attempts refused during the gap, ${result.oldLeader} caught up to index ${result.catchUpIndex} in ${result.catchUpMs} ms, target ${owned.target.name})`;
    passed = true;
  } catch (error) {
    const why = error instanceof DrillFailure ? error.message : `unexpected error: ${(error as Error).stack ?? error}`;
    verdict = `drill: FAIL ${why.replace(/\n/g, " | ")}${tempDir === undefined ? "" : ` (logs kept in ${tempDir})`}`;
  }
  clearTimeout(timer);
  await close();
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  if (tempDir !== undefined && passed && !values.keep) fs.rmSync(tempDir, { recursive: true, force: true });
  // The verdict is the last line, after the cleanup's own lines.
  log(verdict);
  finished = true;
  return passed ? 0 : 1;
}
