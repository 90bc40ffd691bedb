/**
 * A standalone node, spoken to in the plain text line protocol as netcat
 * would: every command, every error, pipelining, byte-exact values, limits,
 * and the peer-only commands a client may not use (PROTOCOL.md).
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { type NodeHandle, startNode } from "../support/node_process.ts";
import { LineClient } from "../support/tcp.ts";

let node: NodeHandle;
let client: LineClient;

test.before(async () => {
  node = await startNode();
});

test.after(async () => {
  if (node !== undefined) assert.is(await node.stop(), 0, "SIGTERM ends the node with exit code 0");
});

// A fresh connection per test: a failure cannot leave the next test out of sync.
test.before.each(async () => {
  client = await LineClient.connect(node.port);
});

test.after.each(() => {
  client?.destroy();
});

/** INFO, parsed. */
async function info(c: LineClient = client): Promise<Record<string, unknown>> {
  return JSON.parse(await c.request("INFO")) as Record<string, unknown>;
}

test("PUT stores a value, GET returns it as VALUE, DELETE removes it", async () => {
  assert.is(await client.request("PUT color blue"), "OK");
  assert.is(await client.request("GET color"), "VALUE blue");
  assert.is(await client.request("PUT color green"), "OK", "PUT overwrites");
  assert.is(await client.request("GET color"), "VALUE green");
  assert.is(await client.request("DELETE color"), "DELETED");
  assert.is(await client.request("GET color"), "NOT_FOUND");
  assert.is(await client.request("DELETE color"), "NOT_FOUND", "deleting a missing key");
  assert.is(await client.request("GET never-written"), "NOT_FOUND");
});

test("SET is an alias of PUT and DEL of DELETE", async () => {
  assert.is(await client.request("SET alias-key v1"), "OK");
  assert.is(await client.request("GET alias-key"), "VALUE v1");
  assert.is(await client.request("DEL alias-key"), "DELETED");
  assert.is(await client.request("GET alias-key"), "NOT_FOUND");
  assert.is(await client.request("DEL alias-key"), "NOT_FOUND");
});

test("command words are case-insensitive; keys are not", async () => {
  assert.is(await client.request("put Case-Key lower"), "OK");
  assert.is(await client.request("gEt Case-Key"), "VALUE lower");
  assert.is(await client.request("get case-key"), "NOT_FOUND", "keys are case-sensitive");
  assert.is(await client.request("Set Case-Key mixed"), "OK");
  assert.is(await client.request("GET Case-Key"), "VALUE mixed");
  assert.is(await client.request("exists Case-Key"), "1");
  assert.is(await client.request("ping"), "PONG");
  assert.match(await client.request("help"), /GET/);
  assert.is(JSON.parse(await client.request("info")).id, "n1");
  assert.ok(JSON.parse(await client.request("Ring")).partitions);
  assert.is(await client.request("readonly"), "OK");
  assert.is(await client.request("ReadWrite"), "OK");
  assert.is(await client.request("dElEtE Case-Key"), "DELETED");
  assert.is(await client.request("del Case-Key"), "NOT_FOUND");
});

test("EXISTS counts how many of the named keys exist", async () => {
  assert.equal(await client.requestMany(["PUT ex-a 1", "PUT ex-b 2"]), ["OK", "OK"]);
  assert.is(await client.request("EXISTS ex-a"), "1");
  assert.is(await client.request("EXISTS ex-a ex-b ex-missing"), "2");
  assert.is(await client.request("EXISTS ex-missing"), "0");
  assert.match(await client.request("EXISTS"), /^ERR BAD_REQUEST /, "EXISTS needs a key");
});

test("PING answers PONG, with or without a message", async () => {
  assert.is(await client.request("PING"), "PONG");
  assert.is(await client.request("PING are you there"), "PONG");
});

test("HELP is one line listing the commands", async () => {
  const help = await client.request("HELP");
  for (const word of ["PUT", "GET", "DELETE", "PING", "INFO", "RING", "QUIT"]) {
    assert.ok(help.includes(word), `HELP names ${word}: ${help}`);
  }
  assert.is(await client.request("PING"), "PONG", "HELP was exactly one line");
});

test("INFO is one line of JSON: node id, version, role, partitions, epoch, commit index, key count", async () => {
  const before = await info();
  assert.is(before.id, "n1");
  assert.type(before.version, "string");
  assert.is(before.role, "standalone");
  assert.type(before.epoch, "number");
  assert.ok(JSON.stringify(before.partitions).includes("p0"), "the default standalone partition is p0");
  assert.equal(before.leads, ["p0"], "a standalone node leads its partition");
  const commit = (before.commitIndex as Record<string, number>).p0;
  assert.type(commit, "number");
  assert.type(before.keys, "number");

  assert.is(await client.request("PUT info-new-key v"), "OK");
  const after = await info();
  assert.is((after.commitIndex as Record<string, number>).p0, commit + 1, "one write, one log entry committed");
  assert.is(after.keys, (before.keys as number) + 1, "one more key");
  assert.is(await client.request("DELETE info-new-key"), "DELETED");
  assert.is((await info()).keys, before.keys);
});

test("INFO names each partition's leader (a standalone node leads its own)", async () => {
  const partitions = (await info()).partitions as Record<string, unknown>[];
  assert.is(partitions.length, 1);
  assert.is(partitions[0].partition, "p0");
  assert.is(partitions[0].role, "standalone");
  assert.is(partitions[0].leader, "n1", `INFO partitions[0]: ${JSON.stringify(partitions[0])}`);
});

test("RING is one line of JSON: partition p0 with 10 vnodes, its members and its leader", async () => {
  const ring = JSON.parse(await client.request("RING")) as Record<string, Record<string, unknown>>;
  assert.equal(ring.partitions, ["p0"]);
  const vnodes = ring.vnodes.p0 as number[];
  assert.is(vnodes.length, 10, "10 virtual nodes per partition");
  assert.equal(ring.members, { p0: ["n1"] });
  assert.equal(ring.leaders, { p0: "n1" });
});

test("QUIT answers BYE and the server closes; earlier pipelined requests are answered first", async () => {
  const c = await LineClient.connect(node.port);
  c.write("PUT quit-key before\nPING\nQUIT\nPUT quit-key after\n");
  assert.is(await c.readLine(), "OK");
  assert.is(await c.readLine(), "PONG");
  assert.is(await c.readLine(), "BYE");
  const rest = await c.readUntilClosed();
  assert.is(rest.length, 0, "nothing after BYE");
  assert.is(await client.request("GET quit-key"), "VALUE before", "the request after QUIT was not executed");
});

test("requests on one connection take effect in order: a GET pipelined after a PUT sees it", async () => {
  client.write("PUT order-key 1\nGET order-key\nPUT order-key 2\nGET order-key\nDELETE order-key\nGET order-key\n");
  const replies = await client.readLines(6);
  assert.equal(replies, ["OK", "VALUE 1", "OK", "VALUE 2", "DELETED", "NOT_FOUND"]);
});

test("READONLY and READWRITE answer OK and GET keeps working in both modes", async () => {
  const c = await LineClient.connect(node.port);
  assert.is(await c.request("PUT ro-key v"), "OK");
  assert.is(await c.request("READONLY"), "OK");
  assert.is(await c.request("GET ro-key"), "VALUE v");
  assert.is(await c.request("READWRITE"), "OK");
  assert.is(await c.request("GET ro-key"), "VALUE v");
  assert.match(await c.request("READONLY now"), /^ERR BAD_REQUEST /, "READONLY takes no arguments");
  c.destroy();
});

test("empty lines get no reply and a \\r before \\n is dropped", async () => {
  client.write("\n\n\r\nPUT crlf-key value\r\n\n\n");
  assert.is(await client.readLine(), "OK");
  client.write("\r\n\nGET crlf-key\r\n\nPING\n");
  const value = await client.readLineBytes();
  assert.is(value.toString("latin1"), "VALUE value", "the \\r is not part of the value");
  assert.is(await client.readLine(), "PONG");
  assert.is(await client.request("PING"), "PONG", "no extra replies were queued");
});

test("10,000 requests pipelined in one write get 10,000 replies, in order", async () => {
  const puts = Array.from({ length: 5000 }, (_, i) => `PUT pipe-${i} value-${i}`);
  const acks = await client.requestMany(puts, 30_000);
  assert.ok(acks.every((r) => r === "OK"), "5,000 pipelined PUTs acknowledged");
  // Slow writes (fsync) interleaved with instant reads: the server must still answer in order.
  const lines: string[] = [];
  for (let i = 0; i < 5000; i++) {
    lines.push(`PUT pipe-new-${i} x`);
    lines.push(i % 2 === 0 ? `GET pipe-${i}` : `GET pipe-missing-${i}`);
  }
  const replies = await client.requestMany(lines, 30_000);
  assert.is(replies.length, 10_000);
  for (let i = 0; i < 5000; i++) {
    const expected = ["OK", i % 2 === 0 ? `VALUE value-${i}` : "NOT_FOUND"];
    const got = replies.slice(2 * i, 2 * i + 2);
    if (got[0] !== expected[0] || got[1] !== expected[1]) {
      assert.unreachable(`replies ${2 * i}, ${2 * i + 1} to ${lines.slice(2 * i, 2 * i + 2)} are ${got}`);
    }
  }
  assert.is(await client.request("PING"), "PONG", "exactly one reply per request");
  assert.is(client.buffered, 0);
});

test("a value keeps inner, leading and trailing spaces and unicode, byte for byte", async () => {
  const values = [
    "two  inner  spaces",
    "  leading spaces",
    "trailing spaces   ",
    "   both   ",
    "tab\there",
    "ünïcödé ключ 値 🙂 e\u0301",
    "a\u00a0no-break space and \u2028 line separator",
  ];
  for (const [i, value] of values.entries()) {
    const key = `spaces-${i}`;
    assert.is(await client.request(`PUT ${key} ${value}`), "OK");
    const reply = await client.request(Buffer.from(`GET ${key}`));
    assert.is(reply, `VALUE ${value}`, `value ${JSON.stringify(value)}`);
  }
  // Raw bytes on the wire, not just the decoded text.
  const raw = Buffer.from("  x  ü  ", "utf8");
  client.send(Buffer.concat([Buffer.from("PUT raw-key "), raw]));
  assert.is(await client.readLine(), "OK");
  client.send("GET raw-key");
  assert.equal(await client.readLineBytes(), Buffer.concat([Buffer.from("VALUE "), raw]));
});

test("PUT with a space and nothing after it stores the empty value; without the space it is an error", async () => {
  assert.is(await client.request("PUT empty-value "), "OK");
  assert.is(await client.request("GET empty-value"), "VALUE ");
  assert.is(await client.request("EXISTS empty-value"), "1");
  assert.match(await client.request("PUT empty-value"), /^ERR BAD_REQUEST /);
  assert.is(await client.request("GET empty-value"), "VALUE ", "unchanged by the refused PUT");
});

test("a unicode key works and the spaces between command word and key are not part of the value", async () => {
  assert.is(await client.request("PUT   ключ-🙂   value after three spaces"), "OK");
  assert.is(await client.request("GET ключ-🙂"), "VALUE   value after three spaces");
});

test("a line over the 1 MiB limit gets ERR TOO_LARGE, writes nothing, and the connection stays usable", async () => {
  const before = await info();
  const big = "x".repeat(1_048_576 + 10);
  client.write(`PUT too-large-key ${big}\nPING\n`);
  assert.match(await client.readLine(10_000), /^ERR TOO_LARGE /);
  assert.is(await client.readLine(10_000), "PONG", "the rest of the big line was discarded, the next line served");
  assert.is(await client.request("GET too-large-key"), "NOT_FOUND");
  const after = await info();
  assert.is(after.keys, before.keys);
  assert.equal(after.commitIndex, before.commitIndex, "nothing was written");
});

test("a line just under the 1 MiB limit is accepted whole", async () => {
  const value = "y".repeat(1_048_576 - "PUT near-limit ".length);
  assert.is(await client.request(`PUT near-limit ${value}`, 10_000), "OK");
  const reply = await client.request("GET near-limit", 10_000);
  assert.is(reply.length, "VALUE ".length + value.length);
  assert.ok(reply === `VALUE ${value}`);
  assert.is(await client.request("DELETE near-limit"), "DELETED");
});

/** Requests that must be refused with `code` and change nothing. */
const BAD_REQUESTS: { name: string; line: Buffer; code: string }[] = [
  { name: "a key with a control character", line: Buffer.from("PUT bad\x01key v"), code: "BAD_REQUEST" },
  { name: "a key with a tab", line: Buffer.from("PUT bad\tkey v"), code: "BAD_REQUEST" },
  { name: "an empty key (PUT with nothing after it)", line: Buffer.from("PUT"), code: "BAD_REQUEST" },
  { name: "an empty key (GET with only spaces)", line: Buffer.from("GET   "), code: "BAD_REQUEST" },
  { name: "PUT without a value", line: Buffer.from("PUT lonely-key"), code: "BAD_REQUEST" },
  { name: "a 1025-byte key", line: Buffer.from(`PUT ${"k".repeat(1025)} v`), code: "BAD_REQUEST" },
  { name: "a 1025-byte key of multi-byte characters", line: Buffer.from(`PUT ${"k".repeat(1023)}é v`), code: "BAD_REQUEST" },
  { name: "an invalid UTF-8 key", line: Buffer.from([...Buffer.from("PUT "), 0xff, 0xfe, 0x41, ...Buffer.from(" v")]), code: "BAD_REQUEST" },
  { name: "an overlong UTF-8 encoding in the key", line: Buffer.from([...Buffer.from("PUT "), 0xc0, 0xaf, ...Buffer.from(" v")]), code: "BAD_REQUEST" },
  { name: "a lone surrogate (CESU) in the key", line: Buffer.from([...Buffer.from("PUT "), 0xed, 0xa0, 0x80, ...Buffer.from(" v")]), code: "BAD_REQUEST" },
  { name: "GET with two keys", line: Buffer.from("GET k1 k2"), code: "BAD_REQUEST" },
  { name: "DELETE with two keys", line: Buffer.from("DELETE k1 k2"), code: "BAD_REQUEST" },
  { name: "an unknown command", line: Buffer.from("FROBNICATE k v"), code: "UNKNOWN_COMMAND" },
  { name: "a command word with a typo", line: Buffer.from("PUTT k v"), code: "UNKNOWN_COMMAND" },
  { name: "a line starting with a space", line: Buffer.from(" PUT k v"), code: "BAD_REQUEST" },
  { name: "INFO with an argument", line: Buffer.from("INFO k"), code: "BAD_REQUEST" },
];

test("bad requests get the right ERR code on one line and change nothing", async () => {
  const before = await info();
  for (const { name, line, code } of BAD_REQUESTS) {
    client.send(line);
    const reply = await client.readLine();
    assert.ok(reply.startsWith(`ERR ${code} `), `${name}: expected ERR ${code}, got ${JSON.stringify(reply)}`);
    assert.ok(reply.length > `ERR ${code} `.length, `${name}: the error has a message`);
  }
  for (const key of ["lonely-key", "k1", "k2", "k", "PUT"]) {
    assert.is(await client.request(`GET ${key}`), "NOT_FOUND", `${key} was not written`);
  }
  const after = await info();
  assert.is(after.keys, before.keys);
  assert.equal(after.commitIndex, before.commitIndex, "no log entry was written");
  assert.is(await client.request("PING"), "PONG", "the connection stays usable");
});

test("a 1024-byte key, the limit, is accepted", async () => {
  const key = "k".repeat(1024);
  assert.is(await client.request(`PUT ${key} at-limit`), "OK");
  assert.is(await client.request(`GET ${key}`), "VALUE at-limit");
  const multi = "é".repeat(512); // 1024 bytes of UTF-8
  assert.is(await client.request(`PUT ${multi} at-limit-2`), "OK");
  assert.is(await client.request(`GET ${multi}`), "VALUE at-limit-2");
});

test("peer-only commands from a client (REPLICATE, FWD, SNAPSHOT) get ERR FORBIDDEN and change nothing", async () => {
  const before = await info();
  const attempts = [
    "REPLICATE p0 1 99 0 0 put forbidden-key v",
    "replicate p0 1 99 0 0 put forbidden-key v",
    "REPLICATE",
    "FWD PUT forbidden-key v",
    "FWD {\"op\":\"put\",\"key\":\"forbidden-key\",\"value\":\"v\"}",
    "SNAPSHOT p0 1 1",
    "SNAPSHOT",
  ];
  for (const line of attempts) {
    const reply = await client.request(line);
    assert.ok(reply.startsWith("ERR FORBIDDEN "), `${line}: got ${reply}`);
  }
  assert.is(await client.request("GET forbidden-key"), "NOT_FOUND");
  const after = await info();
  assert.is(after.keys, before.keys);
  assert.equal(after.commitIndex, before.commitIndex);
  assert.is(await client.request("PING"), "PONG");
});

test("AUTH with a wrong proof gets ERR FORBIDDEN and grants nothing", async () => {
  const c = await LineClient.connect(node.port);
  const challenge = await c.request(`AUTH HELLO n2 ${"ab".repeat(16)}`);
  assert.match(challenge, /^AUTH CHALLENGE [0-9a-f]{32} [0-9a-f]{64}$/, "the server answers HELLO with its challenge");
  assert.match(await c.request(`AUTH PROOF ${"0".repeat(64)}`), /^ERR FORBIDDEN /);
  assert.match(await c.request("REPLICATE p0 1 1 0 0 put auth-key v"), /^ERR FORBIDDEN /, "still not a peer");
  assert.match(await c.request(`AUTH PROOF ${"1".repeat(64)}`), /^ERR FORBIDDEN /, "PROOF without HELLO");
  assert.match(await c.request("AUTH HELLO"), /^ERR FORBIDDEN /, "malformed HELLO");
  assert.match(await c.request("AUTH"), /^ERR FORBIDDEN /);
  assert.is(await c.request("GET auth-key"), "NOT_FOUND");
  assert.is(await c.request("PING"), "PONG");
  c.destroy();
});

test.run();
