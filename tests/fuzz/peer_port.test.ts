/**
 * The peer side of the port under hostile input, against a real 3-node
 * cluster (real ZooKeeper, real node processes, secret "test-secret").
 * Peer-only lines (REPLICATE, SNAPSHOT, FWD) are built with the real encoders
 * (encodeMessage, encodeSnapshot, encodeForward), then mutated (bit flips,
 * truncation, field swaps, huge and negative numbers, bad base64, wrong
 * counts, binary, bad UTF-8, overlong lines, other dialects) and sent
 *
 *   1. unauthenticated: each gets ERR FORBIDDEN, or the parser's own error
 *      when the mutation broke the command word, and nothing is written;
 *   2. around the handshake: malformed, out-of-order, repeated, reflected and
 *      replayed AUTH lines, each checked against a model of the handshake;
 *      no connection is authenticated without the right proof;
 *   3. authenticated (a real handshake), as a non-member ("fuzzer"), as the
 *      node's own id, and as a member ("n2" on n1) whose messages are
 *      addressed wrongly: each line gets the reply the contract gives it
 *      (worked out here with the real decoders), the connection stays up (a
 *      PING ends every connection), and valid FWD writes are checked against
 *      a model afterwards.
 *
 * Afterwards every node is alive, every guard key reads back from every node,
 * new writes work through every node, no leader or epoch changed, memory grew
 * by a bounded amount, and no node logged an error or installed a snapshot.
 * Two last tests pin down what the fuzz found: UTF-8 key names must survive
 * the peer paths (FWD, REPLICATE), and a snapshot streamed by a non-member
 * must not be installed (the last one: when it fails, the leader is gone).
 *
 * The trust boundary. A peer that knows the secret is trusted: a well-formed
 * REPLICATE from a member id with a forged huge epoch would legitimately fence
 * the real leaders. So:
 *   - as a member, only lines that are refused before the replica sees them
 *     are sent (malformed; `from` not the connection's peer or `to` not this
 *     node; a partition the node does not have). Every candidate line is
 *     decoded here first, and re-rolled if it would reach the replica;
 *   - as a non-member and as the node's own id, well-formed messages with huge
 *     epochs and guard keys in their entries are sent on purpose: the replica
 *     core drops messages from ids that are not its peers, and the guard keys,
 *     leaders and epochs are checked afterwards;
 *   - SNAPSHOT: no identity sends lines that complete a snapshot with index > 0
 *     of a partition the node has (it would be installed, whoever sent it: see
 *     the last test), and a member sends no SNAPSHOT REQUEST for such a
 *     partition (the node would stream its state to that member);
 *   - FWD: a valid FWD PUT or DELETE is a legitimate write; none names a guard
 *     key (checked with decodeForward before sending; such lines are re-rolled).
 * Lines past the 1 MiB client limit are sent unauthenticated only; an
 * authenticated peer may send 256 MiB lines, and gets lines of a few MiB.
 *
 * Peer lines are UTF-8: a line that is not gets ERR BAD_REQUEST before its
 * command is looked at (the fuzz first found keys garbled by a latin1 read).
 * A snapshot completes only from another member of the partition.
 *
 * Replay a run with RINGKV_FUZZ_SEED=<seed> (printed at the start). Server
 * nonces are random, so proofs differ between runs; each connection has its
 * own PRNG and every input is generated before it is sent.
 */
import fs from "node:fs";
import { isUtf8 } from "node:buffer";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { startTestCluster, type TestCluster } from "../support/cluster.ts";
import { encodeResp, LineClient, type RespValue } from "../support/tcp.ts";
import { seeded } from "../simulation/prng.ts";
import { CodecError, decodeMessage, encodeMessage, MAX_ENTRIES_PER_MESSAGE, MESSAGE_PREFIX } from "../../src/replication/codec.ts";
import { encodeSnapshot, SnapshotReceiver, type SnapshotStep } from "../../src/replication/transport.ts";
import { decodeForward, encodeForward } from "../../src/node/cluster_node.ts";
import type { KeyRequest } from "../../src/router/router.ts";
import { isNonce, proof } from "../../src/net/auth.ts";
import { DEFAULT_MAX_LINE, Framer } from "../../src/protocol/framer.ts";
import { parseFrame, validateKey } from "../../src/protocol/parse.ts";
import { MAX_PEER_LINE_BYTES } from "../../src/server/server.ts";
import type { Dialect, Request } from "../../src/protocol/types.ts";
import type { PeerMessage } from "../../src/replication/types.ts";
import type { LogEntry } from "../../src/storage/entry.ts";
import type { LocalNodeSpec } from "../../src/node/local_cluster.ts";

/** The cluster secret of startTestCluster. */
const SECRET = "test-secret";
/** Keys written before the fuzz that must read back unchanged after it. */
const GUARD_KEYS = 50;
/** Unauthenticated fuzz connections (phase 1), of which this many send one line past 1 MiB. */
const UNAUTH_CONNECTIONS = 192;
const OVERLONG_CONNECTIONS = 3;
/** Connections driving the handshake model (phase 2), and steps on each. */
const HANDSHAKE_CONNECTIONS = 60;
const MAX_HANDSHAKE_STEPS = 16;
/** Authenticated connections per node and identity (phase 3: 3 nodes × 3 identities × this). */
const AUTH_CONNECTIONS = 16;
/** Probes per fuzz connection: up to this many. */
const MAX_PROBES = 120;
/** Candidates tried for one probe before a probe that is always safe is sent instead. */
const MAX_REROLLS = 64;
/** Fuzz connections at once. */
const CONCURRENCY = 12;
/** Deadline of one reply: a valid FWD write waits for its commit (--request-timeout is 5 s). */
const REPLY_TIMEOUT_MS = 12_000;
/** Deadline of a condition polled for (followers catching up, connections closing, a node answering). */
const WAIT_MS = 10_000;
/** RSS growth allowed per node over its size before the fuzz, in bytes. */
const MAX_RSS_GROWTH = 200 * 1_048_576;
/** Bytes of an authenticated "big" line (within the 256 MiB peer limit, far past the client one)... */
const BIG_LINE_BYTES = 2 * 1_048_576;
/** ...sent by every this-many-th authenticated connection. */
const BIG_LINE_EVERY = 6;
/** Failures quoted in an assertion message. */
const MAX_QUOTED_FAILURES = 12;

const SEED = Number(process.env.RINGKV_FUZZ_SEED || Date.now() % 1_000_000_000);
console.log(`peer port fuzz seed ${SEED} (replay: RINGKV_FUZZ_SEED=${SEED})`);

const EMPTY = Buffer.alloc(0);

// ------------------------------------------------------------------ randomness

/** One connection's own random source, so concurrency and server nonces change nothing. */
class Dice {
  readonly #random: () => number;

  constructor(random: () => number) {
    this.#random = random;
  }

  int(n: number): number {
    return Math.floor(this.#random() * n);
  }

  chance(p: number): boolean {
    return this.#random() < p;
  }

  pick<T>(items: readonly T[]): T {
    assert.ok(items.length > 0, "pick from an empty list");
    return items[this.int(items.length)];
  }

  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }

  hex(chars: number): string {
    let out = "";
    for (let i = 0; i < chars; i++) out += "0123456789abcdef"[this.int(16)];
    return out;
  }
}

/** The PRNG of connection `index` of `phase`. */
function dice(phase: number, index: number): Dice {
  return new Dice(seeded(SEED + 7919 * (phase * 100_000 + index + 1)));
}

// ------------------------------------------------------------------ keys and numbers

function guardKey(i: number): string {
  return `guard-${String(i).padStart(2, "0")}`;
}

function guardValue(i: number): string {
  return `guarded-${i}-${SEED}`;
}

const GUARDS = new Map<string, string>(Array.from({ length: GUARD_KEYS }, (_, i) => [guardKey(i), guardValue(i)]));

/** Numbers for message fields: mostly small, sometimes at the edges of safe integers. */
const NUMBERS = [0, 1, 2, 3, 7, 1000, 2 ** 31, 2 ** 32, 1e15, Number.MAX_SAFE_INTEGER];

function num(d: Dice): number {
  return d.chance(0.6) ? d.int(5) : d.pick(NUMBERS);
}

/** Texts that replace a run of digits: unsafe, negative, fractional, exotic, empty. */
const WEIRD_NUMBER_TEXTS = ["9007199254740993", "99999999999999999999999999", "1e400", "-1", "-0", "1.5", "0x10", "1e3", "00", "NaN", "Infinity", ""];

/** A key for REPLICATE entries and SNAPSHOT data (guard keys included: see the header). */
function entryKey(d: Dice, conn: number): string {
  return d.pick([guardKey(d.int(GUARD_KEYS)), `fz-${conn}-${d.int(8)}`, "ключ", "🙂", "k".repeat(1024), "é".repeat(513), ""]);
}

/** A key for FWD lines: this connection's own (ASCII and not), or a guard key. */
function fwdKey(d: Dice, conn: number): string {
  if (d.chance(0.15)) return guardKey(d.int(GUARD_KEYS));
  return d.pick([`fz-${conn}-${d.int(6)}`, `fz-${conn}-${d.int(6)}`, `fz-${conn}-ключ-${d.int(2)}`, `fz-${conn}-é`, `fz-${conn}-🙂`]);
}

// ------------------------------------------------------------------ generators

const IDS = ["n1", "n2", "n3", "fuzzer", "n4", "", "N1", "x".repeat(257)];
const ODD_PARTITIONS = ["p9", "P1", "p1 ", "x".repeat(257), "ключ", "p", "p1\u0000"];

/** Whom a generated message is from and to, and for which partition. */
interface Header {
  partition: string;
  from: string;
  to: string;
}

function randomEntry(d: Dice, conn: number, index: number): LogEntry {
  const op = d.pick(["put", "put", "delete", "noop"] as const);
  return {
    epoch: num(d),
    index,
    op,
    key: op === "noop" ? "" : entryKey(d, conn),
    value: op === "put" ? d.bytes(d.int(48)) : EMPTY,
  };
}

function randomEntries(d: Dice, conn: number): LogEntry[] {
  const count = d.chance(0.05) ? d.int(300) : d.int(4);
  let index = 1 + d.int(1000);
  return Array.from({ length: count }, () => randomEntry(d, conn, index++));
}

function randomMessage(d: Dice, header: Header, conn: number): PeerMessage {
  switch (d.int(6)) {
    case 0:
      return { type: "promise", ...header, epoch: num(d) };
    case 1:
      return {
        type: "promise_reply",
        ...header,
        epoch: num(d),
        ok: d.chance(0.5),
        promisedEpoch: num(d),
        lastEpoch: num(d),
        lastIndex: num(d),
        commitIndex: num(d),
        firstIndex: 1 + d.int(10),
      };
    case 2:
      return { type: "fetch", ...header, epoch: num(d), fromIndex: 1 + d.int(10), maxEntries: 1 + num(d) };
    case 3:
      return {
        type: "fetch_reply",
        ...header,
        epoch: num(d),
        fromIndex: 1 + d.int(10),
        ok: d.chance(0.5),
        entries: randomEntries(d, conn),
        lastIndex: num(d),
        snapshotNeeded: d.chance(0.3),
        promisedEpoch: num(d),
      };
    case 4:
      return {
        type: "replicate",
        ...header,
        epoch: num(d),
        prevEpoch: num(d),
        prevIndex: num(d),
        entries: randomEntries(d, conn),
        commitIndex: num(d),
        readSeq: num(d),
      };
    default:
      return {
        type: "replicate_reply",
        ...header,
        epoch: num(d),
        ok: d.chance(0.5),
        matchIndex: num(d),
        lastIndex: num(d),
        promisedEpoch: num(d),
        readSeq: num(d),
      };
  }
}

const WEIRD_VALUES: readonly unknown[] = [null, true, false, -1, 1.5, 2 ** 53, 2 ** 64, "1", "", [], {}, [[]], "x".repeat(300), { type: "promise" }];

/** Structural mutations of a decoded message object: missing, extra, swapped and mistyped fields. */
function mutateJson(d: Dice, o: Record<string, unknown>): Record<string, unknown> {
  const names = Object.keys(o);
  switch (d.int(7)) {
    case 0:
      delete o[d.pick(names)];
      break;
    case 1:
      // Plain assignment makes these own properties ("__proto__" goes in as text, below).
      o[d.pick(["extra", "constructor", "toString", "Type", "entries", "hasOwnProperty"])] = d.pick(WEIRD_VALUES);
      break;
    case 2:
      o[d.pick(names)] = d.pick(WEIRD_VALUES);
      break;
    case 3:
      o.type = d.pick(["promise_replyx", "PROMISE", "__proto__", "constructor", "toString", "hasOwnProperty", "", 7, null]);
      break;
    case 4: {
      const a = d.pick(names);
      const b = d.pick(names);
      [o[a], o[b]] = [o[b], o[a]];
      break;
    }
    case 5: {
      const list = Array.isArray(o.entries) ? o.entries as unknown[] : [];
      if (list.length === 0) list.push([1, 1, "noop", "", ""]);
      o.entries = list;
      const at = d.int(list.length);
      const tuple = list[at];
      if (Array.isArray(tuple)) mutateTuple(d, tuple as unknown[]);
      else list[at] = d.pick(WEIRD_VALUES);
      break;
    }
    default: {
      const numeric = names.filter((name) => typeof o[name] === "number");
      if (numeric.length > 0) o[d.pick(numeric)] = d.pick([-1, 1.5, 2 ** 53, 2 ** 64, 1e308, -(2 ** 53)]);
    }
  }
  return o;
}

function mutateTuple(d: Dice, tuple: unknown[]): void {
  switch (d.int(7)) {
    case 0:
      tuple.push(d.pick(WEIRD_VALUES));
      break;
    case 1:
      tuple.pop();
      break;
    case 2:
      tuple[2] = d.pick(["PUT", "constructor", "__proto__", "toString", "noop", "delete", "put ", ""]);
      break;
    case 3:
      tuple[3] = d.pick(["", "k".repeat(1025), "é".repeat(513), 5, null, "\u0000", "\ud800"]);
      break;
    case 4:
      tuple[4] = d.pick(["abc", "ab=c", "@@@@", "YQ", "YQ==YQ==", "====", "YWJj\n", 5]);
      break;
    case 5:
      tuple[0] = d.pick([-1, 1.5, 2 ** 53, "1", null]);
      break;
    default:
      tuple[1] = d.pick([0, -1, 1.5, 2 ** 53, "1"]);
  }
}

const BAD_UTF8 = [[0xff], [0xfe, 0x41], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0x00]];

/** Byte-level edits of a line (without its "\n"). */
function mutateBytes(d: Dice, input: Buffer): Buffer {
  let out = Buffer.from(input);
  const edits = 1 + d.int(3);
  for (let e = 0; e < edits && out.length > 0; e++) {
    const at = d.int(out.length);
    switch (d.int(10)) {
      case 0:
        out[at] ^= 1 << d.int(8);
        break;
      case 1:
        out = Buffer.concat([out.subarray(0, at), d.bytes(1 + d.int(8)), out.subarray(at)]);
        break;
      case 2:
        out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1 + d.int(4))]);
        break;
      case 3:
        out = Buffer.concat([out.subarray(0, at), out.subarray(at, at + 1 + d.int(64)), out.subarray(at)]);
        break;
      case 4:
        out = out.subarray(0, at);
        break;
      case 5: {
        // Field swap: two space- or comma-separated parts trade places.
        const separator = d.pick([" ", ","]);
        const parts = out.toString("latin1").split(separator);
        if (parts.length > 2) {
          const a = d.int(parts.length);
          const b = d.int(parts.length);
          [parts[a], parts[b]] = [parts[b], parts[a]];
          out = Buffer.from(parts.join(separator), "latin1");
        }
        break;
      }
      case 6: {
        const text = out.toString("latin1");
        const runs = [...text.matchAll(/\d+/g)];
        if (runs.length > 0) {
          const run = d.pick(runs);
          const start = run.index ?? 0;
          out = Buffer.from(text.slice(0, start) + d.pick(WEIRD_NUMBER_TEXTS) + text.slice(start + run[0].length), "latin1");
        }
        break;
      }
      case 7: {
        const text = out.toString("latin1");
        const runs = [...text.matchAll(/[A-Za-z0-9+/]{4,}={0,2}/g)];
        if (runs.length > 0) {
          const run = d.pick(runs);
          const cut = (run.index ?? 0) + d.int(run[0].length);
          out = Buffer.from(text.slice(0, cut) + d.pick(["!", "=", "-", "_", "==", "\u00ff", "A"]) + text.slice(cut), "latin1");
        }
        break;
      }
      case 8:
        out = Buffer.concat([out.subarray(0, at), Buffer.from(d.pick(BAD_UTF8)), out.subarray(at)]);
        break;
      default:
        out = Buffer.concat([out.subarray(0, at), d.bytes(16 + d.int(48)), out.subarray(at)]);
    }
  }
  return out;
}

// ------------------------------------------------------------------ sessions and probes

/** One fuzz connection as planned: where it goes and as whom. */
interface Session {
  /** Globally unique connection number (its FWD keys carry it). */
  conn: number;
  node: LocalNodeSpec;
  /** The peer id it authenticates as; undefined: it does not. */
  peer: string | undefined;
  /** Authenticated as a member of the node's partitions (not the node itself): nothing may reach a replica. */
  member: boolean;
  /** SNAPSHOT lines accepted so far, as the node will see them. */
  snapshots: SnapshotHistory;
  /** SNAPSHOT lines generated and not sent yet. */
  queue: Buffer[];
  /** Big lines this connection may still send. */
  big: number;
}

/** A FWD write as the peer meant it (its text read as UTF-8), to check against the store afterwards. */
interface FwdEffect {
  conn: number;
  key: string;
  op: "put" | "delete";
  value: Buffer;
}

/** One request of a fuzz connection, with what may come back. */
interface Probe {
  /** Bytes on the wire, terminator included. */
  bytes: Buffer;
  /** Dialect of the reply. */
  dialect: Dialect;
  /** Allowed replies, in line form (see replyText). */
  expect: RegExp;
  /** The request, shortened, for failure messages. */
  label: string;
  fwd?: FwdEffect;
  /** Keys a FWD write might touch (either decoding): the model skips keys with writes it cannot follow. */
  touches: string[];
}

/** What the node's SnapshotReceiver of this connection has been fed (valid UTF-8 lines only). */
class SnapshotHistory {
  #lines: string[] = [];

  /** The step `text` would give next. */
  peek(text: string): SnapshotStep {
    return replay(this.#lines, text);
  }

  accept(text: string, step: SnapshotStep): void {
    // A valid BEGIN replaces whatever came before it: the history can restart there.
    if (text.startsWith("BEGIN ") && step.type === "more") this.#lines.length = 0;
    this.#lines.push(text);
  }
}

function replay(history: readonly string[], text: string): SnapshotStep {
  const receiver = new SnapshotReceiver();
  for (const line of history) receiver.feed(line);
  return receiver.feed(text);
}

function newSession(conn: number, node: LocalNodeSpec, peer: string | undefined, member: boolean, big: number): Session {
  return { conn, node, peer, member, snapshots: new SnapshotHistory(), queue: [], big };
}

/** One line of a generated kind, before wrapping: REPLICATE, SNAPSHOT or FWD, mutated or not. */
function candidateLine(d: Dice, s: Session): Buffer {
  const kind = d.int(10);
  let line: Buffer;
  if (kind < 4) {
    line = replicateLine(d, s);
    if (d.chance(0.3)) line = mutateBytes(d, line);
  } else if (kind < 7) {
    if (s.queue.length === 0) s.queue = snapshotSequence(d, s);
    line = s.queue.shift()!;
    if (d.chance(0.25)) line = mutateBytes(d, line);
  } else {
    line = fwdLine(d, s);
    if (d.chance(0.4)) line = mutateBytes(d, line);
  }
  // One line each: an "\n" inside would start another request.
  for (let i = 0; i < line.length; i++) if (line[i] === 0x0a) line[i] = 0x20;
  return line;
}

function replicateLine(d: Dice, s: Session): Buffer {
  const self = s.peer ?? "n2";
  const header: Header = s.member
    ? {
      // Mostly misaddressed or for a partition the node lacks: see the header comment.
      partition: d.chance(0.5) ? d.pick(s.node.partitions) : d.pick(ODD_PARTITIONS),
      from: d.chance(0.5) ? self : d.pick(IDS),
      to: d.chance(0.5) ? s.node.id : d.pick(IDS),
    }
    : {
      partition: d.chance(0.75) ? d.pick(s.node.partitions) : d.pick(ODD_PARTITIONS),
      from: d.chance(0.7) ? self : d.pick(IDS),
      to: d.chance(0.7) ? s.node.id : d.pick(IDS),
    };
  let text = encodeMessage(randomMessage(d, header, s.conn));
  if (d.chance(0.4)) {
    const o = JSON.parse(text.slice(MESSAGE_PREFIX.length)) as Record<string, unknown>;
    text = MESSAGE_PREFIX + JSON.stringify(mutateJson(d, o));
  }
  if (d.chance(0.05)) text = text.replace("{", `{"__proto__":${d.pick(['{"type":"promise"}', "null", "1", "[]"])},`);
  if (d.chance(0.05)) text = d.pick(["replicate", "Replicate", "REPLICATE "]) + text.slice("REPLICATE".length);
  return Buffer.from(text, "utf8");
}

function snapshotSequence(d: Dice, s: Session): Buffer[] {
  const partition = d.chance(0.75) ? d.pick(s.node.partitions) : d.pick(["p9", "P1", "ключ", "a/b", "x".repeat(65), ""]);
  if (d.chance(0.2)) return [Buffer.from(`SNAPSHOT REQUEST ${partition} ${num(d)}`)];
  const state = new Map<string, Buffer>();
  const keys = d.int(6);
  for (let i = 0; i < keys; i++) state.set(entryKey(d, s.conn), d.bytes(d.int(48)));
  const lines = encodeSnapshot(partition, { epoch: num(d), index: d.chance(0.4) ? 0 : num(d), lastEpoch: num(d), state });
  if (d.chance(0.15)) lines.splice(1 + d.int(lines.length - 1), 1); // a DATA or the END missing
  if (d.chance(0.1)) lines.splice(d.int(lines.length), 0, lines[d.int(lines.length)]); // one line twice
  if (d.chance(0.1)) lines[0] = lines[0].replace(/ \d+$/, ` ${state.size + d.pick([1, -1, 2 ** 53])}`); // wrong count
  return lines.map((line) => Buffer.from(line, "utf8"));
}

function fwdLine(d: Dice, s: Session): Buffer {
  const key = fwdKey(d, s.conn);
  const op = d.pick(["put", "put", "delete", "get"] as const);
  const request: KeyRequest = op === "put"
    ? { op, key, value: d.bytes(d.int(40)) }
    : op === "get"
    ? { op, key, local: false }
    : { op, key };
  let line = encodeForward(request);
  switch (d.int(12)) {
    case 0:
      line = line.replace(/^FWD (PUT|GET|DELETE)/, (_, word: string) => `FWD ${word.toLowerCase()}`);
      break;
    case 1:
      line = line.replace(" ", "  ");
      break;
    case 2:
      line = `${line} extra`;
      break;
    case 3:
      line = line.replace(/ ([^ ]*)$/, (_, last: string) => ` ${last.slice(0, 3)}!${last.slice(3)}`);
      break;
    case 4:
      line = line.replace(/^FWD (\S+) /, (_, word: string) => `FWD ${word} \t`);
      break;
  }
  return Buffer.from(line, "utf8");
}

/** A line of a few MiB (or past the 65,536-entry limit): TOO_LARGE unauthenticated, parsed when authenticated. */
function bigLine(d: Dice, s: Session): Buffer {
  switch (d.int(3)) {
    case 0: {
      const entries = Array.from({ length: MAX_ENTRIES_PER_MESSAGE + 1 }, (_, i) => [0, i + 1, "noop", "", ""]);
      const o = { type: "replicate", partition: d.pick(ODD_PARTITIONS), from: s.peer ?? "n2", to: s.node.id, epoch: 1, prevEpoch: 0, prevIndex: 0, entries, commitIndex: 0, readSeq: 0 };
      return Buffer.from(MESSAGE_PREFIX + JSON.stringify(o));
    }
    case 1:
      return Buffer.from(`SNAPSHOT DATA ${d.pick(s.node.partitions)} ${Buffer.from("big").toString("base64")}:${"QUFB".repeat(BIG_LINE_BYTES / 4)}`);
    default:
      return Buffer.from(encodeForward({ op: "put", key: `fz-${s.conn}-big`, value: Buffer.alloc(BIG_LINE_BYTES * 3 / 4, 0x62) }));
  }
}

/** The line as sent: mostly as is, sometimes as a RESP array or a JSON line. */
function wrap(d: Dice, line: Buffer): Buffer {
  const r = d.int(20);
  if (r === 0) {
    const args: Buffer[] = [];
    let at = 0;
    for (;;) {
      const sp = line.indexOf(0x20, at);
      if (sp === -1) break;
      args.push(line.subarray(at, sp));
      at = sp + 1;
    }
    args.push(line.subarray(at));
    return encodeResp(args);
  }
  if (r === 1) {
    const verb = line.toString("latin1").split(" ")[0];
    return Buffer.from(`${JSON.stringify({ op: verb, key: guardKey(0), rest: line.toString("latin1").slice(0, 200) })}\n`);
  }
  return Buffer.concat([line, Buffer.from("\n")]);
}

/** The request the node will see for `bytes`, framed and parsed with the node's own code; undefined unless exactly one. */
function parseProbe(bytes: Buffer, authenticated: boolean): Request | undefined {
  const framer = new Framer({ maxLine: authenticated ? MAX_PEER_LINE_BYTES : DEFAULT_MAX_LINE });
  const frames = framer.push(bytes);
  if (frames.length !== 1 || framer.buffered !== 0) return undefined;
  // Back between requests (not inside a RESP array or a discarded line): the next request is framed alone.
  const next = framer.push(Buffer.from("PING\n"));
  if (next.length !== 1 || parseFrame(next[0]).command !== "PING") return undefined;
  return parseFrame(frames[0], { maxLine: DEFAULT_MAX_LINE });
}

function anyOf(alternatives: Iterable<string>): RegExp {
  return new RegExp(`^(${[...new Set(alternatives)].join("|")})$`);
}

function errorReply(code: string): string {
  return `ERR ${code}( .*)?`;
}

/** What a leader (or a node that does not lead the key) may answer a valid FWD, by operation. */
const FWD_REPLIES: Record<KeyRequest["op"], string[]> = {
  put: ["OK"],
  delete: ["DELETED", "NOT_FOUND"],
  get: ["VALUE [A-Za-z0-9+/]*={0,2}", "NOT_FOUND"],
};
const FWD_REFUSALS = "ERR (NOT_LEADER|UNAVAILABLE|TIMEOUT) .*";

/** Errors other than CodecError thrown by decodeMessage (a finding of its own). */
const decoderSurprises: string[] = [];

/** How the node answers a REPLICATE line's text as this session (REACHES: it is handed to the replica). */
function replicateOutcome(text: string, s: Session): string {
  let message: PeerMessage;
  try {
    message = decodeMessage(text);
  } catch (error) {
    // The node answers BAD_REQUEST for anything thrown; anything but a CodecError is still a decoder bug.
    if (!(error instanceof CodecError)) decoderSurprises.push(`${(error as Error).name}: ${(error as Error).message} for ${text.slice(0, 120)}`);
    return "BAD_REQUEST";
  }
  if (message.from !== s.peer || message.to !== s.node.id) return "FORBIDDEN";
  if (!s.node.partitions.includes(message.partition)) return "UNAVAILABLE";
  return "REACHES";
}

/** Plans one probe: what it is and what may come back; undefined when it must be re-rolled. */
function plan(s: Session, bytes: Buffer): Probe | undefined {
  const request = parseProbe(bytes, s.peer !== undefined);
  if (request === undefined) return undefined;
  const label = bytes.toString("latin1").slice(0, 160);
  const base = { bytes, dialect: request.dialect, label, touches: [] as string[] };
  if (request.command === "INVALID") return { ...base, expect: anyOf([errorReply(request.code)]) };
  // Client commands are the client fuzzer's business; AUTH is phase 2's.
  if (request.command !== "PEER" || request.name === "AUTH") return undefined;
  if (s.peer === undefined) return { ...base, expect: anyOf([errorReply("FORBIDDEN")]) };
  if (!isUtf8(request.rest)) return { ...base, expect: anyOf([errorReply("BAD_REQUEST")]) };
  const text = request.rest.toString("utf8");
  // Every node replicates every partition here: a member is a member of each.
  const otherMember = s.member && s.peer !== s.node.id;
  switch (request.name) {
    case "REPLICATE": {
      const outcome = replicateOutcome(text, s);
      if (s.member && outcome === "REACHES") return undefined;
      return { ...base, expect: anyOf([outcome === "REACHES" ? "OK" : errorReply(outcome)]) };
    }
    case "SNAPSHOT": {
      const step = s.snapshots.peek(text);
      const known = (partition: string) => s.node.partitions.includes(partition);
      if (step.type === "complete" && known(step.snapshot.partition) && step.snapshot.index > 0 && otherMember) return undefined;
      if (step.type === "request" && known(step.partition) && s.member) return undefined;
      s.snapshots.accept(text, step);
      let reply: string;
      if (step.type === "error") reply = errorReply("BAD_REQUEST");
      else if (step.type === "request") reply = known(step.partition) && otherMember ? `OK|${errorReply("FORBIDDEN")}` : errorReply("FORBIDDEN");
      else if (step.type === "complete") reply = known(step.snapshot.partition) && otherMember ? "OK" : errorReply("FORBIDDEN");
      else reply = "OK";
      return { ...base, expect: anyOf([reply]) };
    }
    case "FWD": {
      const r = decodeForward(text);
      if (r !== undefined && r.op !== "get" && GUARDS.has(r.key)) return undefined;
      const replies: string[] = [];
      if (r === undefined) replies.push(errorReply("BAD_REQUEST"));
      else if (r.op === "get" && GUARDS.has(r.key)) {
        replies.push(`VALUE ${regexQuote(Buffer.from(GUARDS.get(r.key)!).toString("base64"))}`, FWD_REFUSALS);
      } else replies.push(...FWD_REPLIES[r.op], FWD_REFUSALS);
      const touches = r === undefined || r.op === "get" ? [] : [r.key];
      let fwd: FwdEffect | undefined;
      if (r !== undefined && r.op !== "get") fwd = { conn: s.conn, key: r.key, op: r.op, value: r.op === "put" ? r.value : EMPTY };
      return { ...base, expect: anyOf(replies), fwd, touches };
    }
    default:
      return undefined;
  }
}

function regexQuote(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/** A probe that is safe as every identity: refused as malformed, or FORBIDDEN unauthenticated. */
function safeProbe(s: Session): Probe {
  const probe = plan(s, Buffer.from("REPLICATE {}\n"));
  assert.ok(probe !== undefined);
  return probe;
}

/** Every probe of one fuzz connection, generated up front. */
function planSession(d: Dice, s: Session, count: number): { probes: Probe[]; rerolls: number } {
  const probes: Probe[] = [];
  let rerolls = 0;
  const bigAt = s.big > 0 ? d.int(count) : -1;
  for (let i = 0; i < count; i++) {
    let probe: Probe | undefined;
    for (let attempt = 0; attempt < MAX_REROLLS && probe === undefined; attempt++) {
      probe = plan(s, wrap(d, i === bigAt ? bigLine(d, s) : candidateLine(d, s)));
      if (probe === undefined) rerolls++;
    }
    probes.push(probe ?? safeProbe(s));
  }
  probes.push({ bytes: Buffer.from("PING\n"), dialect: "line", expect: /^PONG$/, label: "PING (the connection is still served)", touches: [] });
  return { probes, rerolls };
}

// ------------------------------------------------------------------ talking to nodes

/** A reply in line form: RESP and JSON replies are rewritten as the line dialect would say them. */
function replyText(dialect: Dialect, raw: Buffer | RespValue): string {
  if (Buffer.isBuffer(raw)) {
    const line = raw.toString("utf8");
    if (dialect !== "json") return line;
    const o = JSON.parse(line) as { status: string; code?: string; message?: string; value?: unknown };
    if (o.status === "error") return `ERR ${o.code} ${o.message}`;
    if (o.status === "not_found") return "NOT_FOUND";
    return typeof o.value === "string" ? o.value : "OK";
  }
  switch (raw.type) {
    case "simple":
    case "error":
      return raw.value;
    case "integer":
      return String(raw.value);
    case "bulk":
      return raw.value === null ? "NOT_FOUND" : raw.value.toString("utf8");
    default:
      return JSON.stringify(raw.value);
  }
}

async function readReply(client: LineClient, dialect: Dialect, timeoutMs = REPLY_TIMEOUT_MS): Promise<string> {
  return replyText(dialect, dialect === "resp" ? await client.readResp(timeoutMs) : await client.readLineBytes(timeoutMs));
}

async function connect(node: LocalNodeSpec): Promise<LineClient> {
  return await LineClient.connect(node.port, { host: node.host });
}

/** A real handshake as `peerId`; checks the server's proof too (the handshake is mutual). */
async function authenticate(client: LineClient, peerId: string, clientNonce: string): Promise<void> {
  const challenge = await client.request(`AUTH HELLO ${peerId} ${clientNonce}`);
  const [word, kind, serverNonce, serverProof] = challenge.split(" ");
  assert.is(`${word} ${kind}`, "AUTH CHALLENGE", challenge);
  assert.ok(isNonce(serverNonce), `server nonce ${serverNonce}`);
  assert.is(serverProof, proof(SECRET, { role: "server", peerId, clientNonce, serverNonce }), "the node proves it knows the secret");
  assert.is(await client.request(`AUTH PROOF ${proof(SECRET, { role: "client", peerId, clientNonce, serverNonce })}`), "OK");
}

/** What one fuzz connection saw. */
interface SessionReport {
  replies: string[];
  failures: string[];
}

/** Sends every probe (in random chunks, pipelined) and checks each reply in order. */
async function runSession(s: Session, probes: Probe[], d: Dice): Promise<SessionReport> {
  const report: SessionReport = { replies: [], failures: [] };
  const who = `conn ${s.conn} to ${s.node.id} as ${s.peer ?? "nobody"}`;
  let client: LineClient | undefined;
  try {
    client = await connect(s.node);
    if (s.peer !== undefined) await authenticate(client, s.peer, d.hex(32));
    const payload = Buffer.concat(probes.map((p) => p.bytes));
    const socket = client.socket;
    const writing = (async () => {
      let at = 0;
      while (at < payload.length && !socket.destroyed) {
        const size = 1 + d.int(d.chance(0.2) ? 16 : 65_536);
        const flushed = socket.write(payload.subarray(at, at + size));
        at += size;
        if (!flushed) {
          await new Promise((resolve) => {
            socket.once("drain", resolve);
            socket.once("close", resolve);
          });
        } else if (d.chance(0.1)) await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    for (const [i, probe] of probes.entries()) {
      let reply: string;
      try {
        reply = await readReply(client, probe.dialect);
      } catch (error) {
        report.failures.push(`${who}, probe ${i} ${JSON.stringify(probe.label)}: ${(error as Error).message}`);
        socket.destroy();
        break;
      }
      report.replies.push(reply);
      if (!probe.expect.test(reply)) {
        report.failures.push(`${who}, probe ${i} ${JSON.stringify(probe.label)}: got ${JSON.stringify(reply.slice(0, 200))}, expected ${probe.expect}`);
      }
    }
    await writing;
  } catch (error) {
    report.failures.push(`${who}: ${(error as Error).message}`);
  } finally {
    client?.destroy();
  }
  return report;
}

/** Runs `work` over `items`, at most `limit` at once, results in order. */
async function pool<T, R>(items: readonly T[], limit: number, work: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  async function lane(): Promise<void> {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index], index);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

function quote(failures: readonly string[]): string {
  const shown = failures.slice(0, MAX_QUOTED_FAILURES).join("\n  ");
  return `${failures.length} failures (seed ${SEED}):\n  ${shown}`;
}

// ------------------------------------------------------------------ the cluster

let cluster: TestCluster;
/** Partition view of every node before the fuzz: role, epochs and leader must not change. */
let baseline: Map<string, PartitionView[]>;
/** Connections each node had before the fuzz (its peers', and the INFO's own). */
const baselineConnections = new Map<string, number>();
const startRss = new Map<string, number>();
const peakRss = new Map<string, number>();
let sampler: NodeJS.Timeout | undefined;
const stats = { probes: 0, rerolls: 0, connections: 0, handshakeSteps: 0, fwdWrites: 0, modelKeys: 0 };
const started = Date.now();

interface PartitionView {
  partition: string;
  role: string;
  epoch: number;
  promisedEpoch: number;
  leader: string | null;
  commitIndex: number;
}

interface NodeInfo {
  partitions: PartitionView[];
  connections: number;
}

async function info(id: string): Promise<NodeInfo> {
  return JSON.parse(await cluster.send(id, "INFO")) as NodeInfo;
}

async function views(): Promise<Map<string, PartitionView[]>> {
  const out = new Map<string, PartitionView[]>();
  for (const spec of cluster.specs) {
    const parts = (await info(spec.id)).partitions.map((p) => ({
      partition: p.partition,
      role: p.role,
      epoch: p.epoch,
      promisedEpoch: p.promisedEpoch,
      leader: p.leader,
      commitIndex: p.commitIndex,
    }));
    out.set(spec.id, parts.sort((a, b) => a.partition.localeCompare(b.partition)));
  }
  return out;
}

/** Resident memory of a process, in bytes (/proc/<pid>/status VmRSS). */
function rss(pid: number): number {
  const kb = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  assert.ok(kb !== null, "VmRSS in /proc status");
  return Number(kb[1]) * 1024;
}

function mib(bytes: number): string {
  return `${(bytes / 1_048_576).toFixed(1)} MiB`;
}

function pidOf(id: string): number {
  const pid = cluster.cluster.pid(id);
  assert.ok(pid !== undefined, `node ${id} is running`);
  return pid;
}

function sampleRss(): void {
  for (const spec of cluster.specs) {
    const pid = cluster.cluster.pid(spec.id);
    if (pid === undefined) continue;
    try {
      peakRss.set(spec.id, Math.max(peakRss.get(spec.id) ?? 0, rss(pid)));
    } catch {
      // The process just exited; the liveness check reports it.
    }
  }
}

test.before(async () => {
  cluster = await startTestCluster({ nodes: 3, partitions: 3, replicas: 3 });
  const lines = [...GUARDS].map(([key, value]) => `PUT ${key} ${value}`);
  for (const [i, spec] of cluster.specs.entries()) {
    const mine = lines.filter((_, j) => j % cluster.specs.length === i);
    assert.equal(await cluster.sendLines(spec.id, mine), mine.map(() => "OK"), `guard keys written through ${spec.id}`);
  }
  baseline = await settledViews();
  for (const spec of cluster.specs) baselineConnections.set(spec.id, (await info(spec.id)).connections);
  for (const spec of cluster.specs) {
    startRss.set(spec.id, rss(pidOf(spec.id)));
    peakRss.set(spec.id, startRss.get(spec.id)!);
  }
  sampler = setInterval(sampleRss, 100);
});

test.after(async () => {
  if (sampler !== undefined) clearInterval(sampler);
  await cluster?.stop();
});

/**
 * The partition views once every node reports the same commit index for each
 * partition (a follower learns the leader's with the next heartbeat).
 */
async function settledViews(): Promise<Map<string, PartitionView[]>> {
  return await cluster.waitFor("every node to agree on each partition's commit index", async () => {
    const now = await views();
    const commits = new Map<string, Set<number>>();
    for (const parts of now.values()) {
      for (const p of parts) commits.set(p.partition, (commits.get(p.partition) ?? new Set()).add(p.commitIndex));
    }
    return [...commits.values()].every((set) => set.size === 1) ? now : undefined;
  }, WAIT_MS);
}

/** Commit indexes and roles as before the fuzz: nothing was written, nothing moved. */
async function assertNothingWritten(what: string): Promise<void> {
  const now = await settledViews();
  for (const [id, parts] of baseline) assert.equal(now.get(id), parts, `${what}: ${id}'s partitions unchanged (seed ${SEED})`);
}

// ------------------------------------------------------------------ 1. unauthenticated

test("unauthenticated: mutated REPLICATE, SNAPSHOT and FWD lines are refused and change nothing", async () => {
  const t0 = Date.now();
  const sessions: { s: Session; probes: Probe[]; d: Dice }[] = [];
  for (let c = 0; c < UNAUTH_CONNECTIONS; c++) {
    const d = dice(1, c);
    const s = newSession(stats.connections++, cluster.specs[c % cluster.specs.length], undefined, false, 0);
    const planned = planSession(d, s, 1 + d.int(MAX_PROBES));
    if (c < OVERLONG_CONNECTIONS) {
      // A line past the 1 MiB client limit in the middle: TOO_LARGE, and the connection goes on.
      const word = d.pick(["REPLICATE {", "SNAPSHOT DATA p1 ", "FWD PUT fz-overlong "]);
      const overlong = Buffer.concat([Buffer.from(word), Buffer.alloc(DEFAULT_MAX_LINE + d.int(65_536), 0x41), Buffer.from("\n")]);
      const probe = plan(s, overlong);
      assert.ok(probe !== undefined && probe.expect.test("ERR TOO_LARGE x"), "an overlong line is refused as TOO_LARGE");
      planned.probes.splice(d.int(planned.probes.length), 0, probe);
    }
    stats.rerolls += planned.rerolls;
    sessions.push({ s, probes: planned.probes, d });
  }
  const reports = await pool(sessions, CONCURRENCY, ({ s, probes, d }) => runSession(s, probes, d));
  const failures = reports.flatMap((r) => r.failures);
  const probes = sessions.reduce((sum, { probes }) => sum + probes.length, 0);
  stats.probes += probes;
  const codes = new Set(reports.flatMap((r) => r.replies.map((reply) => /^ERR ([A-Z_]+)/.exec(reply)?.[1] ?? reply)));
  console.log(`unauthenticated: ${sessions.length} connections, ${probes} probes in ${Date.now() - t0} ms, replies ${[...codes].sort().join(",")}`);
  assert.equal(failures, [], quote(failures));
  assert.ok(codes.has("FORBIDDEN") && codes.has("TOO_LARGE"), `FORBIDDEN and TOO_LARGE seen: ${[...codes]}`);
  await assertNothingWritten("after the unauthenticated fuzz");
});

// ------------------------------------------------------------------ 2. the handshake

/** What a connection's handshake is, as the contract says (src/net/auth.ts, the router). */
interface HandshakeModel {
  pending: { peerId: string; clientNonce: string; serverNonce: string } | undefined;
  /** Handshakes this connection started that are no longer pending (their proofs must fail now). */
  stale: { peerId: string; clientNonce: string; serverNonce: string }[];
  authenticated: boolean;
}

const PEER_ID = /^[A-Za-z0-9_.-]{1,64}$/;

/** Candidate AUTH (and other) lines for the current state of the handshake. */
function handshakeLine(d: Dice, m: HandshakeModel, conn: number): Buffer {
  const id = d.pick(["fuzzer", `hs-${conn}`, "n1", "n2", "n3", "a".repeat(64), "A_b.c-9"]);
  const nonce = d.hex(32);
  const target = m.pending ?? d.pick([...m.stale, { peerId: id, clientNonce: nonce, serverNonce: d.hex(32) }]);
  const right = proof(SECRET, { role: "client", ...target });
  const r = d.int(100);
  if (r < 22) return Buffer.from(`AUTH HELLO ${id} ${nonce}`);
  if (r < 42) {
    return d.chance(0.3) ? mutateBytes(d, Buffer.from(`AUTH HELLO ${id} ${nonce}`)) : Buffer.from(d.pick([
      "AUTH HELLO",
      `AUTH HELLO ${id}`,
      `AUTH HELLO ${id} ${nonce} extra`,
      `AUTH HELLO  ${id} ${nonce}`,
      `AUTH HELLO ${id}  ${nonce}`,
      `AUTH HELLO ${"a".repeat(65)} ${nonce}`,
      `AUTH HELLO ид ${nonce}`,
      `AUTH HELLO a/b ${nonce}`,
      `AUTH HELLO a\u0000b ${nonce}`,
      `AUTH HELLO ${id} ${nonce.slice(1)}`,
      `AUTH HELLO ${id} ${nonce}0`,
      `AUTH HELLO ${id} ${nonce.toUpperCase()}`,
      `AUTH HELLO ${id} ${"g".repeat(32)}`,
      `AUTH hello ${id} ${nonce}`,
      `AUTH HELLO ${id} ${"0".repeat(10_000)}`,
      `AUTH HELLO ${"x".repeat(10_000)} ${nonce}`,
      `AUTH HELLO ${id} -${nonce.slice(1)}`,
    ]));
  }
  if (r < 64) {
    const wrong = d.pick([
      d.hex(64),
      right.slice(0, 10) + (right[10] === "0" ? "1" : "0") + right.slice(11),
      right.toUpperCase(),
      right.slice(1),
      `${right}0`,
      `${right} x`,
      ` ${right}`,
      proof(SECRET, { role: "server", ...target }), // reflection of the server's proof
      proof(SECRET, { role: "client", ...target, peerId: `${target.peerId}x` }),
      proof(SECRET, { role: "client", ...target, clientNonce: target.serverNonce, serverNonce: target.clientNonce }),
      proof(`${SECRET}2`, { role: "client", ...target }),
      proof("", { role: "client", ...target }),
      "",
    ]);
    return d.chance(0.25) ? mutateBytes(d, Buffer.from(`AUTH PROOF ${right}`)) : Buffer.from(`AUTH PROOF ${wrong}`);
  }
  if (r < 70) return Buffer.from(`AUTH PROOF ${right}`); // right only if this handshake is pending
  if (r < 82) {
    return Buffer.from(d.pick([
      "AUTH",
      "AUTH ",
      `AUTH CHALLENGE ${nonce} ${right}`,
      "AUTH OK",
      `AUTH PROOF ${right} ${right}`,
      `AUTH PROOF`,
      `AUTH HELLO ${id} ${nonce} AUTH PROOF ${right}`,
    ]));
  }
  return Buffer.from("REPLICATE {}");
}

/** The reply the model expects for `request`, and the state change once the reply is known. */
function expectHandshake(m: HandshakeModel, request: Request): { expect: RegExp; apply: (reply: string) => void } {
  const none = () => {};
  if (request.command === "INVALID") return { expect: anyOf([errorReply(request.code)]), apply: none };
  assert.is(request.command, "PEER");
  if (request.command !== "PEER") throw new Error("unreachable");
  if (request.name !== "AUTH") {
    return { expect: anyOf([errorReply(m.authenticated ? "BAD_REQUEST" : "FORBIDDEN")]), apply: none };
  }
  const refuse = {
    expect: anyOf([errorReply("FORBIDDEN")]),
    apply: () => {
      if (m.pending !== undefined) m.stale.push(m.pending);
      m.pending = undefined;
    },
  };
  const words = request.rest.toString("latin1").split(" ");
  if (words[0] === "HELLO" && words.length === 3) {
    const [, peerId, clientNonce] = words;
    if (!PEER_ID.test(peerId) || !isNonce(clientNonce)) return refuse;
    return {
      expect: /^AUTH CHALLENGE [0-9a-f]{32} [0-9a-f]{64}$/,
      apply: (reply) => {
        const [, , serverNonce, serverProof] = reply.split(" ");
        assert.is(serverProof, proof(SECRET, { role: "server", peerId, clientNonce, serverNonce }), "the server's proof is right");
        if (m.pending !== undefined) m.stale.push(m.pending);
        m.pending = { peerId, clientNonce, serverNonce };
      },
    };
  }
  if (words[0] === "PROOF" && words.length === 2 && m.pending !== undefined) {
    if (words[1] !== proof(SECRET, { role: "client", ...m.pending })) return refuse;
    return {
      expect: /^OK$/,
      apply: () => {
        m.stale.push(m.pending!);
        m.pending = undefined;
        m.authenticated = true;
      },
    };
  }
  return refuse;
}

test("handshake: malformed, out-of-order, repeated and wrong AUTH lines never authenticate", async () => {
  const t0 = Date.now();
  let authenticatedConnections = 0;
  let refused = 0;
  const failures: string[] = [];
  await pool(Array.from({ length: HANDSHAKE_CONNECTIONS }, (_, c) => c), CONCURRENCY, async (c) => {
    const d = dice(2, c);
    const node = cluster.specs[c % cluster.specs.length];
    const m: HandshakeModel = { pending: undefined, stale: [], authenticated: false };
    const client = await connect(node);
    try {
      const steps = 1 + d.int(MAX_HANDSHAKE_STEPS);
      for (let step = 0; step < steps; step++) {
        let bytes: Buffer | undefined;
        let request: Request | undefined;
        for (let attempt = 0; attempt < MAX_REROLLS && request === undefined; attempt++) {
          const line = handshakeLine(d, m, c);
          for (let i = 0; i < line.length; i++) if (line[i] === 0x0a) line[i] = 0x20;
          bytes = d.chance(0.1) ? wrap(d, line) : Buffer.concat([line, Buffer.from("\n")]);
          request = parseProbe(bytes, m.authenticated);
          // The model knows AUTH, "REPLICATE {}" (FORBIDDEN or BAD_REQUEST) and parser errors; anything else is re-rolled.
          const known = request !== undefined && (request.command === "INVALID" || (request.command === "PEER" &&
            (request.name === "AUTH" || (request.name === "REPLICATE" && ["", "{}"].includes(request.rest.toString("latin1"))))));
          if (!known) request = undefined;
        }
        if (request === undefined || bytes === undefined) continue;
        const { expect, apply } = expectHandshake(m, request);
        client.write(bytes);
        const reply = await readReply(client, request.dialect);
        stats.handshakeSteps++;
        if (!expect.test(reply)) {
          failures.push(`handshake conn ${c} on ${node.id}, step ${step} ${JSON.stringify(bytes.toString("latin1").slice(0, 160))}: got ${JSON.stringify(reply)}, expected ${expect}`);
          return;
        }
        if (/^ERR FORBIDDEN/.test(reply)) refused++;
        apply(reply);
      }
      // The last word: is this connection a peer? Only if the model says a right proof was accepted.
      const reply = await client.request("REPLICATE {}");
      const expected = m.authenticated ? /^ERR BAD_REQUEST / : /^ERR FORBIDDEN /;
      if (!expected.test(reply)) failures.push(`handshake conn ${c} on ${node.id}: REPLICATE after the handshake got ${JSON.stringify(reply)}, expected ${expected}`);
      if (m.authenticated) authenticatedConnections++;
    } catch (error) {
      failures.push(`handshake conn ${c} on ${node.id}: ${(error as Error).message}`);
    } finally {
      client.destroy();
    }
  });
  stats.connections += HANDSHAKE_CONNECTIONS;
  console.log(`handshake: ${HANDSHAKE_CONNECTIONS} connections, ${stats.handshakeSteps} steps in ${Date.now() - t0} ms, ${refused} refused, ${authenticatedConnections} authenticated with the right proof`);
  assert.equal(failures, [], quote(failures));
  assert.ok(refused > HANDSHAKE_CONNECTIONS, `the handshake fuzz was refused often: ${refused}`);
});

test("handshake: replayed, reflected, superseded and oversized proofs are refused", async () => {
  const [a, b, c] = cluster.specs;
  const d = dice(5, 0);
  const clientNonce = d.hex(32);
  const forbidden = /^ERR FORBIDDEN /;
  async function hello(client: LineClient, peerId: string, nonce: string): Promise<{ serverNonce: string; serverProof: string }> {
    const reply = await client.request(`AUTH HELLO ${peerId} ${nonce}`);
    const [, , serverNonce, serverProof] = reply.split(" ");
    assert.match(reply, /^AUTH CHALLENGE /);
    return { serverNonce, serverProof };
  }
  async function notPeer(client: LineClient, what: string): Promise<void> {
    assert.match(await client.request("REPLICATE {}"), forbidden, `${what}: the connection is not a peer`);
  }

  // Two connections with the same client nonce get different challenges; one's proof fails on the other.
  const first = await connect(a);
  const second = await connect(a);
  const one = await hello(first, "fuzzer", clientNonce);
  const two = await hello(second, "fuzzer", clientNonce);
  assert.is.not(one.serverNonce, two.serverNonce, "every challenge is fresh");
  const firstProof = proof(SECRET, { role: "client", peerId: "fuzzer", clientNonce, serverNonce: one.serverNonce });
  assert.match(await second.request(`AUTH PROOF ${firstProof}`), forbidden, "a proof for another connection's challenge");
  await notPeer(second, "replayed proof");
  assert.is(await first.request(`AUTH PROOF ${firstProof}`), "OK", "the same proof on its own connection");
  assert.match(await first.request("REPLICATE {}"), /^ERR BAD_REQUEST /, "and that connection is a peer");
  // An accepted proof, replayed on new connections to the same and to another node.
  for (const node of [a, b]) {
    const replay = await connect(node);
    await hello(replay, "fuzzer", clientNonce);
    assert.match(await replay.request(`AUTH PROOF ${firstProof}`), forbidden, `an accepted proof replayed on ${node.id}`);
    await notPeer(replay, "replayed accepted proof");
    assert.match(await replay.request(`AUTH PROOF ${firstProof}`), forbidden, "again, with no handshake pending");
    replay.destroy();
  }
  // Reflection: the server's own proof sent back as the client's.
  const reflect = await connect(c);
  const challenge = await hello(reflect, "n2", clientNonce);
  assert.match(await reflect.request(`AUTH PROOF ${challenge.serverProof}`), forbidden, "the server's proof reflected");
  await notPeer(reflect, "reflection");
  // A wrong proof burns the challenge: the right one afterwards is refused too.
  const burnt = await hello(reflect, "n2", clientNonce);
  assert.match(await reflect.request(`AUTH PROOF ${"0".repeat(64)}`), forbidden);
  const late = proof(SECRET, { role: "client", peerId: "n2", clientNonce, serverNonce: burnt.serverNonce });
  assert.match(await reflect.request(`AUTH PROOF ${late}`), forbidden, "the right proof after a wrong one");
  await notPeer(reflect, "burnt challenge");
  // HELLO twice: only the second challenge counts.
  const before = await hello(reflect, "n3", clientNonce);
  await hello(reflect, "n3", d.hex(32));
  const superseded = proof(SECRET, { role: "client", peerId: "n3", clientNonce, serverNonce: before.serverNonce });
  assert.match(await reflect.request(`AUTH PROOF ${superseded}`), forbidden, "a proof for a superseded challenge");
  await notPeer(reflect, "superseded challenge");
  // A HELLO far past the client line limit, then a normal refusal: the connection stays in sync.
  reflect.write(`AUTH HELLO ${"x".repeat(DEFAULT_MAX_LINE + 10)} ${clientNonce}\n`);
  assert.match(await reflect.readLine(), /^ERR TOO_LARGE /, "an oversized HELLO");
  await notPeer(reflect, "oversized HELLO");
  // PROOF before any HELLO, and AUTH in the JSON and RESP dialects.
  const fresh = await connect(b);
  assert.match(await fresh.request(`AUTH PROOF ${firstProof}`), forbidden, "PROOF before HELLO");
  assert.match(await fresh.request('{"op":"AUTH","key":"HELLO"}'), /"code":"FORBIDDEN"/, "AUTH as JSON");
  const resp = await fresh.command(["AUTH", "PROOF", firstProof]);
  assert.equal(resp.type, "error", "AUTH PROOF as RESP");
  assert.match(replyText("resp", resp), forbidden);
  await notPeer(fresh, "PROOF before HELLO");
  for (const client of [first, second, reflect, fresh]) client.destroy();
  await assertNothingWritten("after the handshake fuzz");
});

// ------------------------------------------------------------------ 3. authenticated

/** Every FWD write planned, with its reply. */
const fwdOutcomes: { effect: FwdEffect; reply: string }[] = [];
/** Per key: the connections whose FWD lines may write it, how many such lines, and how many the model follows. */
const touchedBy = new Map<string, { conns: Set<number>; lines: number; modeled: number }>();

test("authenticated: mutated peer lines get the contract's replies, the connection stays up, FWD writes land", async () => {
  const t0 = Date.now();
  const sessions: { s: Session; probes: Probe[]; d: Dice }[] = [];
  for (const [n, node] of cluster.specs.entries()) {
    const member = cluster.specs[(n + 1) % cluster.specs.length].id;
    const identities: [string, boolean][] = [["fuzzer", false], [node.id, false], [member, true]];
    for (const [peer, isMember] of identities) {
      for (let k = 0; k < AUTH_CONNECTIONS; k++) {
        const d = dice(3, sessions.length);
        const s = newSession(stats.connections++, node, peer, isMember, sessions.length % BIG_LINE_EVERY === 0 ? 1 : 0);
        const planned = planSession(d, s, 1 + d.int(MAX_PROBES));
        stats.rerolls += planned.rerolls;
        sessions.push({ s, probes: planned.probes, d });
      }
    }
  }
  for (const { s, probes } of sessions) {
    for (const probe of probes) {
      for (const key of probe.touches) {
        const touched = touchedBy.get(key) ?? { conns: new Set<number>(), lines: 0, modeled: 0 };
        touched.conns.add(s.conn);
        touched.lines++;
        if (probe.fwd?.key === key) touched.modeled++;
        touchedBy.set(key, touched);
      }
    }
  }
  const reports = await pool(sessions, CONCURRENCY, ({ s, probes, d }) => runSession(s, probes, d));
  const failures = reports.flatMap((r) => r.failures);
  const probes = sessions.reduce((sum, { probes }) => sum + probes.length, 0);
  stats.probes += probes;
  const codes = new Map<string, number>();
  for (const [i, report] of reports.entries()) {
    for (const [j, reply] of report.replies.entries()) {
      const code = /^ERR ([A-Z_]+)/.exec(reply)?.[1] ?? reply.split(" ")[0];
      codes.set(code, (codes.get(code) ?? 0) + 1);
      const effect = sessions[i].probes[j].fwd;
      if (effect !== undefined) fwdOutcomes.push({ effect, reply });
    }
  }
  console.log(`authenticated: ${sessions.length} connections, ${probes} probes in ${Date.now() - t0} ms, replies ${JSON.stringify(Object.fromEntries([...codes].sort()))}`);
  if (decoderSurprises.length > 0) console.log(`decodeMessage threw other than CodecError: ${decoderSurprises.slice(0, 5).join("; ")}`);
  assert.equal(failures, [], quote(failures));
  assert.equal(decoderSurprises, [], "decodeMessage throws only CodecError on garbage");
  for (const code of ["OK", "BAD_REQUEST", "FORBIDDEN", "UNAVAILABLE"]) assert.ok(codes.has(code), `the fuzz provoked ${code}`);

  // The FWD model: a key written by one connection only, with every write followed, holds what its last applied write says.
  const finals = new Map<string, Buffer | null | "unknown">();
  for (const { effect, reply } of fwdOutcomes) {
    const touched = touchedBy.get(effect.key);
    assert.ok(touched !== undefined, `a modeled write touches ${effect.key}`);
    if (touched.conns.size !== 1 || touched.lines !== touched.modeled) continue;
    const prior = finals.get(effect.key) ?? null;
    if (prior === "unknown") continue;
    if (effect.op === "put" && reply === "OK") finals.set(effect.key, effect.value);
    else if (effect.op === "delete" && (reply === "DELETED" || reply === "NOT_FOUND")) finals.set(effect.key, null);
    else if (/^ERR (NOT_LEADER|UNAVAILABLE|BAD_REQUEST) /.test(reply)) finals.set(effect.key, prior);
    else finals.set(effect.key, "unknown");
    if (reply === "OK" || reply === "DELETED") stats.fwdWrites++;
  }
  const leaders = new Map<string, string>();
  for (const partition of Object.keys(cluster.cluster.layout)) {
    const leader = await cluster.leaderOf(partition);
    assert.ok(leader !== undefined, `${partition} has a leader`);
    leaders.set(partition, leader);
  }
  const mismatches: string[] = [];
  const readers = new Map<string, LineClient>();
  try {
    for (const [key, expected] of finals) {
      if (expected === "unknown") continue;
      stats.modelKeys++;
      // Read where the key lives, so that forwarding (which has the same decoding) cannot hide a wrong key.
      const leader = leaders.get(cluster.partitionOf(key))!;
      let reader = readers.get(leader);
      if (reader === undefined) {
        reader = await connect(cluster.specs.find((s) => s.id === leader)!);
        readers.set(leader, reader);
      }
      const got = await reader.command(["GET", key]);
      const value = got.type === "bulk" ? got.value : undefined;
      const ok = expected === null ? value === null : value !== undefined && value !== null && value.equals(expected);
      if (!ok) {
        const shown = got.type === "bulk" && got.value !== null ? `a ${got.value.length}-byte value` : replyText("resp", got).slice(0, 80);
        mismatches.push(`${JSON.stringify(key)} on ${leader}: got ${shown}, expected ${expected === null ? "NOT_FOUND" : `a ${expected.length}-byte value`}`);
      }
    }
  } finally {
    for (const reader of readers.values()) reader.destroy();
  }
  console.log(`FWD model: ${stats.fwdWrites} writes applied, ${stats.modelKeys} keys checked, ${mismatches.length} wrong`);
  assert.ok(stats.modelKeys > 20, `the FWD model checked ${stats.modelKeys} keys`);
  assert.equal(mismatches, [], `a key written with FWD does not hold what the write said: ${quote(mismatches)}`);
});

// ------------------------------------------------------------------ 4. afterwards

test("afterwards: nodes alive, guard keys intact everywhere, new writes served, leaders and epochs kept, memory bounded, no error logged", async () => {
  for (const spec of cluster.specs) {
    const pid = pidOf(spec.id);
    assert.not.throws(() => process.kill(pid, 0), `node ${spec.id} (pid ${pid}) is alive`);
  }
  const keys = [...GUARDS.keys()];
  for (const spec of cluster.specs) {
    const replies = await cluster.sendLines(spec.id, keys.map((key) => `GET ${key}`));
    assert.equal(replies, keys.map((key) => `VALUE ${GUARDS.get(key)}`), `guard keys read through ${spec.id} (seed ${SEED})`);
  }
  for (const spec of cluster.specs) {
    const key = `after-${spec.id}-${SEED}`;
    assert.is(await cluster.send(spec.id, `PUT ${key} written-through-${spec.id}`), "OK", `a write through ${spec.id}`);
    for (const reader of cluster.specs) {
      assert.is(await cluster.send(reader.id, `GET ${key}`), `VALUE written-through-${spec.id}`, `read back through ${reader.id}`);
    }
  }
  // Epochs and leaders as before: nothing a peer sent fenced or moved a leader.
  const now = await views();
  for (const [id, parts] of baseline) {
    const strip = (p: PartitionView) => ({ ...p, commitIndex: 0 });
    assert.equal(now.get(id)!.map(strip), parts.map(strip), `${id}: roles, epochs, promised epochs and leaders unchanged (seed ${SEED})`);
  }
  // Every fuzz connection is gone on the server side too.
  await cluster.waitFor("the nodes to forget the fuzz connections", async () => {
    for (const spec of cluster.specs) if ((await info(spec.id)).connections > baselineConnections.get(spec.id)!) return undefined;
    return true;
  }, WAIT_MS);
  sampleRss();
  const lines: string[] = [];
  for (const spec of cluster.specs) {
    const start = startRss.get(spec.id)!;
    const peak = peakRss.get(spec.id)!;
    const end = rss(pidOf(spec.id));
    lines.push(`${spec.id} ${mib(start)} -> peak ${mib(peak)}, now ${mib(end)}`);
    assert.ok(peak - start < MAX_RSS_GROWTH, `${spec.id}: peak RSS ${mib(peak)} vs ${mib(start)} before the fuzz`);
    assert.ok(end - start < MAX_RSS_GROWTH, `${spec.id}: RSS ${mib(end)} vs ${mib(start)} before the fuzz`);
  }
  const errors: string[] = [];
  for (const spec of cluster.specs) {
    for (const line of fs.readFileSync(spec.logFile, "utf8").split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        const event = JSON.parse(line) as { level?: string; event?: string };
        if (event.level === "error") errors.push(`${spec.id}: ${line.slice(0, 300)}`);
        // Only lines refused before the replica, or snapshots it must refuse, were sent.
        if (event.event === "snapshot_installed") errors.push(`${spec.id} installed a snapshot: ${line.slice(0, 300)}`);
      } catch {
        errors.push(`${spec.id}: not JSON: ${line.slice(0, 300)}`);
      }
    }
  }
  console.log(`peer fuzz: ${stats.connections} connections, ${stats.probes} probes, ${stats.handshakeSteps} handshake steps, ${stats.rerolls} re-rolls, ${Math.round((Date.now() - started) / 1000)} s; RSS ${lines.join("; ")}`);
  assert.equal(errors, [], "no node logged an error or installed a snapshot");
});

// ------------------------------------------------------------------ known-shape bugs, last

test("UTF-8 keys keep their name across the peer paths (FWD and REPLICATE)", async () => {
  const problems: string[] = [];
  // REPLICATE: a write on the leader reaches the followers under the same key.
  const key = `utf8-ключ-🙂-${SEED}`;
  const leader = await cluster.leaderOf(cluster.partitionOf(key));
  assert.ok(leader !== undefined);
  assert.is(await cluster.send(leader, `PUT ${key} replicated`), "OK");
  const followers = cluster.others([leader]);
  const lacking = new Set(followers);
  await cluster.waitFor(`the followers ${followers} to hold ${key}`, async () => {
    for (const follower of lacking) {
      const [, reply] = await cluster.sendLines(follower, ["READONLY", `GET ${key}`]);
      if (reply === "VALUE replicated") lacking.delete(follower);
    }
    return lacking.size === 0 ? true : undefined;
  }, WAIT_MS).catch(() => undefined);
  for (const follower of lacking) {
    problems.push(`REPLICATE: follower ${follower} has no ${JSON.stringify(key)} (READONLY GET) after the leader ${leader} wrote it`);
  }
  // FWD: a peer's forwarded write, sent to the key's leader, is stored under the key it names.
  const fwdKeyName = `utf8-é-${SEED}`;
  const fwdLeader = await cluster.leaderOf(cluster.partitionOf(fwdKeyName));
  assert.ok(fwdLeader !== undefined);
  const peer = await connect(cluster.specs.find((s) => s.id === fwdLeader)!);
  try {
    await authenticate(peer, "fuzzer", dice(4, 0).hex(32));
    const line = encodeForward({ op: "put", key: fwdKeyName, value: Buffer.from("forwarded") });
    const reply = await peer.request(line);
    const stored = await cluster.send(fwdLeader, `GET ${fwdKeyName}`);
    if (reply !== "OK" || stored !== "VALUE forwarded") {
      problems.push(`FWD: ${JSON.stringify(line)} to the leader ${fwdLeader} answered ${JSON.stringify(reply)}, then GET answered ${JSON.stringify(stored)}`);
    }
  } finally {
    peer.destroy();
  }
  // Through a node that does not lead the key (the client-visible symptom of both).
  const throughKey = `utf8-ж-${SEED}`;
  const throughLeader = await cluster.leaderOf(cluster.partitionOf(throughKey));
  const other = cluster.others([throughLeader ?? ""])[0];
  const put = await cluster.send(other, `PUT ${throughKey} through`, REPLY_TIMEOUT_MS);
  const read = await cluster.send(throughLeader ?? other, `GET ${throughKey}`, REPLY_TIMEOUT_MS);
  if (put !== "OK" || read !== "VALUE through") {
    problems.push(`client PUT of ${JSON.stringify(throughKey)} through ${other} (not its leader ${throughLeader}): ${JSON.stringify(put)}, then GET on the leader: ${JSON.stringify(read)}`);
  }
  assert.equal(problems, [], `UTF-8 keys over the peer port:\n  ${problems.join("\n  ")}`);
});

test("a snapshot streamed by a peer that is not a member of the partition is not installed", async () => {
  // Destructive when it fails (the partition's state is replaced): the last test on this cluster.
  const key = guardKey(0);
  const partition = cluster.partitionOf(key);
  const leader = await cluster.leaderOf(partition);
  assert.ok(leader !== undefined);
  const node = cluster.specs.find((s) => s.id === leader)!;
  const before = (await info(leader)).partitions.find((p) => p.partition === partition)!;
  const planted = before.commitIndex + 1000;
  const lines = encodeSnapshot(partition, { epoch: before.promisedEpoch, index: planted, lastEpoch: before.epoch, state: new Map([["planted", Buffer.from("by a non-member")]]) });
  const replies: string[] = [];
  const peer = await connect(node);
  try {
    await authenticate(peer, "fuzzer", dice(4, 1).hex(32));
    // A refusal may come at any line (or the connection may be closed); what matters is the state after.
    for (const line of lines) replies.push(await peer.request(line).catch((error: Error) => error.message));
  } finally {
    peer.destroy();
  }
  // Ordered after the END's reply: a write to the same partition through its leader, then the state.
  const probeKey = Array.from({ length: 1000 }, (_, i) => `after-snapshot-${i}`).find((k) => cluster.partitionOf(k) === partition)!;
  const write = await cluster.send(leader, `PUT ${probeKey} x`, REPLY_TIMEOUT_MS).catch((error: Error) => error.message);
  const guard = await cluster.send(leader, `GET ${key}`, REPLY_TIMEOUT_MS).catch((error: Error) => error.message);
  const after = await info(leader).then((i) => i.partitions.find((p) => p.partition === partition), () => undefined);
  // Alive: INFO answers; dead: the process is gone (its exit is reaped a moment later).
  const alive = await cluster.waitFor(`${leader} to answer INFO or be gone`, async () => {
    if (cluster.cluster.pid(leader) === undefined) return false;
    return await info(leader).then(() => true, () => undefined);
  }, WAIT_MS).catch(() => false);
  assert.ok(
    alive && write === "OK" && guard === `VALUE ${GUARDS.get(key)}` && after !== undefined && after.commitIndex < planted && after.role === "leader",
    `${lines.map((l) => JSON.stringify(l)).join(", ")} from "fuzzer" (not a member) to the leader ${leader} of ${partition} ` +
      `(commitIndex ${before.commitIndex}) answered ${JSON.stringify(replies)}; then PUT ${probeKey}: ${JSON.stringify(write)}, ` +
      `GET ${key}: ${JSON.stringify(guard)}, ${leader} ${alive ? "alive" : "DEAD (see its log)"}, ${partition} there: ` +
      `${after === undefined ? "no INFO" : `role ${after.role}, commitIndex ${after.commitIndex}`}`,
  );
});

test.run();
