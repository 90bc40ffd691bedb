/**
 * Reply → bytes, in the dialect (and for the command) of the request.
 */

import { test } from "uvu";
import * as assert from "uvu/assert";
import { encodeReplies, encodeReply, HELP_TEXT, type ReplyItem } from "../../src/protocol/encode.ts";
import type { Dialect, Reply, Request } from "../../src/protocol/types.ts";

function get(dialect: Dialect): Request {
  return { dialect, command: "GET", key: "k" };
}

function del(dialect: Dialect): Request {
  return { dialect, command: "DELETE", key: "k" };
}

/** The reply's bytes as a latin1 string (every byte visible). */
function encode(reply: Reply, request: Request): string {
  return encodeReply(reply, request).toString("latin1");
}

// ------------------------------------------------------------------ line

test("line: every reply type", () => {
  const r = get("line");
  assert.is(encode({ type: "ok" }, r), "OK\n");
  assert.is(encode({ type: "value", value: Buffer.from("v") }, r), "VALUE v\n");
  assert.is(encode({ type: "not_found" }, r), "NOT_FOUND\n");
  assert.is(encode({ type: "deleted" }, del("line")), "DELETED\n");
  assert.is(encode({ type: "not_found" }, del("line")), "NOT_FOUND\n");
  assert.is(encode({ type: "pong" }, r), "PONG\n");
  assert.is(encode({ type: "bye" }, r), "BYE\n");
  assert.is(encode({ type: "bye", reason: "idle" }, r), "BYE idle\n");
  assert.is(encode({ type: "integer", value: 3 }, r), "3\n");
  assert.is(encode({ type: "text", text: "hello there" }, r), "hello there\n");
  assert.is(encode({ type: "json", value: { id: "n1", partitions: ["p1"] } }, r), '{"id":"n1","partitions":["p1"]}\n');
  assert.is(encode({ type: "raw", line: "ACK p1 7 42" }, r), "ACK p1 7 42\n");
  assert.is(encode({ type: "error", code: "UNAVAILABLE", message: "no leader for p1" }, r), "ERR UNAVAILABLE no leader for p1\n");
});

test("line: values are written byte for byte (inner spaces, unicode, an empty value)", () => {
  const r = get("line");
  const value = Buffer.from("  a  b ✓ 日本 ");
  const out = encodeReply({ type: "value", value }, r);
  assert.ok(out.equals(Buffer.concat([Buffer.from("VALUE "), value, Buffer.from("\n")])));
  assert.is(encode({ type: "value", value: Buffer.alloc(0) }, r), "VALUE \n");
  const binary = Buffer.from([0x00, 0xff, 0x80]);
  assert.ok(encodeReply({ type: "value", value: binary }, r).equals(Buffer.from([...Buffer.from("VALUE "), 0, 0xff, 0x80, 0x0a])));
});

test("line: a value with \\n or \\r cannot travel in the line dialect", () => {
  const expected = "ERR BAD_REQUEST value contains a line break; read it with the JSON or RESP dialect\n";
  assert.is(encode({ type: "value", value: Buffer.from("a\nb") }, get("line")), expected);
  assert.is(encode({ type: "value", value: Buffer.from("a\rb") }, get("line")), expected);
});

test("line: errors, texts and raw lines are forced onto one line", () => {
  assert.is(encode({ type: "error", code: "INTERNAL", message: "boom\r\nat x\ny" }, get("line")), "ERR INTERNAL boom  at x y\n");
  assert.is(encode({ type: "text", text: "a\nb" }, get("line")), "a b\n");
  assert.is(encode({ type: "raw", line: "a\nb" }, get("line")), "a b\n");
  assert.is(encode({ type: "bye", reason: "a\nb" }, get("line")), "BYE a b\n");
});

// ------------------------------------------------------------------ JSON

test("json: every reply type", () => {
  const r = get("json");
  const json = (reply: Reply, request: Request = r): unknown => {
    const text = encode(reply, request);
    assert.ok(text.endsWith("\n") && text.indexOf("\n") === text.length - 1, JSON.stringify(text));
    return JSON.parse(text);
  };
  assert.equal(json({ type: "ok" }), { status: "ok" });
  assert.equal(json({ type: "deleted" }, del("json")), { status: "ok" });
  assert.equal(json({ type: "bye" }), { status: "ok" });
  assert.equal(json({ type: "value", value: Buffer.from("v") }), { status: "ok", value: "v" });
  assert.equal(json({ type: "not_found" }), { status: "not_found" });
  assert.equal(json({ type: "pong" }), { status: "ok", value: "PONG" });
  assert.equal(json({ type: "integer", value: 2 }), { status: "ok", value: 2 });
  assert.equal(json({ type: "text", text: HELP_TEXT }), { status: "ok", value: HELP_TEXT });
  assert.equal(json({ type: "json", value: { role: "leader" } }), { status: "ok", value: { role: "leader" } });
  assert.equal(json({ type: "raw", line: "ACK 1" }), { status: "ok", value: "ACK 1" });
  assert.equal(json({ type: "error", code: "TIMEOUT", message: "outcome unknown" }), {
    status: "error",
    code: "TIMEOUT",
    message: "outcome unknown",
  });
});

test("json: exact bytes of the contract's replies", () => {
  assert.is(encode({ type: "ok" }, get("json")), '{"status":"ok"}\n');
  assert.is(encode({ type: "value", value: Buffer.from("v") }, get("json")), '{"status":"ok","value":"v"}\n');
  assert.is(encode({ type: "not_found" }, get("json")), '{"status":"not_found"}\n');
  assert.is(
    encode({ type: "error", code: "UNAVAILABLE", message: "m" }, get("json")),
    '{"status":"error","code":"UNAVAILABLE","message":"m"}\n',
  );
});

test("json: values with newlines and unicode stay one line and round-trip", () => {
  const value = "two\nlines\r\n é ✓ 😀";
  const text = encodeReply({ type: "value", value: Buffer.from(value) }, get("json")).toString("utf8");
  assert.is(text.indexOf("\n"), text.length - 1);
  assert.equal(JSON.parse(text), { status: "ok", value });
});

// ------------------------------------------------------------------ RESP

test("resp: every reply type", () => {
  const r = get("resp");
  assert.is(encode({ type: "ok" }, r), "+OK\r\n");
  assert.is(encode({ type: "value", value: Buffer.from("hello") }, r), "$5\r\nhello\r\n");
  assert.is(encode({ type: "value", value: Buffer.alloc(0) }, r), "$0\r\n\r\n");
  assert.is(encode({ type: "not_found" }, r), "$-1\r\n");
  assert.is(encode({ type: "pong" }, r), "+PONG\r\n");
  assert.is(encode({ type: "bye" }, r), "+OK\r\n");
  assert.is(encode({ type: "integer", value: 2 }, r), ":2\r\n");
  assert.is(encode({ type: "text", text: "héllo" }, r), "$6\r\nh\xc3\xa9llo\r\n");
  assert.is(encode({ type: "json", value: { a: 1 } }, r), '$7\r\n{"a":1}\r\n');
  assert.is(encode({ type: "raw", line: "ACK" }, r), "$3\r\nACK\r\n");
  assert.is(encode({ type: "error", code: "NOT_LEADER", message: "leader is 127.0.0.1:9002" }, r), "-ERR NOT_LEADER leader is 127.0.0.1:9002\r\n");
  assert.is(encode({ type: "error", code: "INTERNAL", message: "a\r\nb" }, r), "-ERR INTERNAL a  b\r\n");
});

test("resp: DELETE answers :1 when deleted and :0 when not found", () => {
  assert.is(encode({ type: "deleted" }, del("resp")), ":1\r\n");
  assert.is(encode({ type: "not_found" }, del("resp")), ":0\r\n");
});

test("resp: bulk values are binary, with \\r\\n and \\0 inside", () => {
  const value = Buffer.from([0x0d, 0x0a, 0x00, 0xff]);
  const out = encodeReply({ type: "value", value }, get("resp"));
  assert.ok(out.equals(Buffer.concat([Buffer.from("$4\r\n"), value, Buffer.from("\r\n")])));
});

test("integers must be safe integers (an invariant, not client input)", () => {
  assert.throws(() => encodeReply({ type: "integer", value: 1.5 }, get("resp")));
});

test("HELP_TEXT is one line naming every client command", () => {
  assert.not.match(HELP_TEXT, /[\r\n]/);
  for (const word of ["PUT", "SET", "GET", "DELETE", "DEL", "EXISTS", "PING", "INFO", "RING", "READONLY", "READWRITE", "HELP", "QUIT"]) {
    assert.match(HELP_TEXT, new RegExp(`\\b${word}\\b`));
  }
});

// ------------------------------------------------------------------ runs of replies

test("encodeReplies: the same bytes as encoding each reply and concatenating, in every dialect", () => {
  const values = [
    Buffer.alloc(0),
    Buffer.from("v"),
    Buffer.alloc(9, 0x61),
    Buffer.alloc(10, 0x62),
    Buffer.alloc(100, 0x63),
    Buffer.alloc(12_345, 0x64),
    Buffer.from("a\nb"),
    Buffer.from("a\rb"),
    Buffer.from([0xff, 0x00, 0x0d, 0x0a]),
    Buffer.from("ünïcödé ✓"),
  ];
  const others: Reply[] = [
    { type: "ok" },
    { type: "not_found" },
    { type: "deleted" },
    { type: "pong" },
    { type: "integer", value: 12 },
    { type: "json", value: { a: 1 } },
    { type: "error", code: "TIMEOUT", message: "outcome unknown" },
  ];
  for (const dialect of ["line", "json", "resp"] as const) {
    const items: ReplyItem[] = [];
    for (const [i, value] of values.entries()) {
      items.push({ reply: { type: "value", value }, request: get(dialect) });
      items.push({ reply: others[i % others.length], request: i % 2 === 0 ? get(dialect) : del(dialect) });
    }
    const expected = Buffer.concat(items.map(({ reply, request }) => encodeReply(reply, request)));
    assert.equal(encodeReplies(items), expected, dialect);
    for (const item of items) assert.equal(encodeReplies([item]), encodeReply(item.reply, item.request), dialect);
  }
  assert.is(encodeReplies([]).length, 0);
});

test("RESP bulk lengths around powers of ten", () => {
  for (const length of [0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 1_048_576]) {
    const value = Buffer.alloc(length, 0x78);
    const bytes = encodeReply({ type: "value", value }, get("resp"));
    assert.equal(bytes.subarray(0, bytes.length - length - 2).toString("latin1"), `$${length}\r\n`);
    assert.equal(bytes.subarray(bytes.length - 2).toString("latin1"), "\r\n");
  }
});

test.run();
