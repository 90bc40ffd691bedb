/**
 * A standalone node's connection handling, seen from the outside: one-shot
 * netcat use, the idle timeout, and the connection cap.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { execa } from "execa";
import { type NodeHandle, startNode } from "../support/node_process.ts";
import { encodeResp, LineClient, oneShot } from "../support/tcp.ts";

/** Deadline of one real `nc` run. */
const NC_TIMEOUT_MS = 10_000;

let node: NodeHandle;
/** A node with `--idle-timeout 1`. */
let idle: NodeHandle;
/** A node with `--max-connections 5`. */
let capped: NodeHandle;

test.before(async () => {
  [node, idle, capped] = await Promise.all([
    startNode(),
    startNode({ args: ["--idle-timeout", "1"] }),
    startNode({ args: ["--max-connections", "5"] }),
  ]);
});

test.after(async () => {
  const codes = await Promise.all([node?.stop(), idle?.stop(), capped?.stop()]);
  assert.equal(codes, [0, 0, 0], "SIGTERM ends every node with exit code 0");
});

/** Runs the real OpenBSD netcat with `input` on its stdin. */
async function nc(port: number, input: string, flags: string[]): Promise<string> {
  const result = await execa("nc", [...flags, "127.0.0.1", String(port)], {
    input,
    timeout: NC_TIMEOUT_MS,
    reject: false,
    stripFinalNewline: false,
  });
  assert.is(result.exitCode, 0, `nc ${flags.join(" ")}: exit ${result.exitCode} ${result.stderr}`);
  return String(result.stdout);
}

test('echo "PUT a b" | nc: one-shot requests get their replies', async () => {
  assert.is(await oneShot(node.port, "PUT oneshot-a b\n"), "OK\n");
  assert.is(await oneShot(node.port, "GET oneshot-a\n"), "VALUE b\n");
  assert.is(await oneShot(node.port, "PUT oneshot-b 1\nPUT oneshot-c 2\nPING\n"), "OK\nOK\nPONG\n");
  assert.is(
    await oneShot(node.port, "GET oneshot-b\nDELETE oneshot-c\nGET oneshot-missing\n"),
    "VALUE 1\nDELETED\nNOT_FOUND\n",
  );
  assert.is(await oneShot(node.port, "PING\r\nQUIT\r\n"), "PONG\nBYE\n");
});

test("a client that half-closes right after its requests (nc -N) still gets every reply", async () => {
  assert.is(
    await oneShot(node.port, "PUT halfclose-a 1\nPUT halfclose-b 2\nPING\n", { halfClose: true }),
    "OK\nOK\nPONG\n",
  );
  // Many writes still waiting for their fsync when the FIN arrives.
  const many = Array.from({ length: 2000 }, (_, i) => `PUT halfclose-many-${i} ${i}\n`).join("");
  const replies = await oneShot(node.port, many, { halfClose: true, timeoutMs: 15_000 });
  assert.is(replies, "OK\n".repeat(2000));
  const c = await LineClient.connect(node.port);
  assert.is(await c.request("GET halfclose-b"), "VALUE 2");
  c.destroy();
});

test("the real nc: echo | nc -q 1 and printf | nc -N", async () => {
  assert.is(await nc(node.port, "PUT nc-key from nc\n", ["-q", "1"]), "OK\n");
  assert.is(await nc(node.port, "GET nc-key\n", ["-q", "1"]), "VALUE from nc\n");
  assert.is(await nc(node.port, "PUT nc-n 1\nPUT nc-n2 2\nQUIT\n", ["-N"]), "OK\nOK\nBYE\n");
  assert.is(await nc(node.port, "GET nc-n\nGET nc-n2\n", ["-N"]), "VALUE 1\nVALUE 2\n");
});

test("an idle connection gets BYE idle and is closed (--idle-timeout 1)", async () => {
  const c = await LineClient.connect(idle.port);
  assert.is(await c.request("PING"), "PONG");
  const started = Date.now();
  assert.is(await c.readLine(5_000), "BYE idle");
  await c.closed(2_000);
  const waited = Date.now() - started;
  assert.ok(waited >= 800, `closed after ${waited} ms, not before the timeout`);
});

test("an idle RESP client gets its goodbye in RESP", async () => {
  const c = await LineClient.connect(idle.port);
  c.write(encodeResp(["PING"]));
  assert.equal(await c.readResp(), { type: "simple", value: "PONG" });
  const bye = await c.readResp(5_000);
  assert.ok(bye.type === "simple" || bye.type === "error", `a RESP value: ${JSON.stringify(bye)}`);
  await c.closed(2_000);
});

test("a connection in use is not closed as idle", async () => {
  const c = await LineClient.connect(idle.port);
  for (let i = 0; i < 8; i++) {
    assert.is(await c.request(`PUT busy-${i} ${i}`), "OK");
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  assert.is(c.isClosed, false, "2.4 s of activity, never 1 s idle");
  assert.is(await c.request("GET busy-7"), "VALUE 7");
  c.destroy();
});

test("an idle connection that never sent anything is closed too", async () => {
  const c = await LineClient.connect(idle.port);
  assert.is(await c.readLine(5_000), "BYE idle");
  await c.closed(2_000);
});

/** Connections the node reports, not counting the one INFO came on. */
async function openConnections(port: number): Promise<number> {
  const c = await LineClient.connect(port);
  const info = JSON.parse(await c.request("INFO")) as { connections: number };
  c.destroy();
  return info.connections - 1;
}

/** Waits (bounded) until the node reports at most `max` other connections; returns the last count. */
async function settleConnections(port: number, max: number, timeoutMs = 5_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let open = await openConnections(port);
  while (open > max && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    open = await openConnections(port);
  }
  return open;
}

test("a closed connection is forgotten by the server, also after QUIT behind a burst with more bytes after it", async () => {
  const before = await settleConnections(node.port, 0);
  // 5,000 pipelined requests pass the in-flight limit (the server stops reading),
  // then QUIT, then bytes the server will never read.
  const c = await LineClient.connect(node.port);
  c.write("PING\n".repeat(5000) + "QUIT\n" + "x".repeat(200_000));
  const replies = await c.readLines(5001, 10_000);
  assert.is(replies.at(-1), "BYE");
  await c.closed();
  c.destroy();
  assert.is(await settleConnections(node.port, before), before, "the server closed its side too (no leaked connection)");
});

/** Connects until one answers PING (connections closing just before may still count). */
async function connectServed(port: number): Promise<LineClient> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const c = await LineClient.connect(port);
    try {
      if ((await c.request("PING", 2_000)) === "PONG") return c;
    } catch {
      // Refused (over the cap while earlier sockets close): retry.
    }
    c.destroy();
    if (Date.now() > deadline) throw new Error("no served connection within 5 s");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test("the connection cap: the 6th connection gets ERR UNAVAILABLE (--max-connections 5)", async () => {
  const open: LineClient[] = [];
  for (let i = 0; i < 5; i++) open.push(await connectServed(capped.port));
  const sixth = await LineClient.connect(capped.port);
  const refusal = await sixth.readLine();
  assert.match(refusal, /^ERR UNAVAILABLE /);
  await sixth.closed();
  for (const c of open) assert.is(await c.request("PING"), "PONG", "the five keep being served");
  open.pop()!.destroy();
  const again = await connectServed(capped.port);
  assert.is(await again.request("PUT after-cap ok"), "OK", "a freed slot is usable again");
  again.destroy();
  for (const c of open) c.destroy();
});

test.run();
