/**
 * The HTTP API (Node's `http`, no framework): `POST /put`, `GET /get`,
 * `DELETE /delete` with the same routing and guarantees as the TCP port
 * (they go through {@linkcode Router.serveKey}), `GET /health`, and
 * `GET /metrics` for Prometheus. Bodies and errors look like the JSON
 * dialect: `{"status":"ok"}`, `{"status":"error","code":"...","message":"..."}`.
 *
 * @module
 */
import http from "node:http";
import { isUtf8 } from "node:buffer";
import type net from "node:net";
import type { Router, KeyRequest } from "../router/router.ts";
import type { Outcome } from "../replication/partition.ts";
import type { ErrorCode } from "../protocol/types.ts";
import { validateKey } from "../protocol/parse.ts";
import type { Logger } from "../log/log.ts";
import { METRICS_CONTENT_TYPE, RequestRecorder, type Metrics } from "./metrics.ts";

/** Default limit of a request body (`POST /put`), in bytes: the TCP port's default line limit. */
export const DEFAULT_MAX_BODY_BYTES = 1_048_576;
/** HTTP connections open at once; past it new ones are refused by the kernel backlog / closed. */
export const MAX_HTTP_CONNECTIONS = 1024;
/** An idle keep-alive connection is closed after this long. */
export const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** A client must send its request headers within this long. */
export const HEADERS_TIMEOUT_MS = 10_000;
/** A client must send its whole request (headers and body) within this long. */
export const REQUEST_TIMEOUT_MS = 30_000;
/** Longest request head (request line and headers), in bytes. */
export const MAX_HEADER_BYTES = 16_384;
/** After a 413, how long the rest of a too-large body may keep arriving (discarded) before the connection is closed. */
export const DISCARD_LINGER_MS = 1_000;
/** After a 413, at most this many more body bytes are read (and discarded) before the connection is closed. */
export const MAX_DISCARD_BYTES = 64 * 1_048_576;
/** How long close() lets in-flight requests finish before cutting their connections. */
export const CLOSE_GRACE_MS = 5_000;

/** Options for {@linkcode startHttpServer}. */
export interface HttpOptions {
  host: string;
  /** 0 picks a free port (see the returned `port`). */
  port: number;
  router: Router;
  metrics: Metrics;
  /** `GET /health`: 200 when ok, else 503 with the reason. */
  health: () => { ok: boolean; reason?: string };
  /** Longest request body; a longer one gets 413 and is not read further. */
  maxBodyBytes: number;
  logger: Logger;
}

/** A running HTTP server. */
export interface HttpServer {
  /** The bound port (useful with port 0). */
  readonly port: number;
  /** Stops accepting, lets in-flight requests finish (bounded), closes connections. */
  close(): Promise<void>;
}

/** A reply ready to send. */
interface HttpReply {
  status: number;
  body: string;
  headers?: Record<string, string>;
}

/** Endpoint → the methods it allows (HEAD comes with GET). */
const ROUTES: ReadonlyMap<string, readonly string[]> = new Map([
  ["/put", ["POST"]],
  ["/get", ["GET", "HEAD"]],
  ["/delete", ["DELETE"]],
  ["/health", ["GET", "HEAD"]],
  ["/metrics", ["GET", "HEAD"]],
]);

const JSON_TYPE = "application/json";
const OK_BODY = '{"status":"ok"}';
const NOT_FOUND_BODY = '{"status":"not_found"}';

/** A problem with the request that ends it with an error reply. */
class HttpError extends Error {
  constructor(readonly status: number, readonly code: ErrorCode, message: string) {
    super(message);
  }
}

/** Starts the HTTP API; resolves once bound and logs `http_listening` with the port. */
export async function startHttpServer(options: HttpOptions): Promise<HttpServer> {
  if (!(Number.isSafeInteger(options.maxBodyBytes) && options.maxBodyBytes > 0)) {
    throw new Error(`maxBodyBytes must be a positive integer, got ${options.maxBodyBytes}`);
  }
  const recorder = new RequestRecorder(options.metrics);
  function onRequest(request: http.IncomingMessage, response: http.ServerResponse): void {
    serve(request, response, options, recorder).catch((error) => {
      // serve() answers every error itself; this is the last line of defence.
      options.logger.error("http_failed", { error });
      if (!response.headersSent) send(response, errorReply(500, "INTERNAL", "internal error; see the node's log"));
      else response.destroy();
    });
  }
  const server = http.createServer({
    maxHeaderSize: MAX_HEADER_BYTES,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    headersTimeout: HEADERS_TIMEOUT_MS,
    requestTimeout: REQUEST_TIMEOUT_MS,
    noDelay: true,
  }, onRequest);
  // "Expect: 100-continue" (curl does it for bodies over 1 KiB): a body that
  // is declared too large is refused at once, before the client sends it.
  server.on("checkContinue", (request: http.IncomingMessage, response: http.ServerResponse) => {
    if (!(Number(request.headers["content-length"]) > options.maxBodyBytes)) response.writeContinue();
    onRequest(request, response);
  });
  server.maxConnections = MAX_HTTP_CONNECTIONS;
  server.on("clientError", (error: NodeJS.ErrnoException, socket: net.Socket) => {
    // Malformed HTTP, oversized headers, timeouts: answer if we still can, then close.
    if (!socket.writable || error.code === "ECONNRESET") {
      socket.destroy();
      return;
    }
    const [status, code, message] = error.code === "HPE_HEADER_OVERFLOW"
      ? [431, "TOO_LARGE", `request headers are longer than ${MAX_HEADER_BYTES} bytes`]
      : error.code === "ERR_HTTP_REQUEST_TIMEOUT"
      ? [408, "BAD_REQUEST", `the request did not arrive within ${REQUEST_TIMEOUT_MS / 1000} s`]
      : [400, "BAD_REQUEST", "malformed HTTP request"];
    const body = errorBody(code as ErrorCode, message);
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: ${JSON_TYPE}\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: options.host, port: options.port }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", (error) => options.logger.error("http_server_error", { error }));
  const port = (server.address() as net.AddressInfo).port;
  options.logger.info("http_listening", { host: options.host, port });
  let closing: Promise<void> | undefined;
  return {
    port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}

async function serve(
  request: http.IncomingMessage,
  response: http.ServerResponse,
  options: HttpOptions,
  recorder: RequestRecorder,
): Promise<void> {
  const started = performance.now();
  const rawUrl = request.url ?? "/";
  const queryAt = rawUrl.indexOf("?");
  const path = queryAt === -1 ? rawUrl : rawUrl.slice(0, queryAt);
  const query = queryAt === -1 ? "" : rawUrl.slice(queryAt + 1);
  const method = request.method ?? "GET";
  const allowed = ROUTES.get(path);
  let reply: HttpReply;
  let command: string | undefined;
  try {
    if (allowed === undefined) {
      throw new HttpError(404, "UNKNOWN_COMMAND", `no endpoint ${printable(path)}; endpoints: ${[...ROUTES.keys()].join(" ")}`);
    }
    if (!allowed.includes(method)) {
      const error = errorReply(405, "BAD_REQUEST", `${printable(method)} ${path} is not allowed; use ${allowed[0]}`);
      error.headers = { Allow: allowed.join(", ") };
      reply = error;
    } else {
      switch (path) {
        case "/health": {
          const health = options.health();
          reply = health.ok
            ? { status: 200, body: OK_BODY }
            : errorReply(503, "UNAVAILABLE", health.reason ?? "the node is not ready");
          break;
        }
        case "/metrics":
          reply = { status: 200, body: options.metrics.render(), headers: { "Content-Type": METRICS_CONTENT_TYPE } };
          break;
        case "/put": {
          command = "put";
          const body = await readBody(request, options.maxBodyBytes);
          const { key, value } = parsePutBody(body);
          reply = toHttp(await options.router.serveKey({ op: "put", key, value }, SERVE_OPTIONS));
          break;
        }
        case "/get":
        case "/delete": {
          command = path === "/get" ? "get" : "delete";
          await discardBody(request, options.maxBodyBytes);
          const key = queryKey(query);
          const keyRequest: KeyRequest = command === "get" ? { op: "get", key, local: false } : { op: "delete", key };
          reply = toHttp(await options.router.serveKey(keyRequest, SERVE_OPTIONS));
          break;
        }
        default:
          throw new Error(`route ${path} has no handler`);
      }
    }
  } catch (error) {
    if (error instanceof HttpError) {
      reply = errorReply(error.status, error.code, error.message);
    } else {
      options.logger.error("http_handler_failed", { path, error });
      reply = errorReply(500, "INTERNAL", "internal error; see the node's log");
    }
  }
  if (command !== undefined) recorder.record(command, outcomeLabel(reply), (performance.now() - started) / 1000);
  if (reply.status === 413) {
    lingerAndSend(request, response, reply);
    return;
  }
  send(response, reply);
}

/** A key request from HTTP: linearizable like the TCP port, forwarded when this node does not lead. */
const SERVE_OPTIONS = { forwarded: false, readonly: false } as const;

function send(response: http.ServerResponse, reply: HttpReply): void {
  const body = Buffer.from(reply.body, "utf8");
  response.writeHead(reply.status, {
    "Content-Type": JSON_TYPE,
    "Content-Length": String(body.length),
    "Cache-Control": "no-store",
    ...reply.headers,
  });
  response.end(body);
}

/**
 * A 413 ends the connection, but closing it while the client is still
 * sending would reset it, and a reset can swallow the reply. So: send the
 * whole reply (with "Connection: close") at once, discard what still arrives
 * — at most MAX_DISCARD_BYTES, for at most DISCARD_LINGER_MS, never stored —
 * and only then end the response, which closes the connection.
 */
function lingerAndSend(request: http.IncomingMessage, response: http.ServerResponse, reply: HttpReply): void {
  const socket = request.socket;
  const body = Buffer.from(reply.body, "utf8");
  response.writeHead(reply.status, {
    "Content-Type": JSON_TYPE,
    "Content-Length": String(body.length),
    "Cache-Control": "no-store",
    Connection: "close",
  });
  response.write(body);
  const limit = socket.bytesRead + MAX_DISCARD_BYTES;
  let done = false;
  function finish(): void {
    if (done) return;
    done = true;
    clearTimeout(timer);
    socket.off("data", onData);
    response.end();
  }
  function onData(): void {
    if (socket.bytesRead > limit) finish();
  }
  const timer = setTimeout(finish, DISCARD_LINGER_MS);
  timer.unref();
  socket.on("data", onData);
  socket.once("close", finish);
  request.once("end", finish);
  request.resume(); // read and drop the rest of the body
  if (request.readableEnded) finish();
}

function errorBody(code: ErrorCode, message: string): string {
  return JSON.stringify({ status: "error", code, message });
}

function errorReply(status: number, code: ErrorCode, message: string): HttpReply {
  return { status, body: errorBody(code, message) };
}

function toHttp(outcome: Outcome): HttpReply {
  switch (outcome.type) {
    case "ok":
    case "deleted":
      return { status: 200, body: OK_BODY };
    case "value":
      // Like the JSON dialect: values are text; bytes that are not UTF-8 arrive as U+FFFD.
      return { status: 200, body: JSON.stringify({ status: "ok", value: outcome.value.toString("utf8") }) };
    case "not_found":
      return { status: 404, body: NOT_FOUND_BODY };
    case "unavailable":
      return { ...errorReply(503, "UNAVAILABLE", outcome.message), headers: { "Retry-After": "1" } };
    case "not_leader":
      return {
        ...errorReply(503, "NOT_LEADER", outcome.leader ?? "no leader known for this key's partition"),
        headers: { "Retry-After": "1" },
      };
    case "timeout":
      return errorReply(504, "TIMEOUT", outcome.message);
    default: {
      const never: never = outcome;
      throw new Error(`unknown outcome ${JSON.stringify(never)}`);
    }
  }
}

/** The `outcome` label, as the TCP side names it (ok, not_found, error code in lower case). */
function outcomeLabel(reply: HttpReply): string {
  if (reply.status < 300) return "ok";
  if (reply.body === NOT_FOUND_BODY) return "not_found";
  const code = /"code":"([A-Z_]+)"/.exec(reply.body)?.[1];
  return code === undefined ? "internal" : code.toLowerCase();
}

/** Reads the whole body; a body over `limit` bytes is a 413 and is not read further. */
function readBody(request: http.IncomingMessage, limit: number): Promise<Buffer> {
  const declared = request.headers["content-length"];
  if (declared !== undefined && Number(declared) > limit) {
    return Promise.reject(tooLarge(limit));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        request.pause();
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks, size));
    };
    const onError = (error: Error) => {
      cleanup();
      reject(new HttpError(400, "BAD_REQUEST", `reading the body failed: ${error.message}`));
    };
    const onAborted = () => {
      cleanup();
      reject(new HttpError(400, "BAD_REQUEST", "the client went away before the body arrived"));
    };
    function cleanup(): void {
      request.off("data", onData);
      request.off("end", onEnd);
      request.off("error", onError);
      request.off("aborted", onAborted);
    }
    request.on("data", onData);
    request.on("end", onEnd);
    request.on("error", onError);
    request.on("aborted", onAborted);
  });
}

/** GET and DELETE take no body; read (bounded) and drop one if sent, so keep-alive stays in sync. */
async function discardBody(request: http.IncomingMessage, limit: number): Promise<void> {
  if (request.complete) return;
  await readBody(request, limit);
}

function tooLarge(limit: number): HttpError {
  return new HttpError(413, "TOO_LARGE", `request body is longer than ${limit} bytes; it was not read`);
}

/** `{"key": "...", "value": "..."}` → key and value bytes, with the JSON dialect's rules. */
function parsePutBody(body: Buffer): { key: string; value: Buffer } {
  if (body.length === 0) throw new HttpError(400, "BAD_REQUEST", 'empty body; send {"key":"k","value":"v"}');
  if (!isUtf8(body)) throw new HttpError(400, "BAD_REQUEST", "invalid JSON: not valid UTF-8");
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch (error) {
    throw new HttpError(400, "BAD_REQUEST", `invalid JSON: ${(error as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new HttpError(400, "BAD_REQUEST", 'invalid JSON: the body must be an object {"key":"k","value":"v"}');
  }
  const { key, value } = parsed as Record<string, unknown>;
  if (key === undefined) throw new HttpError(400, "BAD_REQUEST", "key is missing");
  if (typeof key !== "string") throw new HttpError(400, "BAD_REQUEST", `key must be a string, got ${jsonType(key)}`);
  const keyError = validateKey(key);
  if (keyError !== undefined) throw new HttpError(400, "BAD_REQUEST", keyError);
  if (value === undefined) throw new HttpError(400, "BAD_REQUEST", "value is missing");
  if (typeof value !== "string") throw new HttpError(400, "BAD_REQUEST", `value must be a string, got ${jsonType(value)}`);
  if (LONE_SURROGATE.test(value)) {
    throw new HttpError(400, "BAD_REQUEST", "value is not valid Unicode (it holds a lone surrogate)");
  }
  return { key, value: Buffer.from(value, "utf8") };
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * The `key` query parameter, decoded as a form would be ("+" is a space)
 * but strictly: a percent-escape that is not UTF-8 is a 400, not U+FFFD.
 */
function queryKey(query: string): string {
  let found: string | undefined;
  for (const pair of query.split("&")) {
    const eq = pair.indexOf("=");
    const name = eq === -1 ? pair : pair.slice(0, eq);
    if (name !== "key") continue;
    if (found !== undefined) throw new HttpError(400, "BAD_REQUEST", "key is given more than once");
    const raw = eq === -1 ? "" : pair.slice(eq + 1);
    try {
      found = decodeURIComponent(raw.replace(/\+/g, "%20"));
    } catch {
      throw new HttpError(400, "BAD_REQUEST", "key is not valid percent-encoded UTF-8");
    }
  }
  if (found === undefined) throw new HttpError(400, "BAD_REQUEST", "the key query parameter is missing (?key=...)");
  const error = validateKey(found);
  if (error !== undefined) throw new HttpError(400, "BAD_REQUEST", error);
  return found;
}

function jsonType(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

/** Most characters of a path or method quoted back in an error. */
const MAX_QUOTED_CHARS = 64;

function printable(text: string): string {
  const shown = text.slice(0, MAX_QUOTED_CHARS).replace(/[^\x20-\x7e]/g, "?");
  return text.length > MAX_QUOTED_CHARS ? `${shown}...` : shown;
}
