/**
 * Frame → Request, for the plain line, JSON and RESP dialects.
 */

import { test } from "uvu";
import * as assert from "uvu/assert";
import { Framer } from "../../src/protocol/framer.ts";
import type { Frame } from "../../src/protocol/framer.ts";
import { MAX_KEY_BYTES, parseFrame, PEER_COMMANDS, validateKey } from "../../src/protocol/parse.ts";
import type { Request } from "../../src/protocol/types.ts";

/** Parses one plain or JSON line (given without its "\n"). */
function line(text: string | Buffer): Request {
  return parseFrame({ kind: "line", bytes: typeof text === "string" ? Buffer.from(text, "utf8") : text });
}

/** Parses one RESP array. */
function resp(...args: (string | Buffer)[]): Request {
  return parseFrame({ kind: "resp", args: args.map((a) => (typeof a === "string" ? Buffer.from(a, "utf8") : a)) });
}

/** Asserts `request` is INVALID with `code`, and its message matches `message` if given. */
function assertInvalid(request: Request, code: string, message?: RegExp): void {
  assert.is(request.command, "INVALID", JSON.stringify(request));
  if (request.command !== "INVALID") return;
  assert.is(request.code, code, request.message);
  if (message !== undefined) assert.match(request.message, message);
  assert.not.match(request.message, /[\r\n]/);
}

function assertPut(request: Request, dialect: string, key: string, value: Buffer | string): void {
  assert.is(request.command, "PUT", JSON.stringify(request));
  if (request.command !== "PUT") return;
  assert.is(request.dialect, dialect);
  assert.is(request.key, key);
  const expected = typeof value === "string" ? Buffer.from(value, "utf8") : value;
  assert.ok(request.value.equals(expected), `value ${JSON.stringify(request.value.toString("latin1"))}`);
}

// ------------------------------------------------------------------ plain line

test("line: PUT and its alias SET; the command word is case-insensitive", () => {
  assertPut(line("PUT k v"), "line", "k", "v");
  assertPut(line("set k v"), "line", "k", "v");
  assertPut(line("pUt k v"), "line", "k", "v");
});

test("line: the value is every byte after the single space that follows the key", () => {
  assertPut(line("PUT k  two leading, inner  spaces  "), "line", "k", " two leading, inner  spaces  ");
  assertPut(line("PUT   k v"), "line", "k", "v"); // Several spaces between command and key are fine.
  assertPut(line("PUT k héllo wörld ✓ 日本"), "line", "k", "héllo wörld ✓ 日本");
  assertPut(line("PUT k a\tb\rc"), "line", "k", "a\tb\rc");
});

test("line: values are bytes, never re-encoded (invalid UTF-8 stays as sent)", () => {
  const bytes = Buffer.concat([Buffer.from("PUT k "), Buffer.from([0xff, 0xfe, 0x00, 0x80])]);
  assertPut(line(bytes), "line", "k", Buffer.from([0xff, 0xfe, 0x00, 0x80]));
});

test("line: `PUT k ` with the space gives an empty value; `PUT k` is BAD_REQUEST", () => {
  assertPut(line("PUT k "), "line", "k", "");
  assertInvalid(line("PUT k"), "BAD_REQUEST", /needs a value/);
  assertInvalid(line("PUT"), "BAD_REQUEST", /usage: PUT <key> <value>/);
  assertInvalid(line("SET "), "BAD_REQUEST", /usage: SET/);
});

test("line: GET, DELETE and DEL take exactly one key", () => {
  assert.equal(line("GET k"), { dialect: "line", command: "GET", key: "k" });
  assert.equal(line("get   k  "), { dialect: "line", command: "GET", key: "k" });
  assert.equal(line("DELETE k"), { dialect: "line", command: "DELETE", key: "k" });
  assert.equal(line("del k"), { dialect: "line", command: "DELETE", key: "k" });
  assertInvalid(line("GET a b"), "BAD_REQUEST", /exactly one key/);
  assertInvalid(line("DEL a b"), "BAD_REQUEST", /exactly one key/);
  assertInvalid(line("GET"), "BAD_REQUEST", /usage: GET <key>/);
  assertInvalid(line("DELETE "), "BAD_REQUEST", /usage: DELETE <key>/);
});

test("line: EXISTS takes one or more keys", () => {
  assert.equal(line("EXISTS a"), { dialect: "line", command: "EXISTS", keys: ["a"] });
  assert.equal(line("exists a  b c"), { dialect: "line", command: "EXISTS", keys: ["a", "b", "c"] });
  assertInvalid(line("EXISTS"), "BAD_REQUEST", /usage: EXISTS/);
});

test("line: commands without arguments", () => {
  for (const command of ["PING", "HELP", "INFO", "RING", "QUIT", "READONLY", "READWRITE"]) {
    assert.equal(line(command), { dialect: "line", command });
    assert.equal(line(command.toLowerCase()), { dialect: "line", command });
    if (command !== "PING") assertInvalid(line(`${command} x`), "BAD_REQUEST", /takes no arguments/);
  }
  assert.equal(line("PING hello"), { dialect: "line", command: "PING" });
});

test("line: peer commands become PEER with the bytes after `NAME `", () => {
  assert.equal([...PEER_COMMANDS], ["AUTH", "REPLICATE", "SNAPSHOT", "FWD"]);
  const request = line("replicate p1 7 42 x y");
  assert.is(request.command, "PEER");
  if (request.command === "PEER") {
    assert.is(request.dialect, "line");
    assert.is(request.name, "REPLICATE");
    assert.is(request.rest.toString(), "p1 7 42 x y");
  }
  const bare = line("AUTH");
  assert.ok(bare.command === "PEER" && bare.name === "AUTH" && bare.rest.length === 0);
  const fwd = line("FWD 1 PUT k v");
  assert.ok(fwd.command === "PEER" && fwd.name === "FWD" && fwd.rest.toString() === "1 PUT k v");
  const snapshot = line("Snapshot x");
  assert.ok(snapshot.command === "PEER" && snapshot.name === "SNAPSHOT");
});

test("line: an unknown command is UNKNOWN_COMMAND naming the word", () => {
  assertInvalid(line("FROB k"), "UNKNOWN_COMMAND", /unknown command 'FROB'/);
  assertInvalid(line("frob"), "UNKNOWN_COMMAND", /'frob'/);
  assertInvalid(line("GETX k"), "UNKNOWN_COMMAND", /'GETX'/);
});

test("line: a long or unprintable unknown word is truncated to 64 characters and escaped", () => {
  const request = line("Z".repeat(500));
  assertInvalid(request, "UNKNOWN_COMMAND", new RegExp(`'${"Z".repeat(64)}\\.\\.\\.'`));
  assertInvalid(line("GET\tk"), "UNKNOWN_COMMAND", /'GET\\x09k'/);
  assertInvalid(line("\u0007bell"), "UNKNOWN_COMMAND", /'\\x07bell'/);
  assertInvalid(line("日本語"), "UNKNOWN_COMMAND", /'日本語'/);
});

test("line: invalid UTF-8 in the command or the key is BAD_REQUEST", () => {
  assertInvalid(line(Buffer.from([0xc3, 0x28, 0x20, 0x6b])), "BAD_REQUEST", /command is not valid UTF-8/);
  assertInvalid(line(Buffer.concat([Buffer.from("GET "), Buffer.from([0xff])])), "BAD_REQUEST", /not valid UTF-8/);
  assertInvalid(
    line(Buffer.concat([Buffer.from("PUT "), Buffer.from([0xe2, 0x82]), Buffer.from(" v")])),
    "BAD_REQUEST",
    /not valid UTF-8/,
  );
});

test("line: non-ASCII look-alikes of commands are not commands", () => {
  // "ſ".toUpperCase() is "S": it must not turn "ſet" into SET.
  assertInvalid(line("ſet k v"), "UNKNOWN_COMMAND");
});

test("line: a line starting with a space is BAD_REQUEST", () => {
  assertInvalid(line(" GET k"), "BAD_REQUEST", /starts with a space/);
});

// ------------------------------------------------------------------ keys

test("keys: 1024 bytes pass, 1025 bytes are BAD_REQUEST, in every dialect", () => {
  const ok = "k".repeat(MAX_KEY_BYTES);
  const long = "k".repeat(MAX_KEY_BYTES + 1);
  assert.equal(line(`GET ${ok}`), { dialect: "line", command: "GET", key: ok });
  assertInvalid(line(`GET ${long}`), "BAD_REQUEST", /key is 1025 bytes; the limit is 1024/);
  assert.equal(resp("GET", ok), { dialect: "resp", command: "GET", key: ok });
  assertInvalid(resp("GET", long), "BAD_REQUEST", /key is 1025 bytes; the limit is 1024/);
  assert.equal(line(JSON.stringify({ op: "GET", key: ok })), { dialect: "json", command: "GET", key: ok });
  assertInvalid(line(JSON.stringify({ op: "GET", key: long })), "BAD_REQUEST", /key is 1025 bytes/);
});

test("keys: the limit counts UTF-8 bytes, not characters", () => {
  const euro = "€".repeat(341); // 1023 bytes.
  assert.is(validateKey(euro), undefined);
  assert.is(validateKey(euro + "€"), "key is 1026 bytes; the limit is 1024");
  assert.is(validateKey(Buffer.from(euro + "€")), "key is 1026 bytes; the limit is 1024");
});

test("keys: empty, whitespace and control characters are refused", () => {
  assert.is(validateKey(""), "key is empty");
  assert.is(validateKey(Buffer.alloc(0)), "key is empty");
  const bad = ["a b", "a\tb", "a\u0000", "a\u001f", "a\u007f", "a\u0085", "a\u009f", "a\u00a0", "a\u2003", "a\u3000", "\u2028"];
  for (const key of bad) {
    assert.is(validateKey(key), "key contains whitespace or a control character", JSON.stringify(key));
    assert.is(validateKey(Buffer.from(key)), "key contains whitespace or a control character", JSON.stringify(key));
  }
  for (const key of ["a", "user:42", "ünïcödé", "日本", "emoji-😀", "a~!@#$%^&*()"]) {
    assert.is(validateKey(key), undefined, key);
    assert.is(validateKey(Buffer.from(key)), undefined, key);
  }
  assert.match(validateKey("a\ud800") ?? "", /not valid UTF-8/);
  assert.match(validateKey(Buffer.from([0x61, 0xc0, 0x80])) ?? "", /not valid UTF-8/);
});

test("keys: a unicode key is decoded from its UTF-8 bytes", () => {
  assert.equal(line("GET ключ"), { dialect: "line", command: "GET", key: "ключ" });
  assertInvalid(line("GET a\u00a0b"), "BAD_REQUEST", /whitespace or a control character/);
});

// ------------------------------------------------------------------ framer-made frames

test("too_large and resp_error frames become INVALID requests of their dialect", () => {
  const tooLarge = parseFrame({ kind: "too_large", dialect: "json" }, { maxLine: 100 });
  assert.equal(tooLarge, {
    dialect: "json",
    command: "INVALID",
    code: "TOO_LARGE",
    message: "request is longer than 100 bytes (--max-line); it was discarded",
  });
  assertInvalid(parseFrame({ kind: "too_large", dialect: "line" }), "TOO_LARGE", /longer than 1048576 bytes/);
  assert.equal(parseFrame({ kind: "resp_error", message: "Protocol error: x" }), {
    dialect: "resp",
    command: "INVALID",
    code: "BAD_REQUEST",
    message: "Protocol error: x",
  });
});

test("framer and parser together: a pipelined mix gives one request per frame, in order", () => {
  const framer = new Framer();
  const frames: Frame[] = framer.push(
    Buffer.from('PUT a 1\r\n{"key":"a"}\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n\nBOGUS\nQUIT\n'),
  );
  assert.equal(frames.map((f) => parseFrame(f).command), ["PUT", "GET", "GET", "INVALID", "QUIT"]);
  assert.equal(frames.map((f) => parseFrame(f).dialect), ["line", "json", "resp", "line", "line"]);
});

// ------------------------------------------------------------------ JSON

test("json: PUT/GET/DELETE with op (case-insensitive, SET and DEL aliases)", () => {
  assertPut(line('{"op":"PUT","key":"k","value":"v"}'), "json", "k", "v");
  assertPut(line('{"op":"set","key":"k","value":"v"}'), "json", "k", "v");
  assert.equal(line('{"op":"get","key":"k"}'), { dialect: "json", command: "GET", key: "k" });
  assert.equal(line('{"op":"DELETE","key":"k"}'), { dialect: "json", command: "DELETE", key: "k" });
  assert.equal(line('{"op":"Del","key":"k"}'), { dialect: "json", command: "DELETE", key: "k" });
});

test("json: without op, a request with value is a PUT and one without is a GET", () => {
  assertPut(line('{"key":"k","value":"v"}'), "json", "k", "v");
  assert.equal(line('{"key":"k"}'), { dialect: "json", command: "GET", key: "k" });
});

test("json: values are strings, stored as their UTF-8 bytes; newlines and unicode survive", () => {
  assertPut(line('{"key":"k","value":"two\\nlines \\u00e9 ✓ \\ud83d\\ude00"}'), "json", "k", "two\nlines é ✓ 😀");
  assertPut(line('{"key":"k","value":""}'), "json", "k", "");
  assertInvalid(line('{"key":"k","value":"\\ud800"}'), "BAD_REQUEST", /lone surrogate/);
});

test("json: non-string values and keys are BAD_REQUEST", () => {
  assertInvalid(line('{"key":"k","value":42}'), "BAD_REQUEST", /value must be a string, got a number/);
  assertInvalid(line('{"key":"k","value":{"a":1}}'), "BAD_REQUEST", /value must be a string, got an object/);
  assertInvalid(line('{"key":"k","value":null}'), "BAD_REQUEST", /got null/);
  assertInvalid(line('{"op":"PUT","key":"k"}'), "BAD_REQUEST", /value must be a string, got nothing/);
  assertInvalid(line('{"key":7}'), "BAD_REQUEST", /key must be a string, got a number/);
  assertInvalid(line('{"op":"GET"}'), "BAD_REQUEST", /key is missing/);
  assertInvalid(line('{"op":"GET","key":"a b"}'), "BAD_REQUEST", /whitespace/);
  assertInvalid(line('{"op":"GET","key":""}'), "BAD_REQUEST", /key is empty/);
  assertInvalid(line('{"op":1,"key":"k"}'), "BAD_REQUEST", /op must be a string/);
});

test("json: invalid JSON and non-objects are BAD_REQUEST", () => {
  assertInvalid(line('{"op":"GET",'), "BAD_REQUEST", /^invalid JSON: /);
  assertInvalid(line("{nope}"), "BAD_REQUEST", /^invalid JSON: /);
  assertInvalid(line(Buffer.from([0x7b, 0xff, 0x7d])), "BAD_REQUEST", /invalid JSON: not valid UTF-8/);
  assertInvalid(line("{} extra"), "BAD_REQUEST", /^invalid JSON: /);
});

test("json: ops without a key", () => {
  for (const command of ["PING", "HELP", "INFO", "RING", "QUIT", "READONLY", "READWRITE"]) {
    assert.equal(line(JSON.stringify({ op: command.toLowerCase() })), { dialect: "json", command });
  }
});

test("json: EXISTS takes key or keys", () => {
  assert.equal(line('{"op":"EXISTS","keys":["a","b"]}'), { dialect: "json", command: "EXISTS", keys: ["a", "b"] });
  assert.equal(line('{"op":"exists","key":"a"}'), { dialect: "json", command: "EXISTS", keys: ["a"] });
  assertInvalid(line('{"op":"EXISTS"}'), "BAD_REQUEST", /EXISTS needs/);
  assertInvalid(line('{"op":"EXISTS","keys":[]}'), "BAD_REQUEST", /EXISTS needs/);
  assertInvalid(line('{"op":"EXISTS","keys":["a",1]}'), "BAD_REQUEST", /key must be a string/);
});

test("json: unknown ops are UNKNOWN_COMMAND; peer names are PEER with nothing else", () => {
  assertInvalid(line('{"op":"FROB","key":"k"}'), "UNKNOWN_COMMAND", /unknown op 'FROB'/);
  assertInvalid(line('{"op":"ſet","key":"k","value":"v"}'), "UNKNOWN_COMMAND");
  assertInvalid(line('{"op":"","key":"k"}'), "UNKNOWN_COMMAND");
  const peer = line('{"op":"replicate","key":"k"}');
  assert.ok(peer.command === "PEER" && peer.dialect === "json" && peer.name === "REPLICATE" && peer.rest.length === 0);
});

// ------------------------------------------------------------------ RESP

test("resp: SET and PUT take exactly a key and a value; values are binary", () => {
  const value = Buffer.from([0, 10, 13, 255]);
  assertPut(resp("SET", "k", value), "resp", "k", value);
  assertPut(resp("put", "k", "with spaces "), "resp", "k", "with spaces ");
  assertInvalid(resp("SET", "k", "v", "EX", "10"), "BAD_REQUEST", /SET options are not supported/);
  assertInvalid(resp("SET", "k"), "BAD_REQUEST", /wrong number of arguments for 'SET'/);
  assertInvalid(resp("PUT", "k", "v", "x"), "BAD_REQUEST", /wrong number of arguments for 'PUT'/);
});

test("resp: GET, DEL and DELETE take exactly one key", () => {
  assert.equal(resp("get", "k"), { dialect: "resp", command: "GET", key: "k" });
  assert.equal(resp("DEL", "k"), { dialect: "resp", command: "DELETE", key: "k" });
  assert.equal(resp("delete", "k"), { dialect: "resp", command: "DELETE", key: "k" });
  assertInvalid(resp("GET"), "BAD_REQUEST", /wrong number of arguments for 'GET'/);
  assertInvalid(resp("GET", "a", "b"), "BAD_REQUEST", /wrong number/);
  assertInvalid(resp("DEL", "a", "b"), "BAD_REQUEST", /DEL takes exactly one key/);
  assertInvalid(resp("DEL"), "BAD_REQUEST", /wrong number/);
});

test("resp: keys follow the same rules", () => {
  assertInvalid(resp("GET", "a b"), "BAD_REQUEST", /whitespace/);
  assertInvalid(resp("GET", ""), "BAD_REQUEST", /key is empty/);
  assertInvalid(resp("SET", Buffer.from([0xff]), "v"), "BAD_REQUEST", /not valid UTF-8/);
});

test("resp: EXISTS takes one or more keys", () => {
  assert.equal(resp("EXISTS", "a", "b"), { dialect: "resp", command: "EXISTS", keys: ["a", "b"] });
  assertInvalid(resp("EXISTS"), "BAD_REQUEST", /wrong number/);
});

test("resp: PING [message], INFO [section], QUIT, HELP, RING, READONLY, READWRITE", () => {
  assert.equal(resp("PING"), { dialect: "resp", command: "PING" });
  assert.equal(resp("ping", "hello"), { dialect: "resp", command: "PING" });
  assertInvalid(resp("PING", "a", "b"), "BAD_REQUEST", /wrong number/);
  assert.equal(resp("INFO"), { dialect: "resp", command: "INFO" });
  assert.equal(resp("info", "server"), { dialect: "resp", command: "INFO" });
  assert.equal(resp("QUIT"), { dialect: "resp", command: "QUIT" });
  for (const command of ["HELP", "RING", "READONLY", "READWRITE"]) {
    assert.equal(resp(command.toLowerCase()), { dialect: "resp", command });
    assertInvalid(resp(command, "x"), "BAD_REQUEST", /wrong number/);
  }
});

test("resp: peer commands become PEER with the remaining args joined by spaces", () => {
  const request = resp("AUTH", "secret", "node-1");
  assert.ok(request.command === "PEER" && request.dialect === "resp" && request.name === "AUTH");
  if (request.command === "PEER") assert.is(request.rest.toString(), "secret node-1");
  const bare = resp("snapshot");
  assert.ok(bare.command === "PEER" && bare.name === "SNAPSHOT" && bare.rest.length === 0);
});

test("resp: commands redis-cli and redis-benchmark send at start are UNKNOWN_COMMAND, not a crash", () => {
  for (const args of [["COMMAND", "DOCS"], ["CONFIG", "GET", "save"], ["CLIENT", "SETNAME", "x"], ["HELLO", "3"], ["SELECT", "0"]]) {
    assertInvalid(resp(...args), "UNKNOWN_COMMAND", new RegExp(`unknown command '${args[0]}'`));
  }
  assertInvalid(resp(Buffer.from([0xff, 0xfe])), "BAD_REQUEST", /command is not valid UTF-8/);
  assertInvalid(resp(""), "UNKNOWN_COMMAND", /unknown command ''/);
});

test.run();
