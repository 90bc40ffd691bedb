/**
 * The client side of a peer connection: one TCP connection to another node,
 * authenticated with the cluster secret, carrying pipelined request lines
 * (each answered by one reply line, matched in order). Its local end binds
 * to this node's own address, so a firewall rule on that address cuts the
 * node off both ways, as a real partition would.
 *
 * @module
 */
import net from "node:net";
import split2 from "split2";
import { newNonce, proof, proofMatches } from "./auth.ts";
import type { Logger } from "../log/log.ts";

/** Reply lines longer than this end the connection (a peer never sends them). */
export const MAX_PEER_REPLY_BYTES = 64 * 1_048_576;
/** Requests waiting for replies on one connection before new ones are refused. */
export const MAX_PEER_INFLIGHT = 100_000;
/** Unsent bytes on one connection past which fire-and-forget messages are dropped (the core resends). */
export const MAX_PEER_QUEUED_BYTES = 32 * 1_048_576;

/** Why a request failed: `sent` tells whether the peer may have received it. */
export class PeerError extends Error {
  override name = "PeerError";
  constructor(message: string, readonly sent: boolean) {
    super(message);
  }
}

/** Options for {@linkcode PeerClient}. */
export interface PeerClientOptions {
  /** This node's id, announced in the handshake. */
  nodeId: string;
  secret: string;
  /** Local address to bind outgoing sockets to (the node's --host); undefined: any. */
  localAddress: string | undefined;
  logger: Logger;
  /** Connect + handshake deadline. Defaults to 2000 ms. */
  connectTimeoutMs?: number;
  /**
   * A reply this late means the link is dead (a partition: TCP would only
   * retry after its own backed-off timeout, seconds after the network heals):
   * drop the connection, fail what waits, and connect again. Undefined: never.
   */
  replyTimeoutMs?: number;
}

interface Pending {
  resolve: (line: string) => void;
  reject: (error: PeerError) => void;
  /** performance.now() when the line was written. */
  at: number;
}

function noop(): void {}

/** A lazily (re)connecting, authenticated, pipelined connection to one peer. */
export class PeerClient {
  private socket: net.Socket | undefined;
  private connecting: Promise<net.Socket> | undefined;
  private readonly pending: Pending[] = [];
  private closed = false;
  private failures = 0;
  private retryAt = 0;
  private watchdog: NodeJS.Timeout | undefined;
  /** The socket corked for the current tick, if any. */
  private corked: net.Socket | undefined;

  constructor(private address: string, private readonly options: PeerClientOptions) {}

  /** Points the client at a new address (the peer re-registered elsewhere); drops the old connection. */
  setAddress(address: string): void {
    if (address === this.address) return;
    this.address = address;
    this.reset("peer moved");
  }

  /** Sends one request line; resolves with the reply line. */
  async request(line: string): Promise<string> {
    const socket = await this.connect();
    if (this.pending.length >= MAX_PEER_INFLIGHT) throw new PeerError("too many requests in flight to the peer", false);
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject, at: performance.now() });
      this.watch();
      this.writeLine(socket, line);
    });
  }

  /**
   * Sends one line whose reply does not matter (replication messages; the
   * core retries what gets lost). Never throws; drops the line when the peer
   * is unreachable or too far behind.
   */
  send(line: string): void {
    if (this.closed) return;
    const socket = this.socket;
    if (socket !== undefined && !this.connecting) {
      if (socket.writableLength > MAX_PEER_QUEUED_BYTES) return;
      this.pending.push({ resolve: noop, reject: noop, at: performance.now() });
      this.watch();
      this.writeLine(socket, line);
      return;
    }
    this.connect().then(
      (s) => {
        if (s.writableLength > MAX_PEER_QUEUED_BYTES) return;
        this.pending.push({ resolve: noop, reject: noop, at: performance.now() });
        this.watch();
        this.writeLine(s, line);
      },
      () => {},
    );
  }

  /**
   * The peer is known to be back (it registered again, or was published as
   * a leader): forget the connect backoff, so the next request connects at
   * once instead of failing until the backoff runs out.
   */
  retryNow(): void {
    this.failures = 0;
    this.retryAt = 0;
  }

  /** Closes the connection; pending requests fail. */
  close(): void {
    this.closed = true;
    clearInterval(this.watchdog);
    this.watchdog = undefined;
    this.reset("client closed");
  }

  /**
   * Writes one line. The lines of one tick leave together, in one system
   * call, when it ends: a node forwarding or replicating many requests of a
   * pipelined burst to the same peer otherwise pays one write for each.
   */
  private writeLine(socket: net.Socket, line: string): void {
    if (this.corked !== socket) {
      this.corked = socket;
      socket.cork();
      process.nextTick(() => {
        if (this.corked === socket) this.corked = undefined;
        socket.uncork();
      });
    }
    socket.write(line + "\n");
  }

  /** Starts the reply watchdog (while anything waits for a reply). */
  private watch(): void {
    const limit = this.options.replyTimeoutMs;
    if (limit === undefined || this.watchdog !== undefined) return;
    this.watchdog = setInterval(() => {
      const oldest = this.pending[0];
      if (oldest === undefined) {
        clearInterval(this.watchdog);
        this.watchdog = undefined;
        return;
      }
      if (performance.now() - oldest.at > limit) {
        this.options.logger.warn("peer_unresponsive", { peer: this.address, waitingMs: Math.round(performance.now() - oldest.at), pending: this.pending.length });
        this.reset(`no reply for ${limit} ms`);
      }
    }, Math.max(10, Math.floor(limit / 4)));
    this.watchdog.unref();
  }

  private connect(): Promise<net.Socket> {
    if (this.closed) return Promise.reject(new PeerError("peer client closed", false));
    if (this.socket !== undefined) return Promise.resolve(this.socket);
    if (this.connecting !== undefined) return this.connecting;
    if (Date.now() < this.retryAt) return Promise.reject(new PeerError(`peer ${this.address} unreachable (backing off)`, false));
    this.connecting = this.open().then(
      (socket) => {
        this.connecting = undefined;
        this.failures = 0;
        this.socket = socket;
        return socket;
      },
      (error: Error) => {
        this.connecting = undefined;
        this.failures++;
        this.retryAt = Date.now() + Math.min(1000, 50 * 2 ** Math.min(this.failures, 5));
        throw new PeerError(`cannot reach peer ${this.address}: ${error.message}`, false);
      },
    );
    return this.connecting;
  }

  private open(): Promise<net.Socket> {
    const [host, portText] = splitAddress(this.address);
    const timeoutMs = this.options.connectTimeoutMs ?? 2000;
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port: Number(portText), localAddress: this.options.localAddress, noDelay: true });
      const timer = setTimeout(() => fail(new Error("connect timed out")), timeoutMs);
      let done = false;
      function fail(error: Error): void {
        if (done) return;
        done = true;
        clearTimeout(timer);
        socket.destroy();
        reject(error);
      }
      socket.once("error", fail);
      socket.once("close", () => fail(new Error("connection closed during handshake")));
      const lines = socket.pipe(split2({ maxLength: MAX_PEER_REPLY_BYTES }));
      lines.on("error", () => socket.destroy());
      const clientNonce = newNonce();
      const peerId = this.options.nodeId;
      let stage = 0;
      const onHandshakeLine = (line: string): void => {
        if (stage === 0) {
          const words = line.split(" ");
          if (words[0] !== "AUTH" || words[1] !== "CHALLENGE" || words.length !== 4) {
            return fail(new Error(`handshake refused: ${line.slice(0, 200)}`));
          }
          const serverNonce = words[2];
          if (!proofMatches(this.options.secret, { role: "server", peerId, clientNonce, serverNonce }, words[3])) {
            return fail(new Error("the peer does not know the cluster secret"));
          }
          stage = 1;
          socket.write(`AUTH PROOF ${proof(this.options.secret, { role: "client", peerId, clientNonce, serverNonce })}\n`);
          return;
        }
        if (line !== "OK") return fail(new Error(`handshake refused: ${line.slice(0, 200)}`));
        done = true;
        clearTimeout(timer);
        lines.off("data", onHandshakeLine);
        socket.removeAllListeners("error");
        socket.removeAllListeners("close");
        lines.on("data", (reply: string) => this.onReply(reply));
        socket.on("error", () => {});
        socket.on("close", () => {
          if (this.socket === socket) this.reset("connection lost");
        });
        resolve(socket);
      };
      lines.on("data", onHandshakeLine);
      socket.once("connect", () => socket.write(`AUTH HELLO ${peerId} ${clientNonce}\n`));
    });
  }

  private onReply(line: string): void {
    if (line.startsWith("BYE")) {
      // The peer shuts down having answered everything it executed: whatever
      // is still waiting was never executed there, so it may be retried.
      this.reset("the peer shut down before executing the request", false);
      return;
    }
    const waiter = this.pending.shift();
    if (waiter === undefined) {
      this.options.logger.warn("peer_unexpected_reply", { peer: this.address, line: line.slice(0, 200) });
      return;
    }
    waiter.resolve(line);
  }

  /** Drops the connection; what waits fails, as possibly executed (`sent`) unless the peer said otherwise. */
  private reset(why: string, sent = true): void {
    const socket = this.socket;
    this.socket = undefined;
    socket?.destroy();
    for (const waiter of this.pending.splice(0)) waiter.reject(new PeerError(`${why} (peer ${this.address})`, sent));
  }
}


/** Splits "host:port" (IPv6 hosts in brackets). */
export function splitAddress(address: string): [string, string] {
  const colon = address.lastIndexOf(":");
  if (colon <= 0) throw new Error(`not a host:port address: ${address}`);
  return [address.slice(0, colon).replace(/^\[|\]$/g, ""), address.slice(colon + 1)];
}
