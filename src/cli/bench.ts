/**
 * `ringkv bench`: a pipelined load generator for ringkv and Redis.
 *
 * One client drives both (RESP2 by default), so a comparison measures the
 * servers, not two different clients. Each connection keeps exactly
 * `pipeline` requests in flight; replies are read by a small incremental
 * parser that checks every reply is the kind the request expects (an `ERR`
 * is an error, never a success). Latency goes into a fixed-size log-linear
 * histogram, so memory is bounded however long the run.
 *
 * @module
 */
import net from "node:net";
import process from "node:process";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";

/** Keys are `key:<n>`, `n` zero-padded so every key is exactly this long. */
export const KEY_BYTES = 16;
const KEY_PREFIX = "key:";
const KEY_DIGITS = KEY_BYTES - KEY_PREFIX.length;

/** Largest keyspace: every index must fit in the key's digits. */
export const MAX_KEYSPACE = 10 ** KEY_DIGITS;
/** Most connections one run opens. */
export const MAX_CONNECTIONS = 1024;
/** Most requests in flight per connection. */
export const MAX_PIPELINE = 4096;
/** Largest value: below the server's default 1 MiB line limit with room for the command. */
export const MAX_VALUE_SIZE = 1024 * 1024 - 1024;
/** Longest measured run, in seconds. */
export const MAX_DURATION_S = 3600;
/** How long a connection attempt may take. */
export const CONNECT_TIMEOUT_MS = 5_000;
/** After the measured window, how long in-flight requests get to finish. */
export const DRAIN_TIMEOUT_MS = 5_000;
/** A run with requests in flight and no reply for this long has stalled and fails. */
export const STALL_TIMEOUT_MS = 10_000;
/** Distinct error texts kept for the report. */
export const MAX_ERROR_SAMPLES = 5;
/** Bytes of an error reply kept for the report. */
export const ERROR_TEXT_LIMIT = 200;
/** Random printable bytes values are sliced from (a slice starts anywhere in the first this-many bytes). */
const VALUE_POOL_SPAN = 64 * 1024;

// ---------------------------------------------------------------------------
// Latency histogram
// ---------------------------------------------------------------------------

/** Values below this many nanoseconds get one bucket each. */
const LINEAR_LIMIT = 128;
/** Buckets per power of two above LINEAR_LIMIT: a bucket is at most 1/64 (1.6 %) wide. */
const SUB_BUCKETS = 64;
const SUB_BITS = 6;
const FIRST_EXPONENT = 7; // log2(LINEAR_LIMIT)
/** Highest power of two tracked: 2^43 ns is about 2.4 hours; anything above lands in the last bucket. */
const LAST_EXPONENT = 42;
/** Buckets in every {@linkcode LatencyHistogram}: fixed, so memory is bounded. */
export const HISTOGRAM_BUCKETS = LINEAR_LIMIT + (LAST_EXPONENT - FIRST_EXPONENT + 1) * SUB_BUCKETS;

/**
 * A log-linear latency histogram in nanoseconds (HDR-like): exact below
 * 128 ns, then 64 buckets per power of two, so every reported percentile is
 * within 1.6 % of the true value. Fixed memory ({@linkcode HISTOGRAM_BUCKETS} counters).
 */
export class LatencyHistogram {
  /** Count per bucket. */
  readonly counts: Float64Array = new Float64Array(HISTOGRAM_BUCKETS);
  /** Values recorded. */
  count = 0;
  /** Sum of recorded values (ns), for the mean. */
  sum = 0;
  /** Largest value recorded (ns), exact. */
  max = 0;

  /** Records one latency of `ns` nanoseconds (negative values count as 0). */
  record(ns: number): void {
    const value = ns > 0 ? Math.round(ns) : 0;
    this.counts[bucketOf(value)]++;
    this.count++;
    this.sum += value;
    if (value > this.max) this.max = value;
  }

  /** Adds every value of `other` to this histogram. */
  merge(other: LatencyHistogram): void {
    for (let i = 0; i < HISTOGRAM_BUCKETS; i++) this.counts[i] += other.counts[i];
    this.count += other.count;
    this.sum += other.sum;
    if (other.max > this.max) this.max = other.max;
  }

  /** Forgets everything recorded (the end of a warmup). */
  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.sum = 0;
    this.max = 0;
  }

  /**
   * The value (ns) at quantile `q` (0..1): the upper edge of the bucket
   * holding the ceil(q × count)-th smallest value, never above the exact max.
   * 0 when empty.
   */
  percentile(q: number): number {
    assert(q >= 0 && q <= 1, `quantile out of range: ${q}`);
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < HISTOGRAM_BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.min(bucketUpperBound(i), this.max);
    }
    return this.max;
  }

  /** Mean of recorded values (ns); 0 when empty. */
  mean(): number {
    return this.count === 0 ? 0 : this.sum / this.count;
  }
}

/** The bucket index of a non-negative integer `value` (ns). */
export function bucketOf(value: number): number {
  if (value < LINEAR_LIMIT) return value;
  let exponent = Math.floor(Math.log2(value));
  // Math.log2 may be off by one near powers of two; correct it exactly.
  if (2 ** exponent > value) exponent--;
  else if (2 ** (exponent + 1) <= value) exponent++;
  if (exponent > LAST_EXPONENT) return HISTOGRAM_BUCKETS - 1;
  const sub = Math.floor(value / 2 ** (exponent - SUB_BITS)); // in [64, 128)
  return LINEAR_LIMIT + (exponent - FIRST_EXPONENT) * SUB_BUCKETS + (sub - SUB_BUCKETS);
}

/** The largest value (ns) that falls into bucket `index`. */
export function bucketUpperBound(index: number): number {
  assert(index >= 0 && index < HISTOGRAM_BUCKETS, `bucket out of range: ${index}`);
  if (index < LINEAR_LIMIT) return index;
  const offset = index - LINEAR_LIMIT;
  const exponent = FIRST_EXPONENT + Math.floor(offset / SUB_BUCKETS);
  const sub = SUB_BUCKETS + (offset % SUB_BUCKETS);
  return (sub + 1) * 2 ** (exponent - SUB_BITS) - 1;
}

// ---------------------------------------------------------------------------
// Reply parsers
// ---------------------------------------------------------------------------

/** What a reply was, as far as a benchmark cares. */
export const ReplyKind = {
  /** `+OK` / `OK`: a write succeeded. */
  OK: 0,
  /** `$n ...` / `VALUE ...`: a read found the key. */
  VALUE: 1,
  /** `$-1` / `NOT_FOUND`: a read did not find the key (a miss, not an error). */
  NIL: 2,
  /** `-ERR ...` / `ERR ...`. */
  ERROR: 3,
  /** Anything else (an integer, another status line): unexpected for SET/GET. */
  OTHER: 4,
} as const;
/** One of {@linkcode ReplyKind}'s values. */
export type ReplyKind = (typeof ReplyKind)[keyof typeof ReplyKind];

/** Called once per complete reply; `text` is set for ERROR and OTHER (at most {@linkcode ERROR_TEXT_LIMIT} bytes). */
export type ReplyHandler = (kind: ReplyKind, text: string | undefined) => void;

/** The server sent bytes that are not a valid reply: the run cannot continue on that connection. */
export class ReplyProtocolError extends Error {
  override name = "ReplyProtocolError";
}

/** An incremental reply parser: feed it chunks as they arrive; it calls the handler per reply. */
export interface ReplyParser {
  /** Parses `chunk`, calling the handler for each reply it completes. Throws {@linkcode ReplyProtocolError}. */
  feed(chunk: Buffer): void;
}

/** Longest RESP header line kept while it spans chunks (`-ERR ...` lines are the long ones). */
const RESP_HEADER_LIMIT = 64 * 1024;

/**
 * Incremental RESP2 reply parser for SET/GET replies: simple strings,
 * errors, integers and bulk strings (bulk bodies are skipped by length,
 * never copied). Arrays are not expected and are a protocol error.
 */
export class RespReplyParser implements ReplyParser {
  readonly #onReply: ReplyHandler;
  /** Bytes of a header line that started in an earlier chunk. */
  #partial: Buffer | null = null;
  /** Bytes of a bulk body (plus its CRLF) still to skip. */
  #bulkLeft = 0;

  /** A parser calling `onReply` once per reply. */
  constructor(onReply: ReplyHandler) {
    this.#onReply = onReply;
  }

  /** Parses `chunk`; see {@linkcode ReplyParser.feed}. */
  feed(chunk: Buffer): void {
    const length = chunk.length;
    let pos = 0;
    while (pos < length) {
      if (this.#bulkLeft > 0) {
        const take = Math.min(this.#bulkLeft, length - pos);
        this.#bulkLeft -= take;
        pos += take;
        if (this.#bulkLeft === 0) this.#onReply(ReplyKind.VALUE, undefined);
        continue;
      }
      const lf = chunk.indexOf(10, pos);
      if (lf === -1) {
        this.#keepPartial(chunk, pos, length);
        return;
      }
      if (this.#partial !== null) {
        const line = Buffer.concat([this.#partial, chunk.subarray(pos, lf)]);
        this.#partial = null;
        this.#header(line, 0, line.length);
      } else {
        this.#header(chunk, pos, lf);
      }
      pos = lf + 1;
    }
  }

  #keepPartial(chunk: Buffer, start: number, end: number): void {
    const piece = Buffer.from(chunk.subarray(start, end));
    this.#partial = this.#partial === null ? piece : Buffer.concat([this.#partial, piece]);
    if (this.#partial.length > RESP_HEADER_LIMIT) {
      throw new ReplyProtocolError(`RESP header line longer than ${RESP_HEADER_LIMIT} bytes`);
    }
  }

  /** Handles one header line `buf[start, end)` (the `\n` excluded, a trailing `\r` tolerated). */
  #header(buf: Buffer, start: number, end: number): void {
    if (end > start && buf[end - 1] === 13) end--;
    if (end <= start) throw new ReplyProtocolError("empty RESP line");
    const type = buf[start];
    if (type === 36 /* $ */) {
      if (buf[start + 1] === 45 /* - */) {
        this.#onReply(ReplyKind.NIL, undefined);
        return;
      }
      let size = 0;
      for (let i = start + 1; i < end; i++) {
        const digit = buf[i] - 48;
        if (digit < 0 || digit > 9) throw new ReplyProtocolError(`bad bulk length ${text(buf, start, end)}`);
        size = size * 10 + digit;
      }
      if (end === start + 1) throw new ReplyProtocolError("bulk length missing");
      this.#bulkLeft = size + 2; // the body and its CRLF
      return;
    }
    if (type === 43 /* + */) {
      const ok = end - start === 3 && buf[start + 1] === 79 && buf[start + 2] === 75; // "OK"
      this.#onReply(ok ? ReplyKind.OK : ReplyKind.OTHER, ok ? undefined : text(buf, start, end));
      return;
    }
    if (type === 45 /* - */) {
      this.#onReply(ReplyKind.ERROR, text(buf, start + 1, end));
      return;
    }
    if (type === 58 /* : */) {
      this.#onReply(ReplyKind.OTHER, text(buf, start, end));
      return;
    }
    throw new ReplyProtocolError(`unexpected RESP reply ${JSON.stringify(text(buf, start, end))}`);
  }
}

/** Bytes of a line-protocol reply's start kept to classify it (enough for `NOT_FOUND` and `VALUE `). */
const LINE_CLASSIFY_BYTES = 10;

/**
 * Incremental parser for the plain line protocol's replies (`OK`,
 * `VALUE <v>`, `NOT_FOUND`, `ERR ...`). Keeps only the start of each line,
 * so a long value costs a scan for `\n`, not a copy.
 */
export class LineReplyParser implements ReplyParser {
  readonly #onReply: ReplyHandler;
  /** The first bytes of the current line. */
  readonly #head: Buffer = Buffer.alloc(ERROR_TEXT_LIMIT);
  #headLength = 0;
  /** Bytes of the current line seen so far. */
  #lineLength = 0;
  /** The current line's last byte so far (to drop a `\r` before `\n`). */
  #lastByte = -1;
  /** Bytes of the current line to keep in `#head`. */
  #keep = LINE_CLASSIFY_BYTES;

  /** A parser calling `onReply` once per reply. */
  constructor(onReply: ReplyHandler) {
    this.#onReply = onReply;
  }

  /** Parses `chunk`; see {@linkcode ReplyParser.feed}. */
  feed(chunk: Buffer): void {
    const length = chunk.length;
    let pos = 0;
    while (pos < length) {
      const lf = chunk.indexOf(10, pos);
      const end = lf === -1 ? length : lf;
      if (end > pos) {
        // Keep the start of the line; lines that may be errors keep more, for the report.
        if (this.#lineLength === 0) this.#keep = bytesToKeep(chunk[pos]);
        const room = this.#keep - this.#headLength;
        if (room > 0) this.#headLength += chunk.copy(this.#head, this.#headLength, pos, Math.min(end, pos + room));
        this.#lineLength += end - pos;
        this.#lastByte = chunk[end - 1];
      }
      if (lf === -1) return;
      this.#finishLine();
      pos = lf + 1;
    }
  }

  #finishLine(): void {
    const length = this.#lineLength - (this.#lastByte === 13 ? 1 : 0);
    const head = this.#head;
    const headLength = Math.min(this.#headLength, length);
    this.#headLength = 0;
    this.#lineLength = 0;
    this.#lastByte = -1;
    if (length <= 0) throw new ReplyProtocolError("empty reply line");
    if (length === 2 && head[0] === 79 && head[1] === 75) {
      this.#onReply(ReplyKind.OK, undefined);
    } else if (startsWith(head, headLength, "VALUE") && (length === 5 || head[5] === 32)) {
      this.#onReply(ReplyKind.VALUE, undefined);
    } else if (length === 9 && startsWith(head, headLength, "NOT_FOUND")) {
      this.#onReply(ReplyKind.NIL, undefined);
    } else if (startsWith(head, headLength, "ERR") && (length === 3 || head[3] === 32)) {
      this.#onReply(ReplyKind.ERROR, head.toString("latin1", 0, headLength));
    } else {
      this.#onReply(ReplyKind.OTHER, head.toString("latin1", 0, headLength));
    }
  }
}

/** Lines starting like OK, VALUE or NOT_FOUND need only their start; others may be errors worth reporting. */
function bytesToKeep(firstByte: number): number {
  return firstByte === 79 || firstByte === 86 || firstByte === 78 ? LINE_CLASSIFY_BYTES : ERROR_TEXT_LIMIT;
}

function startsWith(buf: Buffer, length: number, prefix: string): boolean {
  if (length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (buf[i] !== prefix.charCodeAt(i)) return false;
  return true;
}

function text(buf: Buffer, start: number, end: number): string {
  return buf.toString("latin1", start, Math.min(end, start + ERROR_TEXT_LIMIT));
}

// ---------------------------------------------------------------------------
// Request encoding
// ---------------------------------------------------------------------------

/** The client dialects: RESP2 (drives Redis and ringkv alike) or ringkv's plain lines. */
export type BenchDialect = "resp" | "line";

const OP_PUT = 0;
const OP_GET = 1;

/** The key for `index` as bytes: `key:<index>`, exactly {@linkcode KEY_BYTES} long (what requests carry). */
export function encodeKey(index: number): Buffer {
  const buf = Buffer.alloc(KEY_BYTES);
  writeKey(buf, 0, index);
  return buf;
}

/** Writes `key:<index>` (exactly KEY_BYTES bytes) into `buf` at `offset`: the hot path, no allocation. */
function writeKey(buf: Buffer, offset: number, index: number): void {
  assert(Number.isInteger(index) && index >= 0 && index < MAX_KEYSPACE, `key index out of range: ${index}`);
  buf[offset] = 107; // k
  buf[offset + 1] = 101; // e
  buf[offset + 2] = 121; // y
  buf[offset + 3] = 58; // :
  let rest = index;
  for (let i = KEY_BYTES - 1; i >= KEY_PREFIX.length; i--) {
    buf[offset + i] = 48 + (rest % 10);
    rest = Math.floor(rest / 10);
  }
}

/** The key for `index` as a string (what {@linkcode encodeKey} encodes). */
export function keyName(index: number): string {
  return KEY_PREFIX + String(index).padStart(KEY_DIGITS, "0");
}

/** Encodes PUT/GET requests of one dialect and value size into a batch buffer. */
class RequestEncoder {
  readonly #putHead: Buffer;
  readonly #putMid: Buffer;
  readonly #putTail: Buffer;
  readonly #getHead: Buffer;
  readonly #getTail: Buffer;
  readonly #valueSize: number;
  readonly #pool: Buffer;
  /** Longest encoded request, to size batch buffers. */
  readonly maxRequestBytes: number;

  constructor(dialect: BenchDialect, valueSize: number) {
    this.#valueSize = valueSize;
    if (dialect === "resp") {
      this.#putHead = Buffer.from(`*3\r\n$3\r\nSET\r\n$${KEY_BYTES}\r\n`);
      this.#putMid = Buffer.from(`\r\n$${valueSize}\r\n`);
      this.#putTail = Buffer.from("\r\n");
      this.#getHead = Buffer.from(`*2\r\n$3\r\nGET\r\n$${KEY_BYTES}\r\n`);
      this.#getTail = Buffer.from("\r\n");
    } else {
      this.#putHead = Buffer.from("PUT ");
      this.#putMid = Buffer.from(" ");
      this.#putTail = Buffer.from("\n");
      this.#getHead = Buffer.from("GET ");
      this.#getTail = Buffer.from("\n");
    }
    this.#pool = printableBytes(VALUE_POOL_SPAN + valueSize);
    const put = this.#putHead.length + KEY_BYTES + this.#putMid.length + valueSize + this.#putTail.length;
    const get = this.#getHead.length + KEY_BYTES + this.#getTail.length;
    this.maxRequestBytes = Math.max(put, get);
  }

  /** Writes one request at `offset`; returns the offset after it. */
  write(buf: Buffer, offset: number, op: number, keyIndex: number): number {
    let at = offset;
    if (op === OP_PUT) {
      at += this.#putHead.copy(buf, at);
      writeKey(buf, at, keyIndex);
      at += KEY_BYTES;
      at += this.#putMid.copy(buf, at);
      const start = Math.floor(Math.random() * VALUE_POOL_SPAN);
      at += this.#pool.copy(buf, at, start, start + this.#valueSize);
      at += this.#putTail.copy(buf, at);
    } else {
      at += this.#getHead.copy(buf, at);
      writeKey(buf, at, keyIndex);
      at += KEY_BYTES;
      at += this.#getTail.copy(buf, at);
    }
    return at;
  }
}

const PRINTABLE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** `size` random printable bytes (letters and digits: safe in every dialect, no spaces to trim). */
function printableBytes(size: number): Buffer {
  const buf = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) buf[i] = PRINTABLE.charCodeAt(Math.floor(Math.random() * PRINTABLE.length));
  return buf;
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/** Options for {@linkcode runBench}. */
export interface BenchOptions {
  /** Server address. Defaults to 127.0.0.1. */
  host?: string;
  /** Server port. Defaults to 9001. */
  port?: number;
  /** Several servers' ports (on `host`): connection i goes to ports[i % length]. Overrides `port`. */
  ports?: readonly number[];
  /** Local address client sockets bind to. Defaults to 127.0.0.1 when `host` is a 127.x address, else none. */
  localAddress?: string;
  /** Connections. Defaults to 8. */
  connections?: number;
  /** Requests in flight per connection. Defaults to 1. */
  pipeline?: number;
  /** Value size in bytes. Defaults to 100. */
  valueSize?: number;
  /** Keys are `key:0` .. `key:<keyspace-1>`. Defaults to 100000. */
  keyspace?: number;
  /** Share of PUTs, 0..1. Defaults to 0.5. */
  ratio?: number;
  /** Measured seconds (ignored when `requests` is set). Defaults to 10. */
  durationS?: number;
  /** Measured requests instead of a duration. */
  requests?: number;
  /** Seconds of unmeasured load before measuring. Defaults to 1. */
  warmupS?: number;
  /** Client dialect. Defaults to "resp". */
  dialect?: BenchDialect;
  /** PUT every key of the keyspace first (so GETs hit). Defaults to false. */
  preload?: boolean;
  /** Keys in order 0, 1, 2, … instead of at random (loading). Defaults to false. */
  sequential?: boolean;
  /** Progress lines (preload) go here; silent when absent. */
  log?: (line: string) => void;
}

/** Latency summary in milliseconds. */
export interface LatencySummary {
  p50: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** The outcome of one run. */
export interface BenchResult {
  host: string;
  port: number;
  /** Every port connections went to (one unless `ports` was given). */
  ports: readonly number[];
  dialect: BenchDialect;
  connections: number;
  pipeline: number;
  valueSize: number;
  keyspace: number;
  ratio: number;
  /** Length of the measured window, seconds. */
  windowS: number;
  /** Successful replies in the window (GET misses included). */
  ops: number;
  opsPerSec: number;
  puts: number;
  gets: number;
  /** GETs that found nothing (`$-1` / `NOT_FOUND`). */
  misses: number;
  /** `ERR` replies and replies of the wrong kind, in the window. */
  errors: number;
  /** Up to {@linkcode MAX_ERROR_SAMPLES} distinct error texts. */
  errorSamples: string[];
  latencyMs: LatencySummary;
  /** Client CPU during the window, as a fraction of one core (near 1: the client may be the bottleneck). */
  clientCpu: number;
  /** Seconds the preload took, when asked for. */
  preloadS?: number;
  /** Set when the run could not complete (connection lost, stalled, protocol error). */
  failure?: string;
}

/** Resolved options: every field set. */
interface RunConfig {
  host: string;
  port: number;
  ports: readonly number[];
  localAddress: string | undefined;
  connections: number;
  pipeline: number;
  valueSize: number;
  keyspace: number;
  ratio: number;
  durationS: number;
  requests: number | undefined;
  warmupS: number;
  dialect: BenchDialect;
  sequential: boolean;
}

/** Summarizes a histogram (ns) in milliseconds. */
export function summarize(histogram: LatencyHistogram): LatencySummary {
  return {
    p50: histogram.percentile(0.5) / 1e6,
    p99: histogram.percentile(0.99) / 1e6,
    p999: histogram.percentile(0.999) / 1e6,
    max: histogram.max / 1e6,
    mean: histogram.mean() / 1e6,
  };
}

function nowNs(): number {
  return Number(process.hrtime.bigint());
}

/** Shared state of one run across its connections. */
class Run {
  readonly config: RunConfig;
  readonly encoder: RequestEncoder;
  readonly histogram = new LatencyHistogram();
  readonly connections: Connection[] = [];
  measuring = false;
  /** Start of the measured window (ns); requests sent before it are not counted. */
  measureStart = Infinity;
  /** End of the measured window (ns); replies after it are not counted. */
  measureEnd = Infinity;
  readonly warmupEnd: number;
  /** No new requests once set (see {@linkcode Run.stop}). */
  stopping = false;
  /** When `stopping` was set (ns). */
  stoppedAt = Infinity;
  /** The result has been taken: late socket events are ignored. */
  done = false;
  /** Requests-mode: measured requests still to send. */
  toIssue: number;
  /** Sequential keys: the next key index. */
  nextKey = 0;
  ops = 0;
  puts = 0;
  gets = 0;
  misses = 0;
  errors = 0;
  readonly errorSamples: string[] = [];
  lastCountedAt = 0;
  lastReplyAt: number;
  cpuAtStart: NodeJS.CpuUsage = process.cpuUsage();
  failure: string | undefined;
  #finish: (() => void) | undefined;
  readonly finished: Promise<void>;

  constructor(config: RunConfig) {
    this.config = config;
    this.encoder = new RequestEncoder(config.dialect, config.valueSize);
    const start = nowNs();
    this.warmupEnd = start + config.warmupS * 1e9;
    this.lastReplyAt = start;
    this.toIssue = config.requests ?? Infinity;
    this.finished = new Promise((resolve) => {
      this.#finish = resolve;
    });
    if (config.warmupS === 0) this.startMeasuring(start);
  }

  startMeasuring(now: number): void {
    assert(!this.measuring, "measuring twice");
    this.measuring = true;
    this.measureStart = now;
    if (this.config.requests === undefined) this.measureEnd = now + this.config.durationS * 1e9;
    this.histogram.reset();
    this.cpuAtStart = process.cpuUsage();
  }

  /** Called with the time a reply chunk arrived, before issuing more. */
  tick(now: number): void {
    if (!this.measuring && now >= this.warmupEnd) this.startMeasuring(now);
    if (this.measuring && now >= this.measureEnd) this.stop(now);
    if (this.stopping) this.maybeFinish();
  }

  /** No more requests from now on; the run ends when nothing is in flight. */
  stop(now: number): void {
    if (this.stopping) return;
    this.stopping = true;
    this.stoppedAt = now;
  }

  /** How many more requests a connection may send now, out of `want`. */
  allowance(want: number): number {
    if (this.stopping) return 0;
    if (!this.measuring) return want;
    const allowed = Math.min(want, this.toIssue);
    this.toIssue -= allowed;
    if (this.toIssue === 0) this.stop(nowNs());
    return allowed;
  }

  nextKeyIndex(): number {
    if (this.config.sequential) {
      const index = this.nextKey;
      this.nextKey = (this.nextKey + 1) % this.config.keyspace;
      return index;
    }
    return Math.floor(Math.random() * this.config.keyspace);
  }

  nextOp(): number {
    const ratio = this.config.ratio;
    if (ratio >= 1) return OP_PUT;
    if (ratio <= 0) return OP_GET;
    return Math.random() < ratio ? OP_PUT : OP_GET;
  }

  noteError(textOf: string): void {
    this.errors++;
    if (this.errorSamples.length < MAX_ERROR_SAMPLES && !this.errorSamples.includes(textOf)) {
      this.errorSamples.push(textOf);
    }
  }

  fail(reason: string): void {
    if (this.done) return;
    if (this.failure === undefined) this.failure = reason;
    this.stop(nowNs());
    this.#finish?.();
  }

  maybeFinish(): void {
    if (!this.stopping) return;
    for (const connection of this.connections) if (connection.inFlight > 0) return;
    this.#finish?.();
  }
}

/** One connection: a socket, its parser, and a ring of its in-flight requests. */
class Connection {
  readonly #run: Run;
  readonly #socket: net.Socket;
  readonly #parser: ReplyParser;
  readonly #capacity: number;
  readonly #sentAt: Float64Array;
  readonly #ops: Uint8Array;
  #head = 0;
  inFlight = 0;
  /** When the chunk being parsed arrived. */
  #now = 0;

  constructor(run: Run, socket: net.Socket) {
    this.#run = run;
    this.#socket = socket;
    this.#capacity = run.config.pipeline;
    this.#sentAt = new Float64Array(this.#capacity);
    this.#ops = new Uint8Array(this.#capacity);
    const onReply: ReplyHandler = (kind, replyText) => this.#onReply(kind, replyText);
    this.#parser = run.config.dialect === "resp" ? new RespReplyParser(onReply) : new LineReplyParser(onReply);
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
  }

  get socket(): net.Socket {
    return this.#socket;
  }

  /** Sends as many requests as the pipeline has room for. */
  fill(): void {
    const run = this.#run;
    const count = run.allowance(this.#capacity - this.inFlight);
    if (count === 0) return;
    const encoder = run.encoder;
    const batch = Buffer.allocUnsafe(count * encoder.maxRequestBytes);
    const sentAt = nowNs();
    let offset = 0;
    let slot = (this.#head + this.inFlight) % this.#capacity;
    for (let i = 0; i < count; i++) {
      const op = run.nextOp();
      offset = encoder.write(batch, offset, op, run.nextKeyIndex());
      this.#ops[slot] = op;
      this.#sentAt[slot] = sentAt;
      slot = slot + 1 === this.#capacity ? 0 : slot + 1;
    }
    this.inFlight += count;
    assert(this.inFlight <= this.#capacity, "more requests in flight than the pipeline allows");
    this.#socket.write(batch.subarray(0, offset));
  }

  #onData(chunk: Buffer): void {
    const run = this.#run;
    if (run.failure !== undefined) return;
    this.#now = nowNs();
    run.lastReplyAt = this.#now;
    try {
      this.#parser.feed(chunk);
    } catch (error) {
      run.fail(`connection to ${run.config.host}:${this.#socket.remotePort}: ${(error as Error).message}`);
      return;
    }
    run.tick(this.#now);
    this.fill();
  }

  #onReply(kind: ReplyKind, replyText: string | undefined): void {
    const run = this.#run;
    if (this.inFlight === 0) {
      throw new ReplyProtocolError(`reply with no request in flight (${kind}${replyText ? ` ${replyText}` : ""})`);
    }
    const slot = this.#head;
    const op = this.#ops[slot];
    const sentAt = this.#sentAt[slot];
    this.#head = slot + 1 === this.#capacity ? 0 : slot + 1;
    this.inFlight--;
    const now = this.#now;
    // Counted: sent inside the window and answered inside it.
    if (!run.measuring || sentAt < run.measureStart || now > run.measureEnd) return;
    if (kind === ReplyKind.ERROR) {
      run.noteError(`ERR reply: ${replyText ?? ""}`);
      return;
    }
    const expected = op === OP_PUT ? kind === ReplyKind.OK : kind === ReplyKind.VALUE || kind === ReplyKind.NIL;
    if (!expected) {
      run.noteError(`unexpected reply to ${op === OP_PUT ? "PUT" : "GET"}: ${replyText ?? `kind ${kind}`}`);
      return;
    }
    run.ops++;
    if (op === OP_PUT) run.puts++;
    else {
      run.gets++;
      if (kind === ReplyKind.NIL) run.misses++;
    }
    run.histogram.record(now - sentAt);
    run.lastCountedAt = now;
  }
}

function isLoopback(host: string): boolean {
  return host === "localhost" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function resolveConfig(options: BenchOptions): RunConfig {
  const host = options.host ?? "127.0.0.1";
  const ports = options.ports !== undefined && options.ports.length > 0 ? [...options.ports] : [options.port ?? 9001];
  const config: RunConfig = {
    host,
    port: ports[0],
    ports,
    localAddress: options.localAddress ?? (isLoopback(host) ? "127.0.0.1" : undefined),
    connections: options.connections ?? 8,
    pipeline: options.pipeline ?? 1,
    valueSize: options.valueSize ?? 100,
    keyspace: options.keyspace ?? 100_000,
    ratio: options.ratio ?? 0.5,
    durationS: options.durationS ?? 10,
    requests: options.requests,
    warmupS: options.warmupS ?? 1,
    dialect: options.dialect ?? "resp",
    sequential: options.sequential ?? false,
  };
  for (const port of config.ports) checkRange("port", port, 1, 65535, true);
  checkRange("connections", config.connections, 1, MAX_CONNECTIONS, true);
  checkRange("pipeline", config.pipeline, 1, MAX_PIPELINE, true);
  checkRange("value-size", config.valueSize, 1, MAX_VALUE_SIZE, true);
  checkRange("keyspace", config.keyspace, 1, MAX_KEYSPACE, true);
  checkRange("ratio", config.ratio, 0, 1, false);
  checkRange("duration", config.durationS, 0.001, MAX_DURATION_S, false);
  checkRange("warmup", config.warmupS, 0, MAX_DURATION_S, false);
  if (config.requests !== undefined) checkRange("requests", config.requests, 1, Number.MAX_SAFE_INTEGER, true);
  if (config.dialect !== "resp" && config.dialect !== "line") throw new RangeError(`dialect must be resp or line`);
  return config;
}

function checkRange(name: string, value: number, min: number, max: number, integer: boolean): void {
  if (!Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
    throw new RangeError(`--${name} must be ${integer ? "an integer" : "a number"} in [${min}, ${max}], got ${value}`);
  }
}

/** Opens one TCP connection with a deadline; TCP_NODELAY on. */
function connect(config: RunConfig, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: config.host, port, localAddress: config.localAddress });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connect to ${config.host}:${port} timed out after ${CONNECT_TIMEOUT_MS} ms`));
    }, CONNECT_TIMEOUT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`connect to ${config.host}:${port}: ${error.message}`));
    });
  });
}

/** Runs one configured load and returns what it measured; failures are reported in `failure`, not thrown. */
async function runOnce(config: RunConfig): Promise<BenchResult> {
  const settled = await Promise.allSettled(Array.from({ length: config.connections }, (_, i) => connect(config, config.ports[i % config.ports.length])));
  const sockets: net.Socket[] = [];
  for (const outcome of settled) if (outcome.status === "fulfilled") sockets.push(outcome.value);
  const refused = settled.find((outcome) => outcome.status === "rejected");
  if (refused !== undefined) {
    for (const socket of sockets) socket.destroy();
    return emptyResult(config, String((refused as PromiseRejectedResult).reason?.message ?? refused));
  }
  const run = new Run(config);
  for (const [i, socket] of sockets.entries()) {
    const connection = new Connection(run, socket);
    const port = config.ports[i % config.ports.length];
    run.connections.push(connection);
    socket.on("error", (error) => run.fail(`connection to ${config.host}:${port}: ${error.message}`));
    socket.on("close", () => {
      if (!run.done) run.fail(`${config.host}:${port} closed the connection (${connection.inFlight} in flight)`);
    });
  }
  // Duration mode: stop issuing at the window's end even if replies pause; then a drain deadline.
  const watchdog = setInterval(() => {
    const now = nowNs();
    run.tick(now);
    if (run.stopping && now > run.stoppedAt + DRAIN_TIMEOUT_MS * 1e6) {
      run.fail(`in-flight requests not answered within ${DRAIN_TIMEOUT_MS} ms of the end`);
    }
    const waiting = run.connections.some((c) => c.inFlight > 0);
    if (waiting && now - run.lastReplyAt > STALL_TIMEOUT_MS * 1e6) {
      run.fail(`no reply for ${STALL_TIMEOUT_MS} ms (server stalled?)`);
    }
  }, 50);
  for (const connection of run.connections) connection.fill();
  await run.finished;
  clearInterval(watchdog);
  const cpu = process.cpuUsage(run.cpuAtStart);
  const end = config.requests === undefined ? Math.min(run.measureEnd, nowNs()) : run.lastCountedAt;
  run.done = true;
  for (const socket of sockets) socket.destroy();
  const windowS = run.measuring ? Math.max(0, end - run.measureStart) / 1e9 : 0;
  return {
    ...baseResult(config),
    windowS,
    ops: run.ops,
    opsPerSec: windowS > 0 ? run.ops / windowS : 0,
    puts: run.puts,
    gets: run.gets,
    misses: run.misses,
    errors: run.errors,
    errorSamples: run.errorSamples,
    latencyMs: summarize(run.histogram),
    clientCpu: windowS > 0 ? (cpu.user + cpu.system) / 1e6 / windowS : 0,
    failure: run.failure,
  };
}

function baseResult(config: RunConfig): Pick<
  BenchResult,
  "host" | "port" | "ports" | "dialect" | "connections" | "pipeline" | "valueSize" | "keyspace" | "ratio"
> {
  return {
    host: config.host,
    port: config.port,
    ports: config.ports,
    dialect: config.dialect,
    connections: config.connections,
    pipeline: config.pipeline,
    valueSize: config.valueSize,
    keyspace: config.keyspace,
    ratio: config.ratio,
  };
}

function emptyResult(config: RunConfig, failure: string): BenchResult {
  return {
    ...baseResult(config),
    windowS: 0,
    ops: 0,
    opsPerSec: 0,
    puts: 0,
    gets: 0,
    misses: 0,
    errors: 0,
    errorSamples: [],
    latencyMs: { p50: 0, p99: 0, p999: 0, max: 0, mean: 0 },
    clientCpu: 0,
    failure,
  };
}

/** In-flight requests per connection while preloading (deeper than most runs: loading is not measured). */
export const PRELOAD_PIPELINE = 64;

/**
 * Runs a load against a RESP or line server and measures it: throughput,
 * latency percentiles, errors. With `preload`, first PUTs every key of the
 * keyspace once. Never throws for server trouble (see `failure`); throws
 * RangeError on invalid options.
 */
export async function runBench(options: BenchOptions = {}): Promise<BenchResult> {
  const config = resolveConfig(options);
  let preloadS: number | undefined;
  if (options.preload) {
    const loaded = await preloadKeys(config, options.log);
    if (loaded.failure !== undefined) return emptyResult(config, `preload: ${loaded.failure}`);
    preloadS = loaded.windowS;
  }
  const result = await runOnce(config);
  return preloadS === undefined ? result : { ...result, preloadS };
}

/** PUTs keys 0 .. keyspace-1 once each, pipelined; the result's windowS is the load time. */
async function preloadKeys(config: RunConfig, log: ((line: string) => void) | undefined): Promise<BenchResult> {
  log?.(`preloading ${config.keyspace} keys of ${config.valueSize} B on ${config.host}:${config.ports.join(",")}`);
  const loaded = await runOnce({
    ...config,
    ratio: 1,
    sequential: true,
    requests: config.keyspace,
    warmupS: 0,
    pipeline: Math.max(config.pipeline, PRELOAD_PIPELINE),
  });
  if (loaded.failure === undefined && loaded.errors > 0) {
    return { ...loaded, failure: `${loaded.errors} errors, e.g. ${loaded.errorSamples[0]}` };
  }
  if (loaded.failure === undefined && loaded.ops !== config.keyspace) {
    return { ...loaded, failure: `loaded ${loaded.ops} of ${config.keyspace} keys` };
  }
  log?.(`preloaded ${loaded.ops} keys in ${loaded.windowS.toFixed(2)} s (${Math.round(loaded.opsPerSec)} PUT/s)`);
  return loaded;
}

/** Loads keys 0 .. keyspace-1 (PUT each once, pipelined); used for memory measurements. */
export async function loadKeys(options: BenchOptions = {}): Promise<BenchResult> {
  const config = resolveConfig(options);
  return preloadKeys(config, options.log);
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/** `ringkv bench` usage text. */
export const BENCH_USAGE = `usage: ringkv bench [flags]

Drives a ringkv node (or Redis: the default dialect is RESP) with pipelined
PUT/GET load and reports ops/s, latency percentiles and errors.

  --host H            server address (127.0.0.1)
  --port P[,P...]     server port(s); connections round-robin over them (9001)
  --connections C     connections (8, at most ${MAX_CONNECTIONS})
  --pipeline P        requests in flight per connection (1, at most ${MAX_PIPELINE})
  --value-size B      value bytes (100)
  --keyspace N        keys key:0..key:N-1, 16 bytes each (100000)
  --ratio R           share of PUTs, 0..1 (0.5)
  --op put|get|mix    shorthand: ratio 1, 0 or 0.5
  --duration S        measured seconds (10)
  --requests N        measure N requests instead of a duration
  --warmup S          unmeasured seconds first (1)
  --dialect resp|line RESP2 (Redis-compatible) or ringkv's plain lines (resp)
  --preload           PUT every key first, so GETs hit
  --local-address A   bind client sockets to A (127.0.0.1 for loopback hosts)
  --json              print the result as one JSON object
  -h, --help          this text

Exit code: 0 ok; 1 the run failed or saw errors; 2 bad flags.`;

/** Parses `ringkv bench` flags into options; throws RangeError/TypeError on bad flags. */
export function parseBenchArgs(argv: readonly string[]): { options: BenchOptions; json: boolean; help: boolean } {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: false,
    options: {
      "host": { type: "string" },
      "port": { type: "string" },
      "connections": { type: "string" },
      "pipeline": { type: "string" },
      "value-size": { type: "string" },
      "keyspace": { type: "string" },
      "ratio": { type: "string" },
      "op": { type: "string" },
      "duration": { type: "string" },
      "requests": { type: "string" },
      "warmup": { type: "string" },
      "dialect": { type: "string" },
      "preload": { type: "boolean" },
      "local-address": { type: "string" },
      "json": { type: "boolean" },
      "help": { type: "boolean", short: "h" },
    },
  });
  if (values.ratio !== undefined && values.op !== undefined) throw new RangeError("give --ratio or --op, not both");
  if (values.duration !== undefined && values.requests !== undefined) {
    throw new RangeError("give --duration or --requests, not both");
  }
  let ratio = numberFlag("ratio", values.ratio);
  if (values.op !== undefined) {
    const ratios: Record<string, number> = { put: 1, get: 0, mix: 0.5 };
    if (!(values.op in ratios)) throw new RangeError(`--op must be put, get or mix, got ${values.op}`);
    ratio = ratios[values.op];
  }
  const dialect = values.dialect;
  if (dialect !== undefined && dialect !== "resp" && dialect !== "line") {
    throw new RangeError(`--dialect must be resp or line, got ${dialect}`);
  }
  const options: BenchOptions = {
    host: values.host,
    ports: values.port === undefined ? undefined : values.port.split(",").map((port) => numberFlag("port", port)!),
    localAddress: values["local-address"],
    connections: numberFlag("connections", values.connections),
    pipeline: numberFlag("pipeline", values.pipeline),
    valueSize: numberFlag("value-size", values["value-size"]),
    keyspace: numberFlag("keyspace", values.keyspace),
    ratio,
    durationS: numberFlag("duration", values.duration),
    requests: numberFlag("requests", values.requests),
    warmupS: numberFlag("warmup", values.warmup),
    dialect,
    preload: values.preload ?? false,
  };
  resolveConfig(options); // validates ranges now, so bad flags exit 2 before connecting
  return { options, json: values.json ?? false, help: values.help ?? false };
}

function numberFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (value.trim() === "" || !Number.isFinite(parsed)) throw new RangeError(`--${name} must be a number, got ${JSON.stringify(value)}`);
  return parsed;
}

/** Formats a result as the human-readable report. */
export function formatResult(result: BenchResult): string {
  const op = result.ratio === 1 ? "put" : result.ratio === 0 ? "get" : `mix (${Math.round(result.ratio * 100)} % put)`;
  const l = result.latencyMs;
  const lines = [
    `ringkv bench: ${result.dialect} ${result.host}:${result.ports.join(",")} op=${op} C=${result.connections} P=${result.pipeline} ` +
    `value=${result.valueSize} B keyspace=${result.keyspace} window=${result.windowS.toFixed(2)} s`,
  ];
  if (result.preloadS !== undefined) lines.push(`  preload      ${result.keyspace} keys in ${result.preloadS.toFixed(2)} s`);
  lines.push(
    `  ops/s        ${Math.round(result.opsPerSec)}  (${result.ops} ops: ${result.puts} put, ${result.gets} get)`,
    `  latency ms   p50 ${ms(l.p50)}  p99 ${ms(l.p99)}  p999 ${ms(l.p999)}  max ${ms(l.max)}  mean ${ms(l.mean)}`,
    `  errors       ${result.errors}${result.errorSamples.length > 0 ? `  e.g. ${result.errorSamples.join(" | ")}` : ""}`,
    `  misses       ${result.misses}`,
    `  client cpu   ${Math.round(result.clientCpu * 100)} % of one core`,
  );
  if (result.failure !== undefined) lines.push(`  FAILED       ${result.failure}`);
  return lines.join("\n");
}

function ms(value: number): string {
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(3);
}

/**
 * `ringkv bench` entry point; `argv` is the flags after `bench`. Returns the
 * exit code: 0 ok, 1 failed or errors seen, 2 bad flags.
 */
export async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseBenchArgs>;
  try {
    parsed = parseBenchArgs(argv);
  } catch (error) {
    process.stderr.write(`ringkv bench: ${(error as Error).message}\n\n${BENCH_USAGE}\n`);
    return 2;
  }
  if (parsed.help) {
    process.stdout.write(`${BENCH_USAGE}\n`);
    return 0;
  }
  const log = parsed.json ? undefined : (line: string) => process.stderr.write(`${line}\n`);
  const result = await runBench({ ...parsed.options, log });
  process.stdout.write(parsed.json ? `${JSON.stringify(result)}\n` : `${formatResult(result)}\n`);
  return result.failure !== undefined || result.errors > 0 ? 1 : 0;
}

/** Throws when an invariant does not hold: a bug in the benchmark, not the server. */
function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

// Runnable on its own too (`node dist/src/cli/bench.js ...`), before or without main.js.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2));
}
