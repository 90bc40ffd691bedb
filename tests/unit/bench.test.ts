import { suite } from "uvu";
import * as assert from "uvu/assert";
import {
  bucketOf,
  bucketUpperBound,
  HISTOGRAM_BUCKETS,
  KEY_BYTES,
  keyName,
  LatencyHistogram,
  LineReplyParser,
  main as benchMain,
  parseBenchArgs,
  ReplyKind,
  ReplyProtocolError,
  RespReplyParser,
  encodeKey,
} from "../../src/cli/bench.ts";
import {
  type ComparisonRow,
  DOCS_BEGIN,
  DOCS_END,
  type Measurement,
  parseSuiteArgs,
  renderMarkdown,
  replaceMarkedSection,
  type SuiteReport,
} from "../../src/cli/bench_suite.ts";

type Seen = [ReplyKind, string | undefined];

/** Feeds `bytes` to a parser split at `cut` (and whole when cut is 0), returning the replies seen. */
function parseWith(make: (onReply: (kind: ReplyKind, text: string | undefined) => void) => { feed(chunk: Buffer): void }, bytes: string, cuts: number[]): Seen[] {
  const seen: Seen[] = [];
  const parser = make((kind, text) => seen.push([kind, text]));
  const buf = Buffer.from(bytes, "latin1");
  let start = 0;
  for (const cut of [...cuts, buf.length]) {
    parser.feed(buf.subarray(start, cut));
    start = cut;
  }
  return seen;
}

// ---------------------------------------------------------------------------

const histogram = suite("latency histogram");

histogram("every value falls in a bucket whose bounds contain it and are at most 1/64 wide", () => {
  const values = [0, 1, 127, 128, 129, 255, 256, 1000, 65_535, 65_536, 1e6, 123_456_789, 2 ** 31, 2 ** 32 + 7, 2 ** 42 + 3];
  for (let i = 0; i < 2000; i++) values.push(Math.floor(Math.random() * 2 ** (Math.random() * 42)));
  for (const value of values) {
    const index = bucketOf(value);
    assert.ok(index >= 0 && index < HISTOGRAM_BUCKETS, `index ${index} for ${value}`);
    const upper = bucketUpperBound(index);
    const lower = index === 0 ? 0 : bucketUpperBound(index - 1) + 1;
    assert.ok(lower <= value && value <= upper, `${value} not in [${lower}, ${upper}] (bucket ${index})`);
    assert.ok(upper - lower + 1 <= Math.max(1, lower / 64 + 1), `bucket ${index} too wide: [${lower}, ${upper}]`);
  }
});

histogram("buckets are contiguous and increasing", () => {
  for (let i = 1; i < HISTOGRAM_BUCKETS; i++) {
    assert.is(bucketUpperBound(i - 1) + 1 <= bucketUpperBound(i), true, `bucket ${i}`);
    assert.is(bucketOf(bucketUpperBound(i)), i);
    assert.is(bucketOf(bucketUpperBound(i - 1) + 1), i);
  }
});

histogram("values beyond the last power of two land in the last bucket; max stays exact", () => {
  const h = new LatencyHistogram();
  h.record(2 ** 50);
  assert.is(h.counts[HISTOGRAM_BUCKETS - 1], 1);
  assert.is(h.max, 2 ** 50);
  assert.is(h.percentile(1), bucketUpperBound(HISTOGRAM_BUCKETS - 1));
});

histogram("percentiles of 1..100000 µs are within 1.6 % and never above the max", () => {
  const h = new LatencyHistogram();
  for (let us = 1; us <= 100_000; us++) h.record(us * 1000);
  for (const [q, exact] of [[0.5, 50_000e3], [0.99, 99_000e3], [0.999, 99_900e3], [1, 100_000e3]] as const) {
    const got = h.percentile(q);
    assert.ok(got >= exact && got <= exact * 1.016, `p${q}: ${got} vs ${exact}`);
  }
  assert.is(h.max, 100_000e3);
  assert.is(h.count, 100_000);
  assert.ok(Math.abs(h.mean() - 50_000.5e3) < 1);
});

histogram("merge adds counts and keeps the larger max; reset empties", () => {
  const a = new LatencyHistogram();
  const b = new LatencyHistogram();
  for (let i = 0; i < 100; i++) a.record(1000);
  for (let i = 0; i < 100; i++) b.record(3_000_000);
  a.merge(b);
  assert.is(a.count, 200);
  assert.is(a.max, 3_000_000);
  assert.ok(a.percentile(0.5) <= 1016 && a.percentile(0.5) >= 1000);
  assert.ok(a.percentile(0.51) >= 3_000_000);
  a.reset();
  assert.is(a.count, 0);
  assert.is(a.percentile(0.99), 0);
});

histogram.run();

// ---------------------------------------------------------------------------

const resp = suite("RESP reply parser");

const RESP_REPLIES = "+OK\r\n$5\r\nhello\r\n$-1\r\n-ERR UNAVAILABLE no leader\r\n:1\r\n$0\r\n\r\n$4\r\na\r\nb\r\n+QUEUED\r\n";
const RESP_EXPECTED: Seen[] = [
  [ReplyKind.OK, undefined],
  [ReplyKind.VALUE, undefined],
  [ReplyKind.NIL, undefined],
  [ReplyKind.ERROR, "ERR UNAVAILABLE no leader"],
  [ReplyKind.OTHER, ":1"],
  [ReplyKind.VALUE, undefined],
  [ReplyKind.VALUE, undefined], // a bulk body holding CRLF is skipped by length
  [ReplyKind.OTHER, "+QUEUED"],
];

resp("classifies every reply type, whole", () => {
  assert.equal(parseWith((h) => new RespReplyParser(h), RESP_REPLIES, []), RESP_EXPECTED);
});

resp("gives the same replies however the bytes are split", () => {
  for (let cut = 1; cut < RESP_REPLIES.length; cut++) {
    assert.equal(parseWith((h) => new RespReplyParser(h), RESP_REPLIES, [cut]), RESP_EXPECTED, `cut at ${cut}`);
  }
  const everyByte = Array.from({ length: RESP_REPLIES.length - 1 }, (_, i) => i + 1);
  assert.equal(parseWith((h) => new RespReplyParser(h), RESP_REPLIES, everyByte), RESP_EXPECTED);
});

resp("a large bulk value split across many chunks is one reply", () => {
  const value = "x".repeat(100_000);
  const cuts = [3, 10, 50_000, 99_990, 100_007];
  assert.equal(parseWith((h) => new RespReplyParser(h), `$${value.length}\r\n${value}\r\n+OK\r\n`, cuts), [
    [ReplyKind.VALUE, undefined],
    [ReplyKind.OK, undefined],
  ]);
});

resp("arrays and garbage are protocol errors", () => {
  assert.throws(() => parseWith((h) => new RespReplyParser(h), "*1\r\n$1\r\na\r\n", []), (error: Error) => error instanceof ReplyProtocolError);
  assert.throws(() => parseWith((h) => new RespReplyParser(h), "hello\r\n", []), (error: Error) => error instanceof ReplyProtocolError);
  assert.throws(() => parseWith((h) => new RespReplyParser(h), "$x\r\n", []), (error: Error) => error instanceof ReplyProtocolError);
});

resp.run();

// ---------------------------------------------------------------------------

const line = suite("line reply parser");

const LINE_REPLIES = "OK\nVALUE some value with spaces\r\nNOT_FOUND\nERR TIMEOUT outcome unknown\r\nOKAY\nVALUE\nDELETED\n";
const LINE_EXPECTED: Seen[] = [
  [ReplyKind.OK, undefined],
  [ReplyKind.VALUE, undefined],
  [ReplyKind.NIL, undefined],
  [ReplyKind.ERROR, "ERR TIMEOUT outcome unknown"],
  [ReplyKind.OTHER, "OKAY"],
  [ReplyKind.VALUE, undefined],
  [ReplyKind.OTHER, "DELETED"],
];

line("classifies OK, VALUE, NOT_FOUND, ERR and anything else", () => {
  assert.equal(parseWith((h) => new LineReplyParser(h), LINE_REPLIES, []), LINE_EXPECTED);
});

line("gives the same replies however the bytes are split", () => {
  for (let cut = 1; cut < LINE_REPLIES.length; cut++) {
    assert.equal(parseWith((h) => new LineReplyParser(h), LINE_REPLIES, [cut]), LINE_EXPECTED, `cut at ${cut}`);
  }
  const everyByte = Array.from({ length: LINE_REPLIES.length - 1 }, (_, i) => i + 1);
  assert.equal(parseWith((h) => new LineReplyParser(h), LINE_REPLIES, everyByte), LINE_EXPECTED);
});

line("keeps at most 200 bytes of a long error and still finds the line's end", () => {
  const long = `ERR INTERNAL ${"z".repeat(1000)}`;
  const seen = parseWith((h) => new LineReplyParser(h), `${long}\nOK\n`, [7, 300]);
  assert.is(seen.length, 2);
  assert.is(seen[0][0], ReplyKind.ERROR);
  assert.is(seen[0][1], long.slice(0, 200));
  assert.equal(seen[1], [ReplyKind.OK, undefined]);
});

line("an empty line is a protocol error", () => {
  assert.throws(() => parseWith((h) => new LineReplyParser(h), "OK\n\n", []), (error: Error) => error instanceof ReplyProtocolError);
});

line.run();

// ---------------------------------------------------------------------------

const keys = suite("keys and flags");

keys("keys are key:<n> zero-padded to 16 bytes, written and named alike", () => {
  for (const index of [0, 7, 99_999, 999_999_999_999]) {
    const buf = encodeKey(index);
    assert.is(buf.toString("latin1"), keyName(index));
    assert.is(buf.length, KEY_BYTES);
  }
  assert.is(KEY_BYTES, 16);
  assert.is(keyName(42), "key:000000000042");
  assert.throws(() => encodeKey(10 ** 12));
  assert.throws(() => encodeKey(-1));
});

keys("bench flags: defaults, --op, and bad values rejected", () => {
  const { options } = parseBenchArgs(["--op", "get", "--connections", "4", "--pipeline", "16", "--dialect", "line"]);
  assert.is(options.ratio, 0);
  assert.is(options.connections, 4);
  assert.is(options.pipeline, 16);
  assert.is(options.dialect, "line");
  for (const bad of [
    ["--connections", "0"],
    ["--pipeline", "1.5"],
    ["--ratio", "2"],
    ["--op", "scan"],
    ["--dialect", "json"],
    ["--ratio", "0.5", "--op", "put"],
    ["--duration", "1", "--requests", "5"],
    ["--frobnicate"],
    ["--port", "abc"],
  ]) {
    assert.throws(() => parseBenchArgs(bad), undefined, bad.join(" "));
  }
});

keys("bench main returns 2 on bad flags without connecting", async () => {
  const write = process.stderr.write;
  process.stderr.write = () => true; // keep the usage text out of the test output
  try {
    assert.is(await benchMain(["--keyspace", "-1"]), 2);
  } finally {
    process.stderr.write = write;
  }
});

keys("suite flags: sections are checked", () => {
  assert.equal(parseSuiteArgs(["--only", "memory,etcd"]).options.sections, ["memory", "etcd"]);
  assert.equal(parseSuiteArgs(["--only", "ceiling"]).options.sections, ["ceiling"]);
  assert.throws(() => parseSuiteArgs(["--only", "memory,disk"]));
  assert.throws(() => parseSuiteArgs(["--duration", "0"]));
  assert.equal(parseSuiteArgs(["--cluster-arg=--a", "--cluster-arg=--b=1"]).options.clusterArgs, ["--a", "--b=1"]);
});

keys("the docs section between the markers is replaced, the rest kept", () => {
  const doc = `# Perf\n\nprose\n\n${DOCS_BEGIN}\nold table\n${DOCS_END}\n\nmore prose\n`;
  const next = replaceMarkedSection(doc, "new table\n");
  assert.is(next, `# Perf\n\nprose\n\n${DOCS_BEGIN}\nnew table\n${DOCS_END}\n\nmore prose\n`);
  assert.is(replaceMarkedSection(next, "new table"), next);
  assert.throws(() => replaceMarkedSection("# no markers\n", "x"));
});

/** A measurement of `opsPerSec`, for rendering. */
function measured(opsPerSec: number): Measurement {
  return {
    ops: opsPerSec * 5,
    opsPerSec,
    errors: 0,
    errorSamples: [],
    misses: 0,
    latencyMs: { p50: 0.5, p99: 1, p999: 2, max: 3, mean: 0.6 },
    clientCpu: 0.5,
  };
}

function row(workload: string, connections: number, pipeline: number, ringkv: number, other: number): ComparisonRow {
  return { workload, shape: { connections, pipeline }, ringkv: measured(ringkv), other: measured(other) };
}

keys("the ceiling section: its table, and what each throughput target needs next to what the ceiling reached", () => {
  const report: SuiteReport = {
    startedAt: "2026-12-05T00:00:00Z",
    machine: { cpus: 2, cpuModel: "test", node: "v20", redis: "7", etcd: "3", kernel: "linux", dataFilesystem: "ext4", loadAverage: "0" },
    durationS: 5,
    warmupS: 1,
    standalone: { rows: [row("durable PUT", 8, 32, 250_000, 500_000), row("GET (preloaded)", 8, 32, 700_000, 2_000_000)] },
    ceiling: {
      rows: [
        row("durable PUT", 8, 32, 250_000, 450_000),
        row("durable PUT", 64, 1, 60_000, 100_000),
        row("GET (preloaded)", 8, 32, 700_000, 800_000),
      ],
      replicated: [{ workload: "replicated durable PUT", shape: { connections: 64, pipeline: 1 }, other: measured(55_000) }],
    },
    cluster: { rows: [row("replicated durable PUT", 64, 1, 20_000, 11_000)] },
  };
  const text = renderMarkdown(report);
  assert.match(text, "### Node.js ceiling");
  assert.match(text, "| durable PUT | 8×32 | 250,000 | 0.500 / 1.00 / 2.00 | 450,000 | 0.500 / 1.00 / 2.00 | 0.56× |");
  assert.match(text, "durable PUT at 8×32 ≥ 1× Redis needs 500,000 ops/s; the ceiling reached 450,000 (0.90× of it)");
  assert.match(text, "GET at 8×32 ≥ 0.8× Redis needs 1,600,000 ops/s; the ceiling reached 800,000 (0.50× of it)");
  assert.match(text, "| replicated durable PUT | 64×1 | 20,000 | 0.500 / 1.00 / 2.00 | 55,000 | 0.500 / 1.00 / 2.00 | 0.36× |");
  assert.match(text, "replicated durable PUT at 64 in flight ≥ 10× etcd needs 110,000 ops/s; the ceiling reached 55,000 (0.50× of it)");
  // Without the other sections there is nothing to set the ceiling against.
  const alone = renderMarkdown({ ...report, standalone: undefined, cluster: undefined });
  assert.match(alone, "### Node.js ceiling");
  assert.match(alone, "| replicated durable PUT | 64×1 | — | — | 55,000 |");
  assert.not.match(alone, "needs");
});

keys.run();
