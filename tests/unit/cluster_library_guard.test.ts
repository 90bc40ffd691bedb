/**
 * node-zookeeper-client throws from inside its socket handler when a reply
 * carries an error code it does not know (-118 SESSION_MOVED, which a real
 * ensemble sends when a session moves between servers; a standalone server
 * never does). Here a scripted server on real TCP speaks just enough of
 * ZooKeeper's wire protocol to send one, and the connection must survive it.
 */

import { createServer, type Server, type Socket } from "node:net";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { isZkError, ZkConnection } from "../../src/cluster/zk_client.ts";

const OP_EXISTS = 3;
const OP_GET_DATA = 4;
const SESSION_MOVED = -118;
const NO_NODE = -101;

interface Scripted {
  server: Server;
  port: number;
  connections: number;
  getDataReplies: number[];
}

function frame(body: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeInt32BE(body.length);
  return Buffer.concat([length, body]);
}

function connectResponse(): Buffer {
  const body = Buffer.alloc(4 + 4 + 8 + 4 + 16);
  body.writeInt32BE(0, 0); // protocol version
  body.writeInt32BE(2000, 4); // session timeout
  body.writeBigInt64BE(0x1234n, 8); // session id
  body.writeInt32BE(16, 16); // password length, then 16 zero bytes
  return frame(body);
}

function replyHeader(xid: number, err: number): Buffer {
  const body = Buffer.alloc(4 + 8 + 4);
  body.writeInt32BE(xid, 0);
  body.writeBigInt64BE(1n, 4);
  body.writeInt32BE(err, 12);
  return frame(body);
}

/** Answers the handshake, then every request by its type: the first getData gets -118. */
async function startScripted(): Promise<Scripted> {
  const scripted: Scripted = { server: createServer(), port: 0, connections: 0, getDataReplies: [] };
  scripted.server.on("connection", (socket: Socket) => {
    scripted.connections += 1;
    let buffered = Buffer.alloc(0);
    let handshaken = false;
    socket.on("error", () => {});
    socket.on("data", (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 4 && buffered.length >= 4 + buffered.readInt32BE(0)) {
        const body = buffered.subarray(4, 4 + buffered.readInt32BE(0));
        buffered = buffered.subarray(4 + body.length);
        if (!handshaken) {
          handshaken = true;
          socket.write(connectResponse());
          continue;
        }
        const xid = body.readInt32BE(0);
        const type = body.readInt32BE(4);
        if (type === OP_GET_DATA) {
          const err = scripted.getDataReplies.length === 0 ? SESSION_MOVED : NO_NODE;
          scripted.getDataReplies.push(err);
          socket.write(replyHeader(xid, err));
        } else if (type === OP_EXISTS) {
          socket.write(replyHeader(xid, NO_NODE));
        } else {
          socket.write(replyHeader(xid, 0)); // pings, set-watches, close
        }
      }
    });
  });
  await new Promise<void>((resolve) => scripted.server.listen(0, "127.0.0.1", resolve));
  const address = scripted.server.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  scripted.port = address.port;
  return scripted;
}

async function until(what: string, condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const start = performance.now();
  while (!condition()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test("an unknown error code from the server does not crash the process; the client reconnects and goes on", async () => {
  const scripted = await startScripted();
  const faults: string[] = [];
  const states: string[] = [];
  const contacts: number[] = [];
  const conn = new ZkConnection(`127.0.0.1:${scripted.port}`, {
    onState: (state) => states.push(state),
    onContact: (sentAt) => contacts.push(sentAt),
    onFault: (event) => faults.push(event),
  }, { sessionTimeoutMs: 2000, requestTimeoutMs: 500 });
  try {
    conn.start();
    await until("connected", () => states.includes("connected"));
    assert.is(conn.sessionId(), "0000000000001234");

    // The reply to this request makes the library throw; its callback is lost, so we time out.
    try {
      await conn.getData("/x");
      assert.unreachable("getData should not succeed");
    } catch (error) {
      assert.ok(isZkError(error, "TIMEOUT"), String(error));
    }
    assert.ok(faults.includes("library_threw"), `faults: ${faults.join(",")}`);
    await until("reconnected on a fresh socket", () => scripted.connections >= 2 && states.at(-1) === "connected");

    // The same connection object keeps working.
    const contactsBefore = contacts.length;
    assert.is(await conn.getData("/x"), undefined, "NO_NODE reads as absent");
    assert.equal(scripted.getDataReplies, [SESSION_MOVED, NO_NODE]);
    assert.ok(contacts.length > contactsBefore, "an answered request counts as contact");
  } finally {
    await conn.close();
    scripted.server.close();
  }
});

test("a server that accepts the connection but never answers the handshake is left for a retry", async () => {
  let connections = 0;
  const silent = createServer((socket) => {
    connections += 1;
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
  const address = silent.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  const faults: string[] = [];
  const conn = new ZkConnection(`127.0.0.1:${address.port}`, {
    onState: () => {},
    onContact: () => {},
    onFault: (event) => faults.push(event),
  }, { sessionTimeoutMs: 1200, requestTimeoutMs: 500 });
  try {
    conn.start();
    await until("a second connection attempt", () => connections >= 2, 3000);
    assert.ok(faults.includes("handshake_timeout"), `faults: ${faults.join(",")}`);
  } finally {
    await conn.close();
    silent.close();
  }
});

test.run();
