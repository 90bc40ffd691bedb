/**
 * The node's side of the wire for replication: peer messages as
 * `REPLICATE <encoded>` lines and snapshots as `SNAPSHOT` lines, over one
 * authenticated {@linkcode PeerClient} per peer.
 *
 *   SNAPSHOT BEGIN <partition> <epoch> <index> <lastEpoch> <keys>
 *   SNAPSHOT DATA <partition> <base64 key>:<base64 value> ...
 *   SNAPSHOT END <partition>
 *   SNAPSHOT REQUEST <partition> <epoch>       (please stream yours to me)
 *
 * @module
 */
import { PeerClient } from "../net/peer_client.ts";
import { encodeMessage } from "./codec.ts";
import type { PeerMessage } from "./types.ts";
import type { ReplicaTransport, SnapshotImage } from "./replica.ts";
import type { Logger } from "../log/log.ts";

/** Payload bytes per SNAPSHOT DATA line. */
export const SNAPSHOT_CHUNK_BYTES = 256 * 1024;

/** Options for {@linkcode Transport}. */
export interface TransportOptions {
  nodeId: string;
  secret: string;
  localAddress: string | undefined;
  logger: Logger;
  /** Forwarded requests wait at most this long for their reply (the node's --request-timeout). */
  requestTimeoutMs: number;
}

/**
 * Replication lines are answered as soon as they are read, so a reply this
 * late means a dead link: reconnect rather than wait for TCP's backed-off
 * retransmission (seconds after a partition heals).
 */
export const REPLICATION_REPLY_TIMEOUT_MS = 2_000;

/** Peer connections of one node, shared by all its partitions. */
export class Transport implements ReplicaTransport {
  /** Replication traffic (REPLICATE, SNAPSHOT) per peer... */
  private readonly clients = new Map<string, PeerClient>();
  /** ...and forwarded client requests, apart: their replies wait for commits, and must not hold up replication's. */
  private readonly forwarders = new Map<string, PeerClient>();
  private readonly addresses = new Map<string, string>();

  constructor(private readonly options: TransportOptions) {}

  /** Updates where each peer listens (from ZooKeeper's node registrations). */
  setPeers(addresses: Map<string, string>): void {
    for (const [id, address] of addresses) {
      if (id === this.options.nodeId) continue;
      this.addresses.set(id, address);
      this.clients.get(id)?.setAddress(address);
      this.forwarders.get(id)?.setAddress(address);
    }
  }

  /** Peer `id` is back (see {@linkcode PeerClient.retryNow}): connect to it at once. */
  peerBack(id: string): void {
    this.clients.get(id)?.retryNow();
    this.forwarders.get(id)?.retryNow();
  }

  /** The connection for forwarded requests to peer `id`, or undefined if its address is unknown. */
  client(id: string): PeerClient | undefined {
    // A reply later than every forwarded request's deadline: the link is dead.
    return this.clientIn(this.forwarders, id, this.options.requestTimeoutMs + 1_000);
  }

  private clientIn(clients: Map<string, PeerClient>, id: string, replyTimeoutMs: number): PeerClient | undefined {
    let client = clients.get(id);
    if (client === undefined) {
      const address = this.addresses.get(id);
      if (address === undefined) return undefined;
      client = new PeerClient(address, {
        nodeId: this.options.nodeId,
        secret: this.options.secret,
        localAddress: this.options.localAddress,
        logger: this.options.logger,
        replyTimeoutMs,
      });
      clients.set(id, client);
    }
    return client;
  }

  private replication(id: string): PeerClient | undefined {
    return this.clientIn(this.clients, id, REPLICATION_REPLY_TIMEOUT_MS);
  }

  send(message: PeerMessage): void {
    this.replication(message.to)?.send(encodeMessage(message));
  }

  sendSnapshot(to: string, partition: string, image: SnapshotImage): void {
    const client = this.replication(to);
    if (client === undefined) return;
    // Serialised now, synchronously: the store keeps changing after this call.
    const lines = encodeSnapshot(partition, image);
    for (const line of lines) client.send(line);
  }

  requestSnapshot(from: string, partition: string, epoch: number): void {
    this.replication(from)?.send(`SNAPSHOT REQUEST ${partition} ${epoch}`);
  }

  close(): void {
    for (const client of [...this.clients.values(), ...this.forwarders.values()]) client.close();
    this.clients.clear();
    this.forwarders.clear();
  }
}

/** Encodes a snapshot image as SNAPSHOT lines (see the module doc). */
export function encodeSnapshot(partition: string, image: SnapshotImage): string[] {
  const lines = [`SNAPSHOT BEGIN ${partition} ${image.epoch} ${image.index} ${image.lastEpoch} ${image.state.size}`];
  let parts: string[] = [];
  let bytes = 0;
  for (const [key, value] of image.state) {
    const pair = `${Buffer.from(key, "utf8").toString("base64")}:${value.toString("base64")}`;
    parts.push(pair);
    bytes += pair.length + 1;
    if (bytes >= SNAPSHOT_CHUNK_BYTES) {
      lines.push(`SNAPSHOT DATA ${partition} ${parts.join(" ")}`);
      parts = [];
      bytes = 0;
    }
  }
  if (parts.length > 0) lines.push(`SNAPSHOT DATA ${partition} ${parts.join(" ")}`);
  lines.push(`SNAPSHOT END ${partition}`);
  return lines;
}

/** A snapshot being received on one connection. */
export interface IncomingSnapshot {
  partition: string;
  epoch: number;
  index: number;
  lastEpoch: number;
  expectedKeys: number;
  state: Map<string, Buffer>;
}

/** Result of feeding one SNAPSHOT line to {@linkcode SnapshotReceiver}. */
export type SnapshotStep =
  | { type: "more" }
  | { type: "complete"; snapshot: IncomingSnapshot }
  | { type: "request"; partition: string; epoch: number }
  | { type: "error"; message: string };

/** Parses SNAPSHOT lines of one connection; validates everything (a peer's garbage never crashes the node). */
export class SnapshotReceiver {
  private current: IncomingSnapshot | undefined;

  /** Feeds the text after "SNAPSHOT ". */
  feed(text: string): SnapshotStep {
    const words = text.split(" ");
    const kind = words[0];
    const partition = words[1] ?? "";
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(partition)) return { type: "error", message: "bad partition name" };
    if (kind === "REQUEST") {
      const epoch = Number(words[2]);
      if (words.length !== 3 || !Number.isSafeInteger(epoch) || epoch < 0) return { type: "error", message: "bad SNAPSHOT REQUEST" };
      return { type: "request", partition, epoch };
    }
    if (kind === "BEGIN") {
      const numbers = words.slice(2).map(Number);
      if (words.length !== 6 || numbers.some((n) => !Number.isSafeInteger(n) || n < 0)) {
        return { type: "error", message: "bad SNAPSHOT BEGIN" };
      }
      const [epoch, index, lastEpoch, expectedKeys] = numbers;
      this.current = { partition, epoch, index, lastEpoch, expectedKeys, state: new Map() };
      return { type: "more" };
    }
    const current = this.current;
    if (current === undefined || current.partition !== partition) {
      this.current = undefined;
      return { type: "error", message: `SNAPSHOT ${kind} without BEGIN` };
    }
    if (kind === "DATA") {
      for (let i = 2; i < words.length; i++) {
        const colon = words[i].indexOf(":");
        if (colon < 0) return this.fail("bad SNAPSHOT DATA pair");
        const key = Buffer.from(words[i].slice(0, colon), "base64").toString("utf8");
        const value = Buffer.from(words[i].slice(colon + 1), "base64");
        if (key.length === 0) return this.fail("empty key in SNAPSHOT DATA");
        current.state.set(key, value);
        if (current.state.size > current.expectedKeys) return this.fail("more keys than announced");
      }
      return { type: "more" };
    }
    if (kind === "END") {
      this.current = undefined;
      if (current.state.size !== current.expectedKeys) {
        return { type: "error", message: `snapshot had ${current.state.size} keys, announced ${current.expectedKeys}` };
      }
      return { type: "complete", snapshot: current };
    }
    return this.fail(`unknown SNAPSHOT ${kind.slice(0, 32)}`);
  }

  private fail(message: string): SnapshotStep {
    this.current = undefined;
    return { type: "error", message };
  }
}
