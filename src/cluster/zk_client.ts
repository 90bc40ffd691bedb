/**
 * The one place that imports node-zookeeper-client: a promise API over one
 * client (one session), with what the library lacks.
 *
 * - A timeout on every request (a frozen server answers nothing, ever).
 * - Contact tracking: every answer from the server reports the time its
 *   request was *sent*, the latest moment the session is proven alive.
 * - Guards: the library throws from inside its socket handler on error codes
 *   it does not know (e.g. -118 SESSION_MOVED); that would crash the
 *   process. Our callbacks and watchers never throw into it either.
 * - Read timeouts, as the Java client has: a handshake the server never
 *   answers, or requests unanswered for 2/3 of the session timeout while
 *   connected, cut the socket so the library reconnects (to the next server
 *   of an ensemble). Without this a client can hang forever on a server that
 *   accepted the connection while starting up, or on a frozen one.
 * - A hard stop on close (the library may otherwise keep reconnecting).
 * - Stats with ephemeralOwner as hex and versions as numbers; `setData`
 *   always with a Buffer; multi ops only ever with version -1, because its
 *   Transaction turns version 0 into "any version".
 *
 * @module
 */

import zookeeper from "node-zookeeper-client";
import type { Client, Event as LibraryEvent, Stat } from "node-zookeeper-client";

/** The library's connection states we act on. */
export type ZkState = "connected" | "disconnected" | "expired";

/** A watch notification. */
export interface WatchEvent {
  type: "created" | "deleted" | "dataChanged" | "childrenChanged";
  path: string;
}

/** A watcher; pass the same function again to re-arm without piling up listeners. */
export type Watcher = (event: WatchEvent) => void;

/** Error codes surfaced by {@linkcode ZkError}. */
export type ZkErrorCode =
  | "NO_NODE"
  | "NODE_EXISTS"
  | "BAD_VERSION"
  | "NOT_EMPTY"
  | "CONNECTION_LOSS"
  | "SESSION_EXPIRED"
  | "TIMEOUT"
  | "CLOSED"
  | "LIBRARY"
  | "OTHER";

/** A failed ZooKeeper request. */
export class ZkError extends Error {
  /** What went wrong, normalised. */
  readonly code: ZkErrorCode;
  /** The path the request was about. */
  readonly path: string;
  constructor(code: ZkErrorCode, path: string, message: string) {
    super(`${code} ${path}: ${message}`);
    this.name = "ZkError";
    this.code = code;
    this.path = path;
  }
}

/** True if `error` is a ZkError with one of `codes`. */
export function isZkError(error: unknown, ...codes: ZkErrorCode[]): error is ZkError {
  return error instanceof ZkError && (codes.length === 0 || codes.includes(error.code));
}

/** A znode's stat, converted. */
export interface ZkStat {
  version: number;
  cversion: number;
  /** Session id (16 hex digits) owning an ephemeral znode; all zeros if persistent. */
  ephemeralOwner: string;
  czxid: bigint;
  numChildren: number;
  dataLength: number;
}

/** How a znode is created. */
export type ZkCreateMode = "persistent" | "ephemeral" | "ephemeral_sequential";

/** Options for {@linkcode ZkConnection.create}. */
export interface ZkCreateOptions {
  mode: ZkCreateMode;
  /** Hears of a reply that came after the request timed out: the created path, or undefined if it failed. */
  onLate?: (path: string | undefined) => void;
}

/** Options for {@linkcode ZkConnection.setData}. */
export interface ZkSetDataOptions {
  /** The version the znode must still have (0 included); there is deliberately no "any version". */
  version: number;
}

/** One operation of an atomic multi. Versions are always -1 (see module doc). */
export type MultiOp =
  | { op: "check"; path: string }
  | { op: "create"; path: string; data: Buffer; mode: ZkCreateMode }
  | { op: "remove"; path: string; version?: number };

/** What the connection reports to its owner. All calls are guarded. */
export interface ZkEvents {
  /** The library's state changed. */
  onState(state: ZkState): void;
  /** The server answered a request sent at `sentAt` (performance.now()). */
  onContact(sentAt: number): void;
  /** Something went wrong inside the library or a callback; logged, survived. */
  onFault(event: string, detail: Record<string, unknown>): void;
}

/** Options for {@linkcode ZkConnection}. */
export interface ZkConnectionOptions {
  /** Requested session timeout. */
  sessionTimeoutMs: number;
  /** Timeout of one request. */
  requestTimeoutMs: number;
  /** Upper bound of the random pause between reconnect rounds. Defaults to 100. */
  spinDelayMs?: number;
  /** How long `close()` waits for the server to confirm before cutting the socket. Defaults to 1000. */
  closeTimeoutMs?: number;
}

/** How often the read-timeout watchdog looks. */
const WATCHDOG_INTERVAL_MS = 100;
/** Read timeout as a fraction of the session timeout (the Java client's 2/3). */
const READ_TIMEOUT_FRACTION = 2 / 3;
/** Handshake timeout as a fraction of the session timeout... */
const HANDSHAKE_TIMEOUT_FRACTION = 1 / 3;
/** ...but at least this long. */
const MIN_HANDSHAKE_TIMEOUT_MS = 500;
/** The library's ConnectionManager state while it waits for a connect response. */
const LIBRARY_CONNECTING = 1;

/** Codes meaning the server itself answered (so the session was alive when the request was sent). */
const SERVER_ANSWERS = new Set<number>([
  0,
  zookeeper.Exception.NO_NODE,
  zookeeper.Exception.NODE_EXISTS,
  zookeeper.Exception.BAD_VERSION,
  zookeeper.Exception.NOT_EMPTY,
  zookeeper.Exception.NO_CHILDREN_FOR_EPHEMERALS,
  zookeeper.Exception.RUNTIME_INCONSISTENCY,
  zookeeper.Exception.NO_AUTH,
  zookeeper.Exception.INVALID_ACL,
  zookeeper.Exception.BAD_ARGUMENTS,
]);

const ERROR_NAMES = new Map<number, ZkErrorCode>([
  [zookeeper.Exception.NO_NODE, "NO_NODE"],
  [zookeeper.Exception.NODE_EXISTS, "NODE_EXISTS"],
  [zookeeper.Exception.BAD_VERSION, "BAD_VERSION"],
  [zookeeper.Exception.NOT_EMPTY, "NOT_EMPTY"],
  [zookeeper.Exception.CONNECTION_LOSS, "CONNECTION_LOSS"],
  [zookeeper.Exception.SESSION_EXPIRED, "SESSION_EXPIRED"],
]);

const MODES: Record<ZkCreateMode, number> = {
  persistent: zookeeper.CreateMode.PERSISTENT,
  ephemeral: zookeeper.CreateMode.EPHEMERAL,
  ephemeral_sequential: zookeeper.CreateMode.EPHEMERAL_SEQUENTIAL,
};

const EVENT_TYPES = new Map<number, WatchEvent["type"]>([
  [zookeeper.Event.NODE_CREATED, "created"],
  [zookeeper.Event.NODE_DELETED, "deleted"],
  [zookeeper.Event.NODE_DATA_CHANGED, "dataChanged"],
  [zookeeper.Event.NODE_CHILDREN_CHANGED, "childrenChanged"],
]);

/** The library internals we have to touch (no public hard stop, no guard). */
interface LibraryInternals {
  connectionManager: {
    onSocketData(buffer: Buffer): void;
    connect(): void;
    socket?: { destroy(): void; connecting: boolean; destroyed: boolean };
    pendingBuffer: Buffer | null;
    state: number;
  };
}

/** The library's callback error: an Exception (with getCode) or a plain Error. */
type LibraryError = Error | { getCode(): number; message?: string } | null;

function codeOf(error: LibraryError): number | undefined {
  if (error !== null && typeof (error as { getCode?: unknown }).getCode === "function") {
    return (error as { getCode(): number }).getCode();
  }
  return undefined;
}

function convertStat(stat: Stat): ZkStat {
  return {
    version: stat.version,
    cversion: stat.cversion,
    ephemeralOwner: Buffer.from(stat.ephemeralOwner).toString("hex"),
    czxid: Buffer.from(stat.czxid).readBigInt64BE(0),
    numChildren: stat.numChildren,
    dataLength: stat.dataLength,
  };
}

/** Session id 0 = none yet. */
const NO_SESSION = "0000000000000000";

/** One ZooKeeper client = one session. Dead for good after "expired" or `close()`: build a new one. */
export class ZkConnection {
  readonly #client: Client;
  readonly #internals: LibraryInternals["connectionManager"];
  readonly #options: Required<ZkConnectionOptions>;
  readonly #events: ZkEvents;
  readonly #wrapped = new WeakMap<Watcher, (event: LibraryEvent) => void>();
  #closed = false;
  #state: ZkState | "connecting" = "connecting";
  /** Requests handed to the library whose callback has not run yet (timed-out ones included). */
  readonly #inflight = new Map<number, { sentAt: number; whileConnected: boolean }>();
  #nextRequestId = 0;
  /** performance.now() of the last answer from the server, and of the last (re)connect. */
  #lastAnswerAt = -Infinity;
  #connectedAt = -Infinity;
  #watchdog?: ReturnType<typeof setInterval>;
  /** The socket seen waiting for a handshake answer, and since when. */
  #handshakeSocket?: object;
  #handshakeSince = 0;

  constructor(connect: string, events: ZkEvents, options: ZkConnectionOptions) {
    this.#options = { spinDelayMs: 100, closeTimeoutMs: 1000, ...options };
    this.#events = events;
    this.#client = zookeeper.createClient(connect, {
      sessionTimeout: options.sessionTimeoutMs,
      spinDelay: this.#options.spinDelayMs,
      retries: 0,
    });
    this.#internals = (this.#client as unknown as LibraryInternals).connectionManager;
    this.#guardSocketData();
    this.#client.on("state", (state) => this.#onLibraryState(state));
    // The library never emits 'error', but an unhandled one would crash us.
    (this.#client as unknown as NodeJS.EventEmitter).on("error", (error: unknown) => {
      this.#fault("library_error", { error: String(error) });
    });
  }

  /** Starts connecting (and reconnecting, until expired or closed). */
  start(): void {
    this.#watchdog = setInterval(() => this.#watch(), WATCHDOG_INTERVAL_MS);
    this.#watchdog.unref();
    this.#client.connect();
  }

  /** The library's connection state as last reported. */
  state(): ZkState | "connecting" {
    return this.#state;
  }

  /** Requests the library still holds (sent or queued) without an answer; a frozen server makes this grow. */
  outstanding(): number {
    return this.#inflight.size;
  }

  /** Session id as 16 hex digits, undefined before the first connect. */
  sessionId(): string | undefined {
    const id = Buffer.from(this.#client.getSessionId()).toString("hex");
    return id === NO_SESSION ? undefined : id;
  }

  /** The session timeout granted by the server (the requested one before connecting). */
  sessionTimeoutMs(): number {
    return this.#client.getSessionTimeout();
  }

  /** Creates a znode; resolves with its actual path (sequence appended). */
  create(path: string, data: Buffer, options: ZkCreateOptions): Promise<string> {
    const onLate = options.onLate;
    return this.#call<string>("create", path, (callback) => {
      this.#client.create(path, data, MODES[options.mode], (error, created) => callback(error, created));
    }, onLate === undefined ? undefined : (error, value) => onLate(error === null ? value : undefined));
  }

  /** Reads a znode; undefined if it does not exist. A watcher is set only if it exists. */
  async getData(path: string, watcher?: Watcher): Promise<{ data: Buffer; stat: ZkStat } | undefined> {
    try {
      return await this.#call("getData", path, (callback) => {
        const done = (error: LibraryError, data: Buffer, stat: Stat) =>
          callback(error, error === null ? { data: data ?? Buffer.alloc(0), stat: convertStat(stat) } : undefined);
        if (watcher === undefined) this.#client.getData(path, done);
        else this.#client.getData(path, this.#wrap(watcher), done);
      });
    } catch (error) {
      if (isZkError(error, "NO_NODE")) return undefined;
      throw error;
    }
  }

  /** Stat of a znode or undefined; the watcher fires on its creation, change or deletion. */
  exists(path: string, watcher?: Watcher): Promise<ZkStat | undefined> {
    return this.#call("exists", path, (callback) => {
      const done = (error: LibraryError, stat: Stat | null) =>
        callback(error, error === null && stat ? convertStat(stat) : undefined);
      if (watcher === undefined) this.#client.exists(path, done);
      else this.#client.exists(path, this.#wrap(watcher), done);
    });
  }

  /** Children names (unordered) or undefined if the znode does not exist. */
  async getChildren(path: string, watcher?: Watcher): Promise<string[] | undefined> {
    try {
      return await this.#call("getChildren", path, (callback) => {
        const done = (error: LibraryError, children: string[]) => callback(error, error === null ? [...children] : undefined);
        if (watcher === undefined) this.#client.getChildren(path, done);
        else this.#client.getChildren(path, this.#wrap(watcher), done);
      });
    } catch (error) {
      if (isZkError(error, "NO_NODE")) return undefined;
      throw error;
    }
  }

  /** Compare-and-set: writes only if the znode's version is still `options.version` (0 included), else BAD_VERSION. */
  setData(path: string, data: Buffer, options: ZkSetDataOptions): Promise<ZkStat> {
    const version = options.version;
    if (!Number.isInteger(version) || version < 0) throw new Error(`setData needs an explicit version, got ${version}`);
    return this.#call("setData", path, (callback) => {
      this.#client.setData(path, data, version, (error, stat) => callback(error, error === null ? convertStat(stat) : undefined));
    });
  }

  /** Deletes a znode if its version is `version` (-1: any). False if it did not exist. */
  async remove(path: string, version: number): Promise<boolean> {
    try {
      await this.#call("remove", path, (callback) => {
        this.#client.remove(path, version, (error) => callback(error, true));
      });
      return true;
    } catch (error) {
      if (isZkError(error, "NO_NODE")) return false;
      throw error;
    }
  }

  /** Runs `ops` atomically; rejects with the first failing op's error. */
  multi(ops: readonly MultiOp[]): Promise<void> {
    const label = ops.map((op) => `${op.op}:${op.path}`).join(",");
    return this.#call("multi", label, (callback) => {
      const transaction = this.#client.transaction();
      for (const op of ops) {
        if (op.op === "check") transaction.check(op.path);
        else if (op.op === "create") transaction.create(op.path, op.data, MODES[op.mode]);
        else transaction.remove(op.path, op.version ?? -1);
      }
      transaction.commit((error) => callback(error as LibraryError, undefined));
    });
  }

  /**
   * Closes the session (the server deletes its ephemeral znodes at once) and
   * makes sure the library stops reconnecting. Pending requests fail CLOSED.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#watchdog);
    const confirmed = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, this.#options.closeTimeoutMs);
      this.#client.once("disconnected", () => {
        clearTimeout(timer);
        resolve();
      });
    });
    try {
      this.#client.close();
    } catch (error) {
      this.#fault("close_threw", { error: String(error) });
    }
    await confirmed;
    // Hard stop: no more reconnects, no socket.
    this.#internals.connect = () => {};
    try {
      this.#internals.socket?.destroy();
    } catch {
      // Already destroyed.
    }
  }

  #call<T>(
    name: string,
    path: string,
    invoke: (callback: (error: LibraryError, value: T | undefined) => void) => void,
    onLate?: (error: LibraryError, value: T | undefined) => void,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.#closed) {
        reject(new ZkError("CLOSED", path, `${name} on a closed connection`));
        return;
      }
      const sentAt = performance.now();
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        reject(new ZkError("TIMEOUT", path, `${name}: no answer within ${this.#options.requestTimeoutMs} ms`));
      }, this.#options.requestTimeoutMs);
      let answered = false;
      const callback = (error: LibraryError, value: T | undefined) => {
        // Runs inside the library's socket handler: must never throw.
        try {
          if (answered) return;
          answered = true;
          this.#inflight.delete(requestId);
          const code = error === null ? 0 : codeOf(error);
          if (!this.#closed && code !== undefined && SERVER_ANSWERS.has(code)) {
            this.#lastAnswerAt = performance.now();
            this.#events.onContact(sentAt);
          }
          if (settled) {
            if (!this.#closed) onLate?.(error, value);
            return;
          }
          settled = true;
          clearTimeout(timer);
          if (this.#closed) reject(new ZkError("CLOSED", path, `${name}: connection closed`));
          else if (error === null) resolve(value as T);
          else reject(this.#convertError(error, path, name));
        } catch (thrown) {
          this.#fault("callback_threw", { request: name, path, error: String(thrown) });
        }
      };
      const requestId = this.#nextRequestId++;
      this.#inflight.set(requestId, { sentAt, whileConnected: this.#state === "connected" });
      try {
        invoke(callback);
      } catch (thrown) {
        // Bad arguments or a library assertion: fail this request only.
        if (!answered) {
          answered = true;
          this.#inflight.delete(requestId);
        }
        settled = true;
        clearTimeout(timer);
        reject(new ZkError("LIBRARY", path, `${name} threw: ${(thrown as Error).message}`));
      }
    });
  }

  #convertError(error: Exclude<LibraryError, null>, path: string, name: string): ZkError {
    const code = codeOf(error);
    const message = (error as { message?: string }).message ?? String(error);
    if (code === undefined) return new ZkError("LIBRARY", path, `${name}: ${message}`);
    return new ZkError(ERROR_NAMES.get(code) ?? "OTHER", path, `${name}: ${message} (${code})`);
  }

  #wrap(watcher: Watcher): (event: LibraryEvent) => void {
    let wrapped = this.#wrapped.get(watcher);
    if (wrapped === undefined) {
      wrapped = (event: LibraryEvent) => {
        try {
          if (this.#closed) return;
          const type = EVENT_TYPES.get(event.getType());
          if (type === undefined) return;
          watcher({ type, path: event.getPath() });
        } catch (error) {
          this.#fault("watcher_threw", { error: String(error) });
        }
      };
      this.#wrapped.set(watcher, wrapped);
    }
    return wrapped;
  }

  #onLibraryState(state: { name: string; code: number }): void {
    try {
      if (this.#closed) return;
      let next: ZkState | undefined;
      if (state === zookeeper.State.SYNC_CONNECTED) next = "connected";
      else if (state === zookeeper.State.DISCONNECTED) next = "disconnected";
      else if (state === zookeeper.State.EXPIRED) next = "expired";
      else {
        this.#fault("library_state", { state: state.name });
        return;
      }
      // The library keeps a partial frame across reconnects; a new socket must start clean.
      if (next === "disconnected") {
        this.#internals.pendingBuffer = null;
        // The library failed every request it had sent on that socket; one still listed was lost
        // inside the library (see the guard) and will never be answered: stop counting it.
        for (const [id, request] of this.#inflight) if (request.whileConnected) this.#inflight.delete(id);
      }
      if (next === "connected") this.#connectedAt = performance.now();
      this.#state = next;
      this.#events.onState(next);
    } catch (error) {
      this.#fault("state_handler_threw", { error: String(error) });
    }
  }

  /** The read timeouts (see the module doc): cut a socket that gets no answers; the library reconnects. */
  #watch(): void {
    try {
      if (this.#closed) return;
      const manager = this.#internals;
      const socket = manager.socket;
      const now = performance.now();
      const timeout = this.sessionTimeoutMs();
      if (manager.state === LIBRARY_CONNECTING && socket !== undefined && !socket.connecting && !socket.destroyed) {
        if (this.#handshakeSocket !== socket) {
          this.#handshakeSocket = socket;
          this.#handshakeSince = now;
        } else if (now - this.#handshakeSince > Math.max(MIN_HANDSHAKE_TIMEOUT_MS, timeout * HANDSHAKE_TIMEOUT_FRACTION)) {
          this.#fault("handshake_timeout", { waitedMs: Math.round(now - this.#handshakeSince) });
          this.#handshakeSocket = undefined;
          socket.destroy();
        }
        return;
      }
      this.#handshakeSocket = undefined;
      if (this.#state !== "connected" || socket === undefined || socket.destroyed || this.#inflight.size === 0) return;
      // The oldest request still unanswered, counted from when it could actually have been sent.
      let oldest = Infinity;
      for (const request of this.#inflight.values()) oldest = Math.min(oldest, request.sentAt);
      const waitingSince = Math.max(oldest, this.#connectedAt, this.#lastAnswerAt);
      if (now - waitingSince > timeout * READ_TIMEOUT_FRACTION) {
        this.#fault("read_timeout", { waitedMs: Math.round(now - waitingSince), outstanding: this.#inflight.size });
        socket.destroy();
      }
    } catch (error) {
      this.#fault("watchdog_threw", { error: String(error) });
    }
  }

  /** Wraps the library's socket data handler: an unknown error code there throws out of a socket event. */
  #guardSocketData(): void {
    const manager = this.#internals;
    const original = manager.onSocketData;
    if (typeof original !== "function") throw new Error("node-zookeeper-client internals changed: no onSocketData");
    const fault = (event: string, detail: Record<string, unknown>) => this.#fault(event, detail);
    // connect() binds `this.onSocketData` per socket, so an own property set before connect() is what runs.
    manager.onSocketData = function guardedSocketData(this: LibraryInternals["connectionManager"], buffer: Buffer) {
      try {
        original.call(this, buffer);
      } catch (error) {
        fault("library_threw", { error: String(error) });
        // The stream position is lost: drop the partial frame and reconnect (same session).
        this.pendingBuffer = null;
        try {
          this.socket?.destroy();
        } catch {
          // Already gone.
        }
      }
    };
  }

  #fault(event: string, detail: Record<string, unknown>): void {
    try {
      this.#events.onFault(event, detail);
    } catch {
      // Nothing left to tell.
    }
  }
}
