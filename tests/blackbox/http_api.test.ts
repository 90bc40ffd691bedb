/**
 * The HTTP API and /metrics, as curl and Prometheus meet them: a real node
 * process started with `--http-port 0` (its port read from the
 * `http_listening` log line), real HTTP. A second suite starts the HTTP
 * server in this process over a real router and real standalone partitions
 * to reach the answers a healthy standalone node never gives (503, 504, 500).
 */
import http from "node:http";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { makeTempDir, startNode, type NodeHandle } from "../support/node_process.ts";
import { LineClient } from "../support/tcp.ts";
import { startHttpServer, type HttpServer } from "../../src/server/http.ts";
import { createNodeMetrics, type Metrics } from "../../src/server/metrics.ts";
import { createRouter, type Topology } from "../../src/router/router.ts";
import { createRing } from "../../src/ring/ring.ts";
import { openStandalonePartition } from "../../src/replication/standalone.ts";
import type { PartitionHandle } from "../../src/replication/partition.ts";
import { createLogger } from "../../src/log/log.ts";

/** Deadline of every HTTP exchange in this file. */
const HTTP_TIMEOUT_MS = 5_000;
/** Bigger than any body limit the node may use (--max-line 4096, or the 1 MiB default). */
const TOO_BIG_BYTES = 2 * 1_048_576 + 17;

interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: Record<string, unknown> | undefined;
}

interface Call {
  method?: string;
  body?: string | Buffer;
  headers?: Record<string, string>;
  agent?: http.Agent;
}

/** One HTTP request with Node's client; resolves with status, headers and the body (parsed if JSON). */
function call(port: number, path: string, options: Call = {}): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const request = http.request({
      host: "127.0.0.1",
      port,
      path,
      method: options.method ?? "GET",
      headers: options.headers,
      agent: options.agent ?? false,
      timeout: HTTP_TIMEOUT_MS,
    }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let json: Record<string, unknown> | undefined;
        if (String(response.headers["content-type"]).startsWith("application/json") && text !== "") {
          json = JSON.parse(text) as Record<string, unknown>;
        }
        resolve({ status: response.statusCode ?? 0, headers: response.headers, text, json });
      });
    });
    request.on("timeout", () => request.destroy(new Error(`${path}: no response within ${HTTP_TIMEOUT_MS} ms`)));
    request.on("error", reject);
    request.end(options.body);
  });
}

function put(port: number, body: unknown): Promise<HttpResult> {
  return call(port, "/put", { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body) });
}

/** Asserts the JSON error shape of every failure. */
function assertError(result: HttpResult, status: number, code: string, message?: RegExp): void {
  assert.is(result.status, status, `status ${result.status}: ${result.text}`);
  assert.is(result.json?.status, "error", result.text);
  assert.is(result.json?.code, code, result.text);
  assert.type(result.json?.message, "string");
  if (message !== undefined) assert.match(String(result.json?.message), message);
}

/** One raw HTTP response read off a LineClient: status line, headers, Content-Length body. */
async function readRawResponse(client: LineClient): Promise<{ status: number; headers: Record<string, string>; body: string }> {
  const statusLine = await client.readLine(HTTP_TIMEOUT_MS);
  const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(statusLine)?.[1]);
  assert.ok(status > 0, `a status line: ${JSON.stringify(statusLine)}`);
  const headers: Record<string, string> = {};
  for (;;) {
    const line = await client.readLine(HTTP_TIMEOUT_MS);
    if (line === "") break;
    const colon = line.indexOf(":");
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  const length = Number(headers["content-length"] ?? 0);
  const body = (await client.readBytes(length, HTTP_TIMEOUT_MS)).toString("utf8");
  return { status, headers, body };
}

/** The value of one sample line of a /metrics body (undefined if absent). */
function metric(body: string, series: string): number | undefined {
  for (const line of body.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

// ---------------------------------------------------------------- a real node process

const node = suite<{ node: NodeHandle; tcp: number; http: number }>("http api of a node process", {
  node: undefined as unknown as NodeHandle,
  tcp: 0,
  http: 0,
});

node.before(async (context) => {
  context.node = await startNode({ args: ["--http-port", "0", "--max-line", "4096"] });
  const listening = await context.node.waitForEvent((e) => e.event === "http_listening");
  assert.type(listening.port, "number");
  context.tcp = context.node.port;
  context.http = listening.port as number;
  assert.is.not(context.http, context.tcp);
});

node.after(async (context) => {
  const code = await context.node.stop();
  assert.is(code, 0, "the node stops cleanly with the HTTP server open");
});

node("PUT, GET and DELETE round-trip with the JSON dialect's bodies and status codes", async ({ http: port }) => {
  const value = "hello, wörld — with spaces\nand a line break ✓";
  const stored = await put(port, { key: "greeting", value });
  assert.is(stored.status, 200);
  assert.equal(stored.json, { status: "ok" });
  assert.match(String(stored.headers["content-type"]), /^application\/json/);
  const got = await call(port, "/get?key=greeting");
  assert.is(got.status, 200);
  assert.equal(got.json, { status: "ok", value });
  const deleted = await call(port, "/delete?key=greeting", { method: "DELETE" });
  assert.is(deleted.status, 200);
  assert.equal(deleted.json, { status: "ok" });
  const gone = await call(port, "/get?key=greeting");
  assert.is(gone.status, 404);
  assert.equal(gone.json, { status: "not_found" });
  const again = await call(port, "/delete?key=greeting", { method: "DELETE" });
  assert.is(again.status, 404);
  assert.equal(again.json, { status: "not_found" });
});

node("HTTP and TCP serve the same data: a write on one is read on the other", async ({ http: port, tcp }) => {
  const client = await LineClient.connect(tcp);
  try {
    assert.is((await put(port, { key: "shared", value: "from http" })).status, 200);
    assert.is(await client.request("GET shared"), "VALUE from http");
    assert.is(await client.request("PUT shared from tcp"), "OK");
    assert.equal((await call(port, "/get?key=shared")).json, { status: "ok", value: "from tcp" });
  } finally {
    client.destroy();
  }
});

node("query keys are percent-decoded as forms are: UTF-8 escapes work, '+' is a space (so not a key)", async ({ http: port }) => {
  assert.is((await put(port, { key: "clé/ü?&=", value: "v1" })).status, 200);
  const got = await call(port, `/get?key=${encodeURIComponent("clé/ü?&=")}`);
  assert.equal(got.json, { status: "ok", value: "v1" });
  assertError(await call(port, "/get?key=a+b"), 400, "BAD_REQUEST", /whitespace/);
  assertError(await call(port, "/get?key=%FF%FE"), 400, "BAD_REQUEST", /UTF-8/);
  assertError(await call(port, "/get?key=%E0%A4"), 400, "BAD_REQUEST", /UTF-8/);
  assertError(await call(port, "/get?key=a&key=b"), 400, "BAD_REQUEST", /more than once/);
  assertError(await call(port, "/get"), 400, "BAD_REQUEST", /key/);
  assertError(await call(port, "/get?key="), 400, "BAD_REQUEST", /empty/);
  assertError(await call(port, "/delete?nokey=1", { method: "DELETE" }), 400, "BAD_REQUEST", /key/);
});

node("bad PUT bodies are 400 BAD_REQUEST and write nothing", async ({ http: port, tcp }) => {
  const cases: [string | Buffer, RegExp][] = [
    ["{bad json", /invalid JSON/],
    ["", /empty body/],
    ["[1,2]", /object/],
    ["null", /object/],
    ['"just a string"', /object/],
    ['{"value":"v"}', /key is missing/],
    ['{"key":"badput1"}', /value is missing/],
    ['{"key":"badput2","value":42}', /value must be a string/],
    ['{"key":"badput3","value":null}', /value must be a string/],
    ['{"key":7,"value":"v"}', /key must be a string/],
    ['{"key":"bad put","value":"v"}', /whitespace/],
    ['{"key":"","value":"v"}', /empty/],
    [JSON.stringify({ key: "k".repeat(1025), value: "v" }), /1024/],
    ['{"key":"badput4","value":"\\ud800"}', /surrogate/],
    [Buffer.from([0x7b, 0x22, 0x6b, 0x22, 0x3a, 0xff, 0x7d]), /UTF-8/],
  ];
  for (const [body, message] of cases) {
    assertError(await call(port, "/put", { method: "POST", body }), 400, "BAD_REQUEST", message);
  }
  const client = await LineClient.connect(tcp);
  try {
    for (const key of ["badput1", "badput2", "badput3", "badput4"]) {
      assert.is(await client.request(`GET ${key}`), "NOT_FOUND", `${key} was not written`);
    }
  } finally {
    client.destroy();
  }
});

node("a body over the limit is 413 TOO_LARGE, closes the connection, and writes nothing", async ({ http: port, tcp }) => {
  const huge = JSON.stringify({ key: "huge", value: "x".repeat(TOO_BIG_BYTES) });
  assertError(await put(port, huge), 413, "TOO_LARGE", /longer than/);
  // Chunked (no Content-Length): the limit is found while reading; the reply comes before the client is done.
  const client = await LineClient.connect(port);
  try {
    client.write("POST /put HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n");
    const chunk = `{"key":"chunked","value":"${"y".repeat(64 * 1024)}`;
    for (let sent = 0; sent < TOO_BIG_BYTES; sent += chunk.length) {
      client.write(`${Buffer.byteLength(chunk).toString(16)}\r\n${chunk}\r\n`);
    }
    const reply = await readRawResponse(client);
    assert.is(reply.status, 413);
    assert.is(reply.headers.connection, "close");
    assert.is((JSON.parse(reply.body) as { code: string }).code, "TOO_LARGE");
    await client.closed(HTTP_TIMEOUT_MS); // the server ends the connection (after a bounded linger)
  } finally {
    client.destroy();
  }
  // Declared too large with Expect: 100-continue (curl's way): refused before the body is sent.
  const expect = await LineClient.connect(port);
  try {
    expect.write(`POST /put HTTP/1.1\r\nHost: test\r\nContent-Length: ${TOO_BIG_BYTES}\r\nExpect: 100-continue\r\n\r\n`);
    const reply = await readRawResponse(expect);
    assert.is(reply.status, 413, "no 100 Continue first");
  } finally {
    expect.destroy();
  }
  const line = await LineClient.connect(tcp);
  try {
    assert.is(await line.request("GET huge"), "NOT_FOUND");
    assert.is(await line.request("GET chunked"), "NOT_FOUND");
  } finally {
    line.destroy();
  }
  // A body under the limit is still fine afterwards.
  assert.is((await put(port, { key: "small", value: "z".repeat(3000) })).status, 200);
});

node("wrong methods are 405 with Allow; unknown paths are 404; both in the JSON error shape", async ({ http: port }) => {
  const wrong: [string, string, string][] = [
    ["GET", "/put", "POST"],
    ["PUT", "/put", "POST"],
    ["POST", "/get?key=a", "GET"],
    ["GET", "/delete?key=a", "DELETE"],
    ["POST", "/health", "GET"],
    ["DELETE", "/metrics", "GET"],
  ];
  for (const [method, path, allowed] of wrong) {
    const result = await call(port, path, { method });
    assertError(result, 405, "BAD_REQUEST", new RegExp(allowed));
    assert.match(String(result.headers.allow), new RegExp(allowed), `${method} ${path}: Allow names ${allowed}`);
  }
  for (const path of ["/", "/nope", "/put/extra", "/GET?key=a", "/metrics/"]) {
    assertError(await call(port, path), 404, "UNKNOWN_COMMAND", /endpoint/);
  }
});

node("GET /health is 200 {status: ok}; HEAD works too", async ({ http: port }) => {
  const health = await call(port, "/health");
  assert.is(health.status, 200);
  assert.equal(health.json, { status: "ok" });
  const head = await call(port, "/health", { method: "HEAD" });
  assert.is(head.status, 200);
  assert.is(head.text, "");
});

node("GET /metrics is Prometheus text; request counters and latency histograms grow with HTTP and TCP traffic", async ({ http: port, tcp }) => {
  const before = await call(port, "/metrics");
  assert.is(before.status, 200);
  assert.match(String(before.headers["content-type"]), /^text\/plain; version=0\.0\.4/);
  assert.match(before.text, /# TYPE ringkv_requests_total counter\n/);
  assert.match(before.text, /# TYPE ringkv_request_duration_seconds histogram\n/);
  assert.is(metric(before.text, 'ringkv_partition_leader{partition="p0"}'), 1, "standalone: leads p0");
  assert.ok((metric(before.text, "ringkv_connections") ?? -1) >= 0, "connections gauge present");
  const putOk = 'ringkv_requests_total{command="put",outcome="ok"}';
  const getNotFound = 'ringkv_requests_total{command="get",outcome="not_found"}';
  const putBad = 'ringkv_requests_total{command="put",outcome="bad_request"}';
  const putCount = 'ringkv_request_duration_seconds_count{command="put"}';
  const commit = 'ringkv_partition_commit_index{partition="p0"}';
  const value = (name: string) => metric(before.text, name) ?? 0;

  assert.is((await put(port, { key: "m1", value: "1" })).status, 200);
  assert.is((await put(port, { key: "m2", value: "2" })).status, 200);
  assert.is((await call(port, "/get?key=never-set")).status, 404);
  assert.is((await put(port, "{oops")).status, 400);
  const client = await LineClient.connect(tcp);
  try {
    assert.is(await client.request("PUT m3 3"), "OK");
    assert.is(await client.request("GET never-set-either"), "NOT_FOUND");
  } finally {
    client.destroy();
  }
  const after = (await call(port, "/metrics")).text;
  assert.is(metric(after, putOk), value(putOk) + 3, "2 HTTP + 1 TCP PUT");
  assert.is(metric(after, getNotFound), value(getNotFound) + 2, "1 HTTP + 1 TCP GET");
  assert.is(metric(after, putBad), value(putBad) + 1);
  assert.is(metric(after, putCount), value(putCount) + 4);
  assert.is(metric(after, commit), value(commit) + 3, "three writes committed");
  assert.is(metric(after, 'ringkv_request_duration_seconds_bucket{command="put",le="+Inf"}'), metric(after, putCount));
  // Three sequential writes are three group-commit batches of one entry each (fsync "always").
  const batches = "ringkv_fsync_batch_entries_count";
  assert.is(metric(after, batches), value(batches) + 3, "one fsync batch per sequential write");
  assert.is(metric(after, "ringkv_fsync_batch_entries_sum"), (metric(before.text, "ringkv_fsync_batch_entries_sum") ?? 0) + 3);
  assert.is(metric(after, "ringkv_fsync_duration_seconds_count"), metric(after, batches));
  assert.ok((metric(after, "ringkv_fsync_duration_seconds_sum") ?? 0) > 0, "fsyncs take time");
});

node("keep-alive: many requests, pipelined and sequential, on one connection", async ({ http: port }) => {
  const client = await LineClient.connect(port);
  try {
    client.write(`POST /put HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{"key":"ka","value":"kept"}`);
    const first = await readRawResponse(client);
    assert.is(first.status, 200);
    assert.is.not(first.headers.connection, "close");
    // Three pipelined requests in one write (reads: RFC 9112 lets a server run
    // pipelined requests at once, so clients pipeline only safe ones): three
    // responses, in order, and the connection stays open.
    client.write(
      "GET /get?key=ka HTTP/1.1\r\nHost: t\r\n\r\n" +
        "GET /health HTTP/1.1\r\nHost: t\r\n\r\n" +
        "GET /get?key=nothing-here HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    const replies = [await readRawResponse(client), await readRawResponse(client), await readRawResponse(client)];
    assert.equal(replies.map((r) => r.status), [200, 200, 404]);
    assert.equal(JSON.parse(replies[0].body), { status: "ok", value: "kept" });
    client.write("DELETE /delete?key=ka HTTP/1.1\r\nHost: t\r\n\r\n");
    assert.is((await readRawResponse(client)).status, 200);
    assert.not.ok(client.isClosed);
  } finally {
    client.destroy();
  }
  // Node's keep-alive agent reuses its one socket.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const ports = new Set<number>();
    agent.on("free", (socket) => ports.add(socket.localPort ?? 0));
    for (let i = 0; i < 5; i++) assert.is((await call(port, "/health", { agent })).status, 200);
    assert.is(ports.size, 1, "one socket served all five");
  } finally {
    agent.destroy();
  }
});

node("garbage, oversized headers and abandoned requests get errors or a close, never a crash", async ({ node: handle, http: port }) => {
  const garbage = await LineClient.connect(port);
  try {
    garbage.write("\x00\xff\xfe not http at all\r\n\r\n");
    const reply = await readRawResponse(garbage);
    assert.is(reply.status, 400);
    assert.is((JSON.parse(reply.body) as { code: string }).code, "BAD_REQUEST");
    await garbage.closed(HTTP_TIMEOUT_MS);
  } finally {
    garbage.destroy();
  }
  const headers = await LineClient.connect(port);
  try {
    headers.write(`GET /health HTTP/1.1\r\nHost: t\r\nX-Big: ${"h".repeat(20_000)}\r\n\r\n`);
    const reply = await readRawResponse(headers);
    assert.is(reply.status, 431);
  } finally {
    headers.destroy();
  }
  // A client that announces a body and vanishes halfway.
  const quitter = await LineClient.connect(port);
  quitter.write('POST /put HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{"key":"half');
  quitter.destroy();
  const weird = ["/get?key=%", "/get?%%%", "/get?key=a%00b", `/get?key=${"%41".repeat(2000)}`, "/metrics?x=1", "//health"];
  for (const path of weird) {
    const result = await call(port, path);
    assert.ok([200, 400, 404].includes(result.status), `${path}: ${result.status}`);
  }
  assert.is((await call(port, "/health")).status, 200, "still serving");
  assert.ok(handle.alive());
  assert.not.match(handle.stderr(), /"level":"error"/, "nothing logged as an internal error");
});

// ---------------------------------------------------------------- in this process, over a real router

const logger = createLogger("http-test", { level: "error", write: () => {} });

interface Harness {
  server: HttpServer;
  metrics: Metrics;
  close(): Promise<void>;
}

/** A real HTTP server over a real router; `topology` says which partitions exist and how forwarding answers. */
/** A node that knows no ring yet: no partitions, no leaders. */
function emptyTopology(): Topology {
  const empty = createRing([]);
  return {
    ring: () => empty,
    local: () => undefined,
    locals: () => [],
    leaderOf: () => undefined,
    members: () => ({}),
    info: () => ({}),
  };
}

async function harness(topology: Topology, options: { health?: () => { ok: boolean; reason?: string }; maxBodyBytes?: number } = {}): Promise<Harness> {
  const metrics = createNodeMetrics();
  const router = createRouter(topology, { nodeId: "t1", version: "test", secret: "s", forward: true, logger });
  const server = await startHttpServer({
    host: "127.0.0.1",
    port: 0,
    router,
    metrics,
    health: options.health ?? (() => ({ ok: true })),
    maxBodyBytes: options.maxBodyBytes ?? 1024,
    logger,
  });
  return { server, metrics, close: () => server.close() };
}

function standaloneTopology(partition: PartitionHandle): Topology {
  const ring = createRing([partition.name]);
  return {
    ring: () => ring,
    local: (p) => (p === partition.name ? partition : undefined),
    locals: () => [partition],
    leaderOf: () => ({ id: "t1", address: "127.0.0.1:1" }),
    members: () => ({ [partition.name]: ["t1"] }),
    info: () => ({}),
  };
}

const inproc = suite("http api over a real router, in this process");

inproc("a body of exactly maxBodyBytes is accepted; one byte more is 413", async () => {
  const partition = await openStandalonePartition(makeTempDir(), "p0", { fsync: "always", snapshotEvery: 1000, nodeId: "n1", logger });
  const h = await harness(standaloneTopology(partition), { maxBodyBytes: 100 });
  try {
    const prefix = '{"key":"edge","value":"';
    const exact = prefix + "v".repeat(100 - prefix.length - 2) + '"}';
    assert.is(Buffer.byteLength(exact), 100);
    assert.is((await call(h.server.port, "/put", { method: "POST", body: exact })).status, 200);
    const over = prefix + "w".repeat(100 - prefix.length - 1) + '"}';
    assertError(await call(h.server.port, "/put", { method: "POST", body: over }), 413, "TOO_LARGE");
    assert.equal((await call(h.server.port, "/get?key=edge")).json, { status: "ok", value: "v".repeat(100 - prefix.length - 2) });
    assert.is(h.metrics.value("ringkv_requests_total", { command: "put", outcome: "too_large" }), 1);
  } finally {
    await h.close();
    await partition.close();
  }
});

inproc("no ring yet is 503 UNAVAILABLE with Retry-After; a partition led elsewhere without forwarding is 503 NOT_LEADER", async () => {
  const h = await harness(emptyTopology());
  try {
    const result = await put(h.server.port, { key: "k", value: "v" });
    assertError(result, 503, "UNAVAILABLE", /not ready/);
    assert.is(result.headers["retry-after"], "1");
    assertError(await call(h.server.port, "/get?key=k"), 503, "UNAVAILABLE");
  } finally {
    await h.close();
  }
  const ring = createRing(["p0"]);
  const elsewhere = await harness({
    ring: () => ring,
    local: () => undefined,
    locals: () => [],
    leaderOf: () => ({ id: "n9", address: "127.0.0.9:9009" }),
    members: () => ({ p0: ["n9"] }),
    info: () => ({}),
  });
  try {
    assertError(await call(elsewhere.server.port, "/get?key=k"), 503, "NOT_LEADER", /127\.0\.0\.9:9009/);
  } finally {
    await elsewhere.close();
  }
});

inproc("a forwarded request whose outcome is unknown is 504 TIMEOUT", async () => {
  const ring = createRing(["p0"]);
  const h = await harness({
    ring: () => ring,
    local: () => undefined,
    locals: () => [],
    // The leader elsewhere never answered in time: what the cluster's forwarder reports.
    forward: () => Promise.resolve({ type: "timeout", message: "the leader did not answer within 5000 ms" }),
    leaderOf: () => ({ id: "n2", address: "127.0.0.2:9002" }),
    members: () => ({ p0: ["n2"] }),
    info: () => ({}),
  });
  try {
    assertError(await put(h.server.port, { key: "k", value: "v" }), 504, "TIMEOUT", /did not answer/);
    assertError(await call(h.server.port, "/delete?key=k", { method: "DELETE" }), 504, "TIMEOUT");
    assert.is(h.metrics.value("ringkv_requests_total", { command: "put", outcome: "timeout" }), 1);
  } finally {
    await h.close();
  }
});

inproc("a handler that throws is 500 INTERNAL and the server keeps serving", async () => {
  const ring = createRing(["p0"]);
  let calls = 0;
  const h = await harness({
    ring: () => ring,
    local: () => {
      calls++;
      throw new Error("a bug");
    },
    locals: () => [],
    leaderOf: () => undefined,
    members: () => ({}),
    info: () => ({}),
  });
  try {
    assertError(await call(h.server.port, "/get?key=k"), 500, "INTERNAL");
    assertError(await put(h.server.port, { key: "k", value: "v" }), 500, "INTERNAL");
    assert.is(calls, 2);
    assert.is((await call(h.server.port, "/health")).status, 200);
  } finally {
    await h.close();
  }
});

inproc("/health is 503 with the reason when the node is not ready", async () => {
  let ready = false;
  const h = await harness(emptyTopology(), { health: () => (ready ? { ok: true } : { ok: false, reason: "waiting for 3 nodes" }) });
  try {
    assertError(await call(h.server.port, "/health"), 503, "UNAVAILABLE", /waiting for 3 nodes/);
    ready = true;
    assert.equal((await call(h.server.port, "/health")).json, { status: "ok" });
  } finally {
    await h.close();
  }
});

inproc("close() resolves promptly with idle keep-alive connections open", async () => {
  const partition = await openStandalonePartition(makeTempDir(), "p0", { fsync: "always", snapshotEvery: 1000, nodeId: "n1", logger });
  const h = await harness(standaloneTopology(partition));
  const agent = new http.Agent({ keepAlive: true });
  try {
    assert.is((await call(h.server.port, "/health", { agent })).status, 200);
    const started = Date.now();
    await h.close();
    assert.ok(Date.now() - started < 2_000, `close took ${Date.now() - started} ms`);
    await call(h.server.port, "/health").then(
      () => assert.unreachable("the port is closed"),
      (error: NodeJS.ErrnoException) => assert.is(error.code, "ECONNREFUSED"),
    );
  } finally {
    agent.destroy();
    await partition.close();
  }
});

node.run();
inproc.run();
