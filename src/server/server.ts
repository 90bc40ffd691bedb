/**
 * The TCP listener: one connection = framing, in-order replies with
 * pipelining, limits, idle timeout and backpressure. It knows nothing about
 * keys or partitions: every parsed request goes to a {@linkcode RequestHandler}.
 *
 * @module
 */
import net from "node:net";
import { Framer, type Frame } from "../protocol/framer.ts";
import { parseFrame } from "../protocol/parse.ts";
import { encodeReplies, encodeReply, type ReplyItem } from "../protocol/encode.ts";
import type { Dialect, Reply, Request } from "../protocol/types.ts";
import type { Logger } from "../log/log.ts";

/** Requests a connection may have in flight before the server stops reading it. */
export const MAX_INFLIGHT_PER_CONNECTION = 4096;
/** Longest line an authenticated peer may send (replication batches, snapshot chunks). */
export const MAX_PEER_LINE_BYTES = 256 * 1_048_576;
/**
 * Replies answered at once are pushed to the socket when about this many
 * bytes of them wait, or every {@linkcode FLUSH_EVERY_REQUESTS}: one write
 * per read chunk in the common case, yet the output limit is checked before
 * a pipeline of big GETs piles up.
 */
const FLUSH_BYTES = 64 * 1024;
const FLUSH_EVERY_REQUESTS = 256;
/** Last line to an authenticated peer on shutdown: nothing it sent after its last reply was executed. */
const PEER_BYE = Buffer.from("BYE shutdown\n");
/** How long a closing connection may linger before it is destroyed. */
const LINGER_MS = 5000;
/** Unsent reply bytes a connection may hold before the server stops reading it. */
export const MAX_PENDING_OUTPUT_BYTES = 8 * 1_048_576;

/** What the server knows about one client or peer connection. */
export interface ConnectionContext {
  readonly id: number;
  readonly remote: string;
  /** The authenticated peer's node id; undefined for clients. */
  peer: string | undefined;
  /** READONLY mode: replica-local (possibly stale) GETs. */
  readonly: boolean;
  /** Scratch space of the peer handshake (nonces); owned by the handler. */
  handshake: Record<string, string> | undefined;
}

/** Answers requests; may answer synchronously or with a promise. Must not throw (the server turns a throw into ERR INTERNAL). */
export interface RequestHandler {
  handle(request: Request, context: ConnectionContext): Reply | Promise<Reply>;
  /** Called once when a connection closes (cleanup of per-connection state). */
  closed?(context: ConnectionContext): void;
}

/** Options for {@linkcode startServer}. */
export interface ServerOptions {
  host: string;
  port: number;
  maxLine: number;
  /** Idle timeout in ms; 0 disables. */
  idleTimeoutMs: number;
  maxConnections: number;
  logger: Logger;
}

/** A running server. */
export interface Server {
  /** The bound port (useful with port 0). */
  readonly port: number;
  /** Open connections. */
  connections(): number;
  /** Stops accepting, lets in-flight requests finish and their replies flush, closes connections. */
  close(options?: { graceMs?: number }): Promise<void>;
}

interface Slot {
  request: Request;
  reply: Reply | undefined;
  kind: RequestKind;
}

type RequestKind = "read" | "write" | "other";

/** Reads and writes are ordered against each other on one connection; everything else is not. */
function kindOf(request: Request): RequestKind {
  switch (request.command) {
    case "GET":
    case "EXISTS":
      return "read";
    case "PUT":
    case "DELETE":
      return "write";
    default:
      return "other";
  }
}

/** Starts listening; resolves once bound. */
export function startServer(handler: RequestHandler, options: ServerOptions): Promise<Server> {
  const sockets = new Set<Connection>();
  let nextId = 1;
  let closing = false;
  // allowHalfOpen: `echo "PUT a b" | nc -N` closes its sending side right after
  // the request; the reply must still go out before we close ours.
  const tcp = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
    if (closing || sockets.size >= options.maxConnections) {
      // Over the cap: one clear line, then close. The client may retry later.
      socket.end(closing ? "ERR UNAVAILABLE the node is shutting down\n" : "ERR UNAVAILABLE too many connections; try again later\n");
      socket.on("error", () => {});
      return;
    }
    const connection = new Connection(socket, nextId++, handler, options);
    sockets.add(connection);
    socket.on("close", () => {
      sockets.delete(connection);
      handler.closed?.(connection.context);
    });
  });
  tcp.maxConnections = options.maxConnections + 64; // the extra let us say why we refuse
  return new Promise((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen({ host: options.host, port: options.port, backlog: 1024 }, () => {
      tcp.off("error", reject);
      tcp.on("error", (error) => options.logger.error("server_error", { error }));
      const address = tcp.address() as net.AddressInfo;
      resolve({
        port: address.port,
        connections: () => sockets.size,
        async close(closeOptions = {}) {
          closing = true;
          const stopped = new Promise<void>((done) => tcp.close(() => done()));
          await Promise.all([...sockets].map((c) => c.drainAndClose(closeOptions.graceMs ?? 5000)));
          await stopped;
        },
      });
    });
  });
}

/** One client or peer connection: frames in, replies out in request order. */
class Connection {
  readonly context: ConnectionContext;
  private readonly framer: Framer;
  private readonly queue: Slot[] = [];
  private head = 0;
  private paused = false;
  private ending = false;
  private flushScheduled = false;
  /** Estimated bytes of replies completed since the last flush. */
  private unflushed = 0;
  private drained: (() => void) | undefined;
  private lastDialect: Dialect = "line";
  /** Frames read but not dispatched yet (held while the connection is over its limits). */
  private backlog: Frame[] = [];
  private backlogAt = 0;
  /** Requests dispatched and not answered yet, by kind. */
  private readonly incomplete = { read: 0, write: 0 };
  /** Draining stopped until the requests of the other kind complete. */
  private waitingForOrder = false;
  private endWhenDone = false;

  constructor(
    private readonly socket: net.Socket,
    id: number,
    private readonly handler: RequestHandler,
    private readonly options: ServerOptions,
  ) {
    this.context = {
      id,
      remote: `${socket.remoteAddress}:${socket.remotePort}`,
      peer: undefined,
      readonly: false,
      handshake: undefined,
    };
    this.framer = new Framer({ maxLine: options.maxLine });
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("drain", () => this.maybeResume());
    socket.on("end", () => this.onClientEnd());
    socket.on("error", () => {}); // a reset by the peer is normal; "close" follows
    socket.on("close", () => this.drained?.());
    if (options.idleTimeoutMs > 0) {
      socket.setTimeout(options.idleTimeoutMs, () => this.onIdle());
    }
  }

  private onData(chunk: Buffer): void {
    if (this.ending) return;
    let frames;
    try {
      frames = this.framer.push(chunk);
    } catch (error) {
      // The framer asserts its invariants; a broken one must not take the node down.
      this.options.logger.error("framer_failed", { connection: this.context.id, error });
      this.socket.destroy();
      return;
    }
    if (this.backlogAt === this.backlog.length) {
      this.backlog = frames;
      this.backlogAt = 0;
    } else {
      for (const frame of frames) this.backlog.push(frame);
    }
    this.drainBacklog();
  }

  /**
   * Dispatches held frames while the connection is within its limits. Replies
   * are flushed every few requests so that unsent bytes are counted as they
   * grow: one small write of many GETs for a big value cannot pile up
   * gigabytes of replies before the limit is looked at.
   */
  private drainBacklog(): void {
    let dispatched = 0;
    while (this.backlogAt < this.backlog.length) {
      if (this.ending) break;
      if (this.overLimits()) {
        this.pause();
        return;
      }
      const frame = this.backlog[this.backlogAt];
      const request = parseFrame(frame, { maxLine: this.options.maxLine });
      const kind = kindOf(request);
      if (kind !== "other" && this.incomplete[kind === "read" ? "write" : "read"] > 0) {
        // Requests take effect in the order they arrive on a connection: a read
        // waits for the writes before it (and a write for the reads), while
        // reads pipeline with reads and writes with writes.
        this.waitingForOrder = true;
        this.pause();
        return;
      }
      this.backlogAt++;
      const wasPeer = this.context.peer !== undefined;
      this.dispatch(request);
      if (!wasPeer && this.context.peer !== undefined) this.framer.raiseMaxLine(MAX_PEER_LINE_BYTES);
      if (this.unflushed >= FLUSH_BYTES || ++dispatched % FLUSH_EVERY_REQUESTS === 0) this.flush();
    }
    this.backlog = [];
    this.backlogAt = 0;
    if (this.overLimits()) this.pause();
  }

  private overLimits(): boolean {
    return this.pending() >= MAX_INFLIGHT_PER_CONNECTION || this.socket.writableLength >= MAX_PENDING_OUTPUT_BYTES;
  }

  private pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.socket.pause();
  }

  /** Ends our side; keeps reading (and discarding) so the client's close is seen, and destroys a socket that lingers. */
  private finish(data?: Buffer): void {
    this.ending = true;
    if (data === undefined) this.socket.end();
    else this.socket.end(data);
    this.socket.resume();
    setTimeout(() => this.socket.destroy(), LINGER_MS).unref();
  }

  private dispatch(request: Request): void {
    const slot: Slot = { request, reply: undefined, kind: kindOf(request) };
    this.lastDialect = request.dialect;
    this.queue.push(slot);
    if (request.command === "QUIT") {
      slot.reply = { type: "bye" };
      this.ending = true; // read nothing more; close once every earlier reply is out
      this.scheduleFlush();
      return;
    }
    let result: Reply | Promise<Reply>;
    try {
      result = this.handler.handle(request, this.context);
    } catch (error) {
      result = internalError(error, this.options.logger);
    }
    if (result instanceof Promise) {
      if (slot.kind !== "other") this.incomplete[slot.kind]++;
      result.then(
        (reply) => this.complete(slot, reply),
        (error) => this.complete(slot, internalError(error, this.options.logger)),
      );
    } else {
      slot.reply = result;
      this.unflushed += replyWeight(result);
      this.scheduleFlush();
    }
  }

  private complete(slot: Slot, reply: Reply): void {
    slot.reply = reply;
    if (slot.kind !== "other") this.incomplete[slot.kind]--;
    if (this.waitingForOrder) {
      // drainBacklog checks the order rule again and waits once more if it still holds.
      this.waitingForOrder = false;
      this.paused = false;
      this.drainBacklog();
      if (!this.paused && !this.ending) this.socket.resume();
    }
    this.scheduleFlush();
  }

  /** Writes completed replies at the head of the queue, batched per event-loop turn. */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    process.nextTick(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    this.unflushed = 0;
    if (this.socket.destroyed) return;
    const ready: ReplyItem[] = [];
    let quit = false;
    while (this.head < this.queue.length) {
      const slot = this.queue[this.head];
      if (slot.reply === undefined) break;
      ready.push({ reply: slot.reply, request: slot.request });
      this.queue[this.head] = undefined as unknown as Slot;
      this.head++;
      if (slot.request.command === "QUIT") {
        quit = true;
        break;
      }
    }
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    } else if (this.head > 1024) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    if (ready.length > 0) this.socket.write(encodeReplies(ready));
    if (quit) {
      this.finish();
      return;
    }
    if (this.pending() === 0) {
      if (this.endWhenDone && this.backlogAt === this.backlog.length) this.finish();
      this.drained?.();
    }
    this.maybeResume();
  }

  private pending(): number {
    return this.queue.length - this.head;
  }

  private maybeResume(): void {
    if (!this.paused || this.ending || this.waitingForOrder) return;
    if (this.pending() < MAX_INFLIGHT_PER_CONNECTION / 2 && this.socket.writableLength < MAX_PENDING_OUTPUT_BYTES / 2) {
      this.paused = false;
      this.drainBacklog();
      if (!this.paused) this.socket.resume();
    }
  }

  /** The client closed its sending side: answer what it sent, then close ours. */
  private onClientEnd(): void {
    // Not `ending`: requests already read (perhaps held back for ordering) are still answered.
    this.endWhenDone = true;
    if (this.pending() === 0 && this.backlogAt === this.backlog.length) this.finish();
  }

  private onIdle(): void {
    if (this.pending() > 0 || this.paused) return; // busy, not idle: the timer re-arms on activity
    // Said in the dialect the client last used, so a RESP client sees a RESP reply.
    this.finish(encodeReply({ type: "bye", reason: "idle" }, { dialect: this.lastDialect, command: "QUIT" }));
  }

  /** Shutdown: stop reading, wait (bounded) until in-flight replies are written, then end. */
  drainAndClose(graceMs: number): Promise<void> {
    this.ending = true;
    this.socket.pause();
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        this.drained = undefined;
        if (!this.socket.destroyed) {
          // Every request read was answered, so nothing more will be executed:
          // a peer learns that requests it sent since were not (and may retry them).
          if (this.context.peer !== undefined && this.pending() === 0) this.socket.end(PEER_BYE);
          else this.socket.end();
          this.socket.resume(); // read (and drop) until the client's close, which a paused socket never sees
          this.socket.once("close", () => resolve());
          setTimeout(() => {
            this.socket.destroy();
            resolve();
          }, 1000).unref();
        } else {
          resolve();
        }
      };
      const timer = setTimeout(finish, graceMs);
      timer.unref();
      this.drained = finish;
      if (this.pending() === 0) finish();
    });
  }
}

/** A reply's size on the wire, roughly (exact for values, an upper guess for the rest). */
function replyWeight(reply: Reply): number {
  if (reply.type === "value") return reply.value.length + 32;
  if (reply.type === "json" || reply.type === "text") return 4096;
  return 32;
}

function internalError(error: unknown, logger: Logger): Reply {
  logger.error("handler_failed", { error });
  return { type: "error", code: "INTERNAL", message: "internal error; see the node's log" };
}
