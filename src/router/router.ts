/**
 * The router: the server's request handler. Key commands go to the key's
 * partition (ring lookup): served here when this node leads it (or is
 * standalone), else forwarded to the leader and the reply relayed. Node
 * commands (PING, INFO, RING, ...) and the peer handshake are answered here.
 *
 * @module
 */
import type { Reply, Request } from "../protocol/types.ts";
import { HELP_TEXT } from "../protocol/encode.ts";
import type { ConnectionContext, RequestHandler } from "../server/server.ts";
import { ownerOf, type Ring } from "../ring/ring.ts";
import type { Outcome, PartitionHandle, PartitionStatus } from "../replication/partition.ts";
import type { Proposal } from "../replication/types.ts";
import { isNonce, newNonce, proof, proofMatches } from "../net/auth.ts";
import type { Logger } from "../log/log.ts";

/** What the router needs to know about the cluster; standalone nodes have a trivial one. */
export interface Topology {
  /** The current ring. */
  ring(): Ring;
  /** This node's replica of `partition`, if it is a member. */
  local(partition: string): PartitionHandle | undefined;
  /** Every local partition. */
  locals(): PartitionHandle[];
  /**
   * Sends a key request to the partition's leader elsewhere and returns its
   * outcome; undefined when no forwarding applies (standalone).
   */
  forward?(partition: string, request: KeyRequest): Promise<Outcome>;
  /** Leader address of a partition (for NOT_LEADER and RING). */
  leaderOf(partition: string): { id: string; address: string } | undefined;
  /** Members of each partition (for RING). */
  members(): Record<string, string[]>;
  /**
   * Resolves true once the ring exists (cluster nodes wait, bounded, for the
   * barrier instead of failing at once); absent or false: not ready.
   */
  waitForRing?(): Promise<boolean>;
  /** Extra fields for INFO (cluster: session state, pending partitions, ...). */
  info(): Record<string, unknown>;
}

/** A key request in the form that is forwarded between nodes. */
export type KeyRequest =
  | { op: "put"; key: string; value: Buffer }
  | { op: "delete"; key: string }
  | { op: "get"; key: string; local: boolean };

/** Handles peer-only commands once the connection has authenticated. */
export interface PeerHandler {
  handle(name: string, rest: Buffer, context: ConnectionContext): Reply | Promise<Reply>;
}

/** Options for {@linkcode createRouter}. */
export interface RouterOptions {
  nodeId: string;
  version: string;
  /** Cluster secret for the peer handshake. */
  secret: string;
  /** Forward to leaders (true) or answer NOT_LEADER (false). */
  forward: boolean;
  logger: Logger;
  /** Peer-only commands other than AUTH (REPLICATE, SNAPSHOT, FWD). */
  peers?: PeerHandler;
  /** Live numbers for INFO (connections, ...). */
  stats?: () => Record<string, unknown>;
}

/** A router that also answers key requests arriving from peers (FWD). */
export interface Router extends RequestHandler {
  /** Serves a key request on this node, forwarding if needed (`forwarded`: never forward again). */
  serveKey(request: KeyRequest, options: { forwarded: boolean; readonly: boolean }): Promise<Outcome> | Outcome;
}

const started = Date.now();

/** Builds the request handler for a node. */
export function createRouter(topology: Topology, options: RouterOptions): Router {
  function serveKey(request: KeyRequest, serveOptions: { forwarded: boolean; readonly: boolean }): Promise<Outcome> | Outcome {
    const ring = topology.ring();
    if (ring.partitions.length === 0) {
      const notReady: Outcome = { type: "unavailable", message: "the cluster is not ready yet (waiting for --expect-nodes nodes and the ring)" };
      if (topology.waitForRing === undefined) return notReady;
      return topology.waitForRing().then((ready) => ready && topology.ring().partitions.length > 0 ? serveKey(request, serveOptions) : notReady);
    }
    const partition = ownerOf(ring, request.key);
    const local = topology.local(partition);
    if (local !== undefined) {
      const outcome = request.op === "get"
        ? local.read(request.key, { local: request.local || serveOptions.readonly })
        : local.write(toProposal(request));
      if (outcome instanceof Promise) {
        return outcome.then((o) => maybeForward(partition, request, o, serveOptions.forwarded));
      }
      return maybeForward(partition, request, outcome, serveOptions.forwarded);
    }
    return maybeForward(partition, request, { type: "not_leader", leader: undefined }, serveOptions.forwarded);
  }

  function maybeForward(partition: string, request: KeyRequest, outcome: Outcome, forwarded: boolean): Outcome | Promise<Outcome> {
    if (outcome.type !== "not_leader") return outcome;
    if (forwarded || !options.forward || topology.forward === undefined) {
      return { type: "not_leader", leader: topology.leaderOf(partition)?.address };
    }
    return topology.forward(partition, request);
  }

  function handle(request: Request, context: ConnectionContext): Reply | Promise<Reply> {
    switch (request.command) {
      case "PUT":
        return relay(serveKey({ op: "put", key: request.key, value: request.value }, keyOptions(context)));
      case "DELETE":
        return relay(serveKey({ op: "delete", key: request.key }, keyOptions(context)));
      case "GET":
        return relay(serveKey({ op: "get", key: request.key, local: context.readonly }, keyOptions(context)));
      case "EXISTS":
        return exists(request.keys, context);
      case "PING":
        return { type: "pong" };
      case "HELP":
        return { type: "text", text: HELP_TEXT };
      case "INFO":
        return { type: "json", value: info() };
      case "RING":
        return { type: "json", value: ringInfo() };
      case "QUIT":
        return { type: "bye" };
      case "READONLY":
        context.readonly = true;
        return { type: "ok" };
      case "READWRITE":
        context.readonly = false;
        return { type: "ok" };
      case "PEER":
        return peer(request.name, request.rest, context);
      case "INVALID":
        return { type: "error", code: request.code, message: request.message };
    }
  }

  function keyOptions(context: ConnectionContext): { forwarded: boolean; readonly: boolean } {
    return { forwarded: false, readonly: context.readonly };
  }

  function relay(outcome: Outcome | Promise<Outcome>): Reply | Promise<Reply> {
    return outcome instanceof Promise ? outcome.then(toReply) : toReply(outcome);
  }

  async function exists(keys: string[], context: ConnectionContext): Promise<Reply> {
    let count = 0;
    for (const key of keys) {
      const outcome = await serveKey({ op: "get", key, local: context.readonly }, keyOptions(context));
      if (outcome.type === "value") count++;
      else if (outcome.type !== "not_found") return toReply(outcome);
    }
    return { type: "integer", value: count };
  }

  /** Connections whose refused peer command was logged already. */
  const refusedLogged = new WeakSet<ConnectionContext>();

  function peer(name: string, rest: Buffer, context: ConnectionContext): Reply | Promise<Reply> {
    if (name === "AUTH") return auth(rest.toString("latin1"), context);
    if (context.peer === undefined) {
      // Once per connection: a flood of refused lines must not flood the log.
      if (!refusedLogged.has(context)) {
        refusedLogged.add(context);
        options.logger.warn("peer_command_refused", { command: name, remote: context.remote });
      }
      return { type: "error", code: "FORBIDDEN", message: `${name} is a peer-only command; authenticate as a cluster peer first` };
    }
    if (options.peers === undefined) {
      return { type: "error", code: "UNKNOWN_COMMAND", message: `${name} is not served by a standalone node` };
    }
    return options.peers.handle(name, rest, context);
  }

  function auth(text: string, context: ConnectionContext): Reply {
    const words = text.split(" ");
    const refuse = (why: string): Reply => {
      context.handshake = undefined;
      options.logger.warn("peer_auth_refused", { remote: context.remote, why });
      return { type: "error", code: "FORBIDDEN", message: `authentication failed: ${why}` };
    };
    if (words[0] === "HELLO" && words.length === 3) {
      const [, peerId, clientNonce] = words;
      if (!/^[A-Za-z0-9_.-]{1,64}$/.test(peerId) || !isNonce(clientNonce)) return refuse("malformed HELLO");
      const serverNonce = newNonce();
      context.handshake = { peerId, clientNonce, serverNonce };
      const serverProof = proof(options.secret, { role: "server", peerId, clientNonce, serverNonce });
      return { type: "raw", line: `AUTH CHALLENGE ${serverNonce} ${serverProof}` };
    }
    if (words[0] === "PROOF" && words.length === 2 && context.handshake !== undefined) {
      const { peerId, clientNonce, serverNonce } = context.handshake;
      if (!proofMatches(options.secret, { role: "client", peerId, clientNonce, serverNonce }, words[1])) {
        return refuse("wrong proof (is --secret the same on every node?)");
      }
      context.handshake = undefined;
      context.peer = peerId;
      return { type: "ok" };
    }
    return refuse("expected AUTH HELLO <id> <nonce> then AUTH PROOF <hmac>");
  }

  function statuses(): PartitionStatus[] {
    return topology.locals().map((p) => p.status());
  }

  function info(): Record<string, unknown> {
    const partitions = statuses();
    const leads = partitions.filter((p) => p.role === "leader" || p.role === "standalone").map((p) => p.partition);
    const role = partitions.some((p) => p.role === "standalone")
      ? "standalone"
      : leads.length > 0
      ? "leader"
      : "follower";
    return {
      id: options.nodeId,
      version: options.version,
      role,
      leads,
      epoch: Math.max(0, ...partitions.map((p) => p.epoch)),
      commitIndex: Object.fromEntries(partitions.map((p) => [p.partition, p.commitIndex])),
      keys: partitions.reduce((sum, p) => sum + p.keys, 0),
      partitions,
      uptimeSeconds: Math.round((Date.now() - started) / 1000),
      ...topology.info(),
      ...options.stats?.(),
    };
  }

  function ringInfo(): Record<string, unknown> {
    const ring = topology.ring();
    const leaders: Record<string, string | null> = {};
    for (const p of ring.partitions) {
      const local = topology.local(p)?.status();
      leaders[p] = local?.role === "standalone" ? options.nodeId : topology.leaderOf(p)?.id ?? null;
    }
    const vnodes: Record<string, number[]> = {};
    for (const v of ring.vnodes) (vnodes[v.partition] ??= []).push(v.position);
    return { partitions: ring.partitions, vnodes, members: topology.members(), leaders, ...topology.info() };
  }

  return { handle, serveKey };
}

function toProposal(request: KeyRequest): Proposal {
  if (request.op === "put") return { op: "put", key: request.key, value: request.value };
  return { op: "delete", key: request.key, value: EMPTY };
}

const EMPTY = Buffer.alloc(0);

/** Turns a partition outcome into a client reply. */
export function toReply(outcome: Outcome): Reply {
  switch (outcome.type) {
    case "ok":
      return { type: "ok" };
    case "deleted":
      return { type: "deleted" };
    case "not_found":
      return { type: "not_found" };
    case "value":
      return { type: "value", value: outcome.value };
    case "unavailable":
      return { type: "error", code: "UNAVAILABLE", message: outcome.message };
    case "timeout":
      return { type: "error", code: "TIMEOUT", message: outcome.message };
    case "not_leader":
      return {
        type: "error",
        code: "NOT_LEADER",
        message: outcome.leader === undefined ? "no leader known for this key's partition" : outcome.leader,
      };
  }
}
