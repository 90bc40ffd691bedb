/**
 * PeerClient's connect backoff against a real TCP listener that speaks the
 * peer handshake with the real auth functions: a peer that was down is
 * backed off, and `retryNow` (the node learned the peer is back) ends the
 * backoff at once.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import net from "node:net";
import { newNonce, proof } from "../../src/net/auth.ts";
import { PeerClient, PeerError } from "../../src/net/peer_client.ts";
import { freePort } from "../../src/net/ports.ts";
import { createLogger } from "../../src/log/log.ts";

const SECRET = "test-secret";

/**
 * A peer that authenticates any client knowing SECRET, answers `ECHO <x>`
 * with `<x>` and every other line with `NOT_FOUND`.
 */
function listenAsPeer(port: number): Promise<net.Server> {
  const server = net.createServer((socket) => {
    let buffer = "";
    let hello: { peerId: string; clientNonce: string; serverNonce: string } | undefined;
    socket.on("error", () => {});
    socket.on("data", (chunk) => {
      buffer += chunk.toString("latin1");
      for (let at = buffer.indexOf("\n"); at !== -1; at = buffer.indexOf("\n")) {
        const words = buffer.slice(0, at).split(" ");
        buffer = buffer.slice(at + 1);
        if (words[0] === "AUTH" && words[1] === "HELLO") {
          hello = { peerId: words[2], clientNonce: words[3], serverNonce: newNonce() };
          socket.write(`AUTH CHALLENGE ${hello.serverNonce} ${proof(SECRET, { role: "server", ...hello })}\n`);
        } else if (words[0] === "AUTH" && words[1] === "PROOF") {
          socket.write(hello !== undefined && words[2] === proof(SECRET, { role: "client", ...hello }) ? "OK\n" : "ERR FORBIDDEN\n");
        } else if (words[0] === "ECHO") {
          socket.write(`${words.slice(1).join(" ")}\n`);
        } else {
          socket.write("NOT_FOUND\n");
        }
      }
    });
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

async function failure(request: Promise<string>): Promise<PeerError> {
  try {
    await request;
  } catch (error) {
    assert.instance(error, PeerError);
    return error as PeerError;
  }
  throw new Error("the request should have failed");
}

test("a peer that was down is backed off; retryNow connects at once", async () => {
  const port = await freePort();
  const client = new PeerClient(`127.0.0.1:${port}`, {
    nodeId: "n9",
    secret: SECRET,
    localAddress: "127.0.0.1",
    logger: createLogger("n9", { write: () => {} }),
  });
  const deadline = Date.now() + 10_000;
  // Nobody listens: connects fail, and the backoff grows to its cap (1 s).
  let refusedConnects = 0;
  while (refusedConnects < 5) {
    assert.ok(Date.now() < deadline, "five connect attempts within 10 s");
    const error = await failure(client.request("FWD GET a"));
    assert.is(error.sent, false, "never sent: safe to retry");
    if (error.message.includes("backing off")) await new Promise((resolve) => setTimeout(resolve, 20));
    else refusedConnects++;
  }
  const server = await listenAsPeer(port);
  try {
    // Back, but the client does not know: it still backs off...
    const backingOff = await failure(client.request("FWD GET a"));
    assert.match(backingOff.message, "backing off");
    // ...until it is told.
    client.retryNow();
    assert.is(await client.request("FWD GET a"), "NOT_FOUND");
  } finally {
    client.close();
    server.close();
  }
});

test("requests of one tick (written together) and fire-and-forget lines: replies match requests in order", async () => {
  const port = await freePort();
  const server = await listenAsPeer(port);
  const client = new PeerClient(`127.0.0.1:${port}`, {
    nodeId: "n9",
    secret: SECRET,
    localAddress: "127.0.0.1",
    logger: createLogger("n9", { write: () => {} }),
  });
  try {
    assert.is(await client.request("ECHO first"), "first");
    const replies = await Promise.all(Array.from({ length: 500 }, (_, i) => client.request(`ECHO ${i}`)));
    assert.equal(replies, Array.from({ length: 500 }, (_, i) => String(i)));
    client.send("ECHO fire-and-forget");
    assert.is(await client.request("ECHO after"), "after");
  } finally {
    client.close();
    server.close();
  }
});

test.run();
