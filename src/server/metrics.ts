/**
 * A Prometheus metrics registry with no dependencies: counters, gauges (set
 * by the code, or collected by a callback at scrape time) and histograms
 * with fixed buckets, rendered in the text exposition format 0.0.4.
 *
 * The hot path (`count`, `observe`, or a cached handle's `inc`) does no
 * string building: series are found through one nested Map per label, and a
 * series' rendered label text is built once, when it is created.
 *
 * @module
 */
import type { Reply, Request } from "../protocol/types.ts";
import type { RequestHandler } from "./server.ts";
import type { PartitionStatus } from "../replication/partition.ts";
import type { BatchStats } from "../storage/partition_log.ts";

/** Label name → value. Every declared label must be present. */
export type Labels = Readonly<Record<string, string>>;

/** Latency buckets in seconds: 0.1 ms … 10 s. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

/** Batch-size buckets: powers of two, 1 … 4096. */
export const BATCH_BUCKETS: readonly number[] = Array.from({ length: 13 }, (_, i) => 2 ** i);

/**
 * Most series one family may hold. Label values come from bounded sets
 * (commands, outcomes, partitions, peers); past this limit new series are
 * dropped (and the render says how many) rather than growing without bound.
 */
export const MAX_SERIES_PER_FAMILY = 10_000;

/** Most buckets a histogram may declare. */
export const MAX_BUCKETS = 64;

/** The content type of {@linkcode Metrics.render}'s output. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A counter series; cache it on hot paths. */
export interface CounterHandle {
  /** Adds `by` (default 1; must be ≥ 0). */
  inc(by?: number): void;
}

/** A gauge series. */
export interface GaugeHandle {
  set(value: number): void;
  inc(by?: number): void;
  dec(by?: number): void;
}

/** A histogram series; cache it on hot paths. */
export interface HistogramHandle {
  observe(value: number): void;
}

/** One sample a gauge collector reports at scrape time. */
export interface Sample {
  /** Every declared label of the family (omit for a family without labels). */
  labels?: Labels;
  value: number;
}

/** Options for {@linkcode Metrics.declareCounter} and {@linkcode Metrics.declareGauge}. */
export interface DeclareOptions {
  /** The HELP text. */
  help: string;
  /** Label names, in the order they are rendered. Defaults to none. */
  labels?: readonly string[];
}

/** Options for {@linkcode Metrics.declareHistogram}. */
export interface HistogramOptions extends DeclareOptions {
  /** Upper bounds, strictly increasing and finite (+Inf is implied). */
  buckets: readonly number[];
}

type Kind = "counter" | "gauge" | "histogram";

/** One series: a value (counter, gauge) or bucket counts (histogram). */
interface Series {
  /** `{a="x",b="y"}` or "" — built once. */
  readonly labelText: string;
  /** Histogram: the same labels with room for `le` (`a="x",b="y",` or ""). */
  readonly labelPrefix: string;
  value: number;
  /** Histogram only: per-bucket (not cumulative) counts; the last is +Inf. */
  readonly buckets: number[] | undefined;
  sum: number;
  count: number;
}

interface Family {
  readonly name: string;
  readonly kind: Kind;
  readonly help: string;
  readonly labelNames: readonly string[];
  readonly bounds: readonly number[];
  /** Nested maps, one level per label value; the leaf is the Series. With no labels: the Series itself. */
  readonly root: Map<string, unknown>;
  /** Series in creation order, for rendering. */
  readonly series: Series[];
  collector: (() => Iterable<Sample>) | undefined;
  dropped: number;
}

/** Handed out past {@linkcode MAX_SERIES_PER_FAMILY}: does nothing. */
const DROPPED_SERIES: Series = {
  labelText: "",
  labelPrefix: "",
  value: 0,
  buckets: undefined,
  sum: 0,
  count: 0,
};

/**
 * A registry of metric families. Declare each family once (name, HELP,
 * labels), then count, set and observe; {@linkcode Metrics.render} gives the
 * scrape body.
 */
export class Metrics {
  readonly #families = new Map<string, Family>();

  /** Declares a counter family. Throws if the name is taken or invalid. */
  declareCounter(name: string, options: DeclareOptions): void {
    this.#declare(name, "counter", options, []);
  }

  /** Declares a gauge family. Throws if the name is taken or invalid. */
  declareGauge(name: string, options: DeclareOptions): void {
    this.#declare(name, "gauge", options, []);
  }

  /** Declares a histogram family with fixed buckets. Throws if the name is taken or invalid. */
  declareHistogram(name: string, options: HistogramOptions): void {
    const bounds = options.buckets;
    if (bounds.length === 0 || bounds.length > MAX_BUCKETS) {
      throw new Error(`histogram ${name}: 1 to ${MAX_BUCKETS} buckets, got ${bounds.length}`);
    }
    for (let i = 0; i < bounds.length; i++) {
      if (!Number.isFinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
        throw new Error(`histogram ${name}: buckets must be finite and strictly increasing`);
      }
    }
    if ((options.labels ?? []).includes("le")) throw new Error(`histogram ${name}: "le" is reserved`);
    this.#declare(name, "histogram", options, bounds);
  }

  #declare(name: string, kind: Kind, options: DeclareOptions, bounds: readonly number[]): void {
    if (!METRIC_NAME.test(name)) throw new Error(`invalid metric name "${name}"`);
    if (this.#families.has(name)) throw new Error(`metric ${name} is declared twice`);
    const labelNames = [...(options.labels ?? [])];
    for (const label of labelNames) {
      if (!LABEL_NAME.test(label) || label.startsWith("__")) throw new Error(`metric ${name}: invalid label name "${label}"`);
    }
    if (new Set(labelNames).size !== labelNames.length) throw new Error(`metric ${name}: a label is named twice`);
    const family: Family = {
      name,
      kind,
      help: options.help,
      labelNames,
      bounds: [...bounds],
      root: new Map(),
      series: [],
      collector: undefined,
      dropped: 0,
    };
    this.#families.set(name, family);
    // A family without labels has exactly one series, shown as 0 from the start.
    if (labelNames.length === 0 && kind !== "gauge") this.#series(family, {});
  }

  /** True when `name` is declared. */
  has(name: string): boolean {
    return this.#families.has(name);
  }

  /** The handle of one counter series (created on first use). */
  counter(name: string, labels: Labels = {}): CounterHandle {
    const series = this.#series(this.#family(name, "counter"), labels);
    return {
      inc(by = 1) {
        if (!(by >= 0)) throw new Error(`counter ${name} can only go up (inc by ${by})`);
        series.value += by;
      },
    };
  }

  /** The handle of one gauge series (created on first use). */
  gauge(name: string, labels: Labels = {}): GaugeHandle {
    const series = this.#series(this.#family(name, "gauge"), labels);
    return {
      set(value) {
        series.value = value;
      },
      inc(by = 1) {
        series.value += by;
      },
      dec(by = 1) {
        series.value -= by;
      },
    };
  }

  /** The handle of one histogram series (created on first use). */
  histogram(name: string, labels: Labels = {}): HistogramHandle {
    const family = this.#family(name, "histogram");
    const series = this.#series(family, labels);
    return { observe: (value) => record(family.bounds, series, value) };
  }

  /** Adds 1 to a counter series. */
  count(name: string, labels: Labels = {}): void {
    this.#series(this.#family(name, "counter"), labels).value += 1;
  }

  /** Sets a gauge series. */
  set(name: string, value: number, labels: Labels = {}): void {
    this.#series(this.#family(name, "gauge"), labels).value = value;
  }

  /** Records one observation in a histogram series. */
  observe(name: string, value: number, labels: Labels = {}): void {
    const family = this.#family(name, "histogram");
    record(family.bounds, this.#series(family, labels), value);
  }

  /**
   * Makes a gauge family report what `collect` returns at each scrape (in
   * addition to series set directly). A collector that throws reports nothing.
   */
  collect(name: string, collect: () => Iterable<Sample>): void {
    const family = this.#family(name, "gauge");
    if (family.collector !== undefined) throw new Error(`gauge ${name} already has a collector`);
    family.collector = collect;
  }

  /** The current value of a counter or gauge series (0 if it does not exist yet); for tests and INFO. */
  value(name: string, labels: Labels = {}): number {
    const family = this.#family(name, undefined);
    const series = this.#find(family, labels);
    if (family.kind === "histogram") return series?.count ?? 0;
    return series?.value ?? 0;
  }

  #family(name: string, kind: Kind | undefined): Family {
    const family = this.#families.get(name);
    if (family === undefined) throw new Error(`metric ${name} is not declared`);
    if (kind !== undefined && family.kind !== kind) throw new Error(`metric ${name} is a ${family.kind}, not a ${kind}`);
    return family;
  }

  #find(family: Family, labels: Labels): Series | undefined {
    let node: unknown = family.root;
    for (const label of family.labelNames) {
      node = (node as Map<string, unknown>).get(labelValue(family, labels, label));
      if (node === undefined) return undefined;
    }
    return family.labelNames.length === 0 ? family.series[0] : node as Series;
  }

  /** Finds or creates the series for `labels`: one Map lookup per label, no string building once it exists. */
  #series(family: Family, labels: Labels): Series {
    const names = family.labelNames;
    if (names.length === 0) {
      const only = family.series[0];
      if (only !== undefined) return only;
    }
    let node = family.root;
    for (let i = 0; i < names.length - 1; i++) {
      const value = labelValue(family, labels, names[i]);
      let next = node.get(value) as Map<string, unknown> | undefined;
      if (next === undefined) {
        next = new Map();
        node.set(value, next);
      }
      node = next;
    }
    if (names.length > 0) {
      const leaf = labelValue(family, labels, names[names.length - 1]);
      const found = node.get(leaf) as Series | undefined;
      if (found !== undefined) return found;
      if (family.series.length >= MAX_SERIES_PER_FAMILY) {
        family.dropped++;
        return DROPPED_SERIES;
      }
      const series = newSeries(family, labels);
      node.set(leaf, series);
      return series;
    }
    const series = newSeries(family, labels);
    return series;
  }

  /** The whole registry in the Prometheus text exposition format 0.0.4. */
  render(): string {
    const out: string[] = [];
    for (const family of this.#families.values()) {
      out.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
      out.push(`# TYPE ${family.name} ${family.kind}`);
      if (family.kind === "histogram") {
        for (const series of family.series) renderHistogram(out, family, series);
      } else {
        for (const series of family.series) out.push(`${family.name}${series.labelText} ${formatNumber(series.value)}`);
        if (family.collector !== undefined) renderCollected(out, family);
      }
      if (family.dropped > 0) out.push(`# ${family.dropped} updates dropped: more than ${MAX_SERIES_PER_FAMILY} series`);
    }
    return out.length === 0 ? "" : out.join("\n") + "\n";
  }
}

function labelValue(family: Family, labels: Labels, label: string): string {
  const value = labels[label];
  if (typeof value !== "string") throw new Error(`metric ${family.name}: label "${label}" is missing`);
  return value;
}

function newSeries(family: Family, labels: Labels): Series {
  const pairs = family.labelNames.map((label) => `${label}="${escapeLabelValue(labels[label])}"`);
  const series: Series = {
    labelText: pairs.length === 0 ? "" : `{${pairs.join(",")}}`,
    labelPrefix: pairs.length === 0 ? "" : `${pairs.join(",")},`,
    value: 0,
    buckets: family.kind === "histogram" ? new Array<number>(family.bounds.length + 1).fill(0) : undefined,
    sum: 0,
    count: 0,
  };
  family.series.push(series);
  return series;
}

function record(bounds: readonly number[], series: Series, value: number): void {
  const buckets = series.buckets;
  if (buckets === undefined) return; // the dropped series
  let i = 0;
  while (i < bounds.length && value > bounds[i]) i++;
  buckets[i]++;
  series.sum += value;
  series.count++;
}

function renderHistogram(out: string[], family: Family, series: Series): void {
  const buckets = series.buckets!;
  let cumulative = 0;
  for (let i = 0; i < family.bounds.length; i++) {
    cumulative += buckets[i];
    out.push(`${family.name}_bucket{${series.labelPrefix}le="${formatNumber(family.bounds[i])}"} ${cumulative}`);
  }
  cumulative += buckets[family.bounds.length];
  if (cumulative !== series.count) throw new Error(`histogram ${family.name}: buckets sum to ${cumulative}, count is ${series.count}`);
  out.push(`${family.name}_bucket{${series.labelPrefix}le="+Inf"} ${cumulative}`);
  out.push(`${family.name}_sum${series.labelText} ${formatNumber(series.sum)}`);
  out.push(`${family.name}_count${series.labelText} ${series.count}`);
}

function renderCollected(out: string[], family: Family): void {
  let samples: Sample[];
  try {
    samples = [...family.collector!()];
  } catch {
    // A scrape must not fail because one collector did; the family shows no samples.
    return;
  }
  for (const sample of samples.slice(0, MAX_SERIES_PER_FAMILY)) {
    const labels = sample.labels ?? {};
    const pairs: string[] = [];
    let complete = true;
    for (const label of family.labelNames) {
      const value = labels[label];
      if (typeof value !== "string") complete = false;
      else pairs.push(`${label}="${escapeLabelValue(value)}"`);
    }
    if (!complete) continue;
    out.push(`${family.name}${pairs.length === 0 ? "" : `{${pairs.join(",")}}`} ${formatNumber(sample.value)}`);
  }
}

/** A label value escaped for the exposition format: backslash, double quote and line feed. */
export function escapeLabelValue(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => (c === "\n" ? "\\n" : `\\${c}`));
}

/** HELP text escaped for the exposition format: backslash and line feed. */
function escapeHelp(help: string): string {
  return help.replace(/[\\\n]/g, (c) => (c === "\n" ? "\\n" : "\\\\"));
}

/** A sample value as Prometheus writes it (+Inf, -Inf, NaN spelled out). */
export function formatNumber(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

// ---------------------------------------------------------------- the node's metrics

/** ZooKeeper session states the node reports (a state not listed here is still shown when current). */
export const ZK_SESSION_STATES: readonly string[] = ["connecting", "connected", "disconnected", "deadline", "expired", "closed"];

/** A registry with every metric of a ringkv node declared. */
export function createNodeMetrics(): Metrics {
  const metrics = new Metrics();
  metrics.declareCounter("ringkv_requests_total", {
    help: "Client requests answered, by command and outcome (ok, not_found, or the error code in lower case).",
    labels: ["command", "outcome"],
  });
  metrics.declareHistogram("ringkv_request_duration_seconds", {
    help: "Time from a parsed request to its reply, by command.",
    labels: ["command"],
    buckets: LATENCY_BUCKETS,
  });
  metrics.declareGauge("ringkv_connections", { help: "Open client and peer connections (TCP port)." });
  metrics.declareGauge("ringkv_partition_leader", {
    help: "1 when this node leads the partition (or serves it standalone), else 0.",
    labels: ["partition"],
  });
  metrics.declareGauge("ringkv_partition_epoch", { help: "The partition's current epoch on this node.", labels: ["partition"] });
  metrics.declareGauge("ringkv_partition_commit_index", {
    help: "The partition's highest index known committed on this node.",
    labels: ["partition"],
  });
  metrics.declareGauge("ringkv_partition_applied_index", {
    help: "The partition's highest index applied to this node's store.",
    labels: ["partition"],
  });
  metrics.declareGauge("ringkv_replication_lag_entries", {
    help: "Entries a follower lacks behind the leader's last index (reported by the leader).",
    labels: ["partition", "follower"],
  });
  metrics.declareHistogram("ringkv_fsync_batch_entries", {
    help: "Log entries written by one group-commit batch (one write, one fsync).",
    buckets: BATCH_BUCKETS,
  });
  metrics.declareHistogram("ringkv_fsync_duration_seconds", {
    help: "Time one group-commit batch took to write and fsync.",
    buckets: LATENCY_BUCKETS,
  });
  metrics.declareGauge("ringkv_zk_session_state", {
    help: "1 for the node's current ZooKeeper session state, 0 for the others.",
    labels: ["state"],
  });
  return metrics;
}

/** A storage `onBatch` hook that feeds the group-commit histograms of `metrics`. */
export function fsyncObserver(metrics: Metrics): (batch: BatchStats) => void {
  const entries = metrics.histogram("ringkv_fsync_batch_entries");
  const seconds = metrics.histogram("ringkv_fsync_duration_seconds");
  return function observeBatch(batch: BatchStats): void {
    entries.observe(batch.records);
    seconds.observe(batch.ms / 1000);
  };
}

/**
 * Reports the partition gauges (leader, epoch, commit and applied index,
 * replication lag) from `statuses` at every scrape.
 */
export function collectPartitions(metrics: Metrics, statuses: () => readonly PartitionStatus[]): void {
  // One call of statuses() per scrape would need shared state; five calls are cheap (a few partitions).
  const each = (value: (s: PartitionStatus) => number) => (): Sample[] =>
    statuses().map((s) => ({ labels: { partition: s.partition }, value: value(s) }));
  metrics.collect("ringkv_partition_leader", each((s) => (s.role === "leader" || s.role === "standalone" ? 1 : 0)));
  metrics.collect("ringkv_partition_epoch", each((s) => s.epoch));
  metrics.collect("ringkv_partition_commit_index", each((s) => s.commitIndex));
  metrics.collect("ringkv_partition_applied_index", each((s) => s.appliedIndex));
  metrics.collect("ringkv_replication_lag_entries", () =>
    statuses().flatMap((s) => s.followers.map((f) => ({ labels: { partition: s.partition, follower: f.id }, value: f.lag }))));
}

/** Options for {@linkcode stateSamples}. */
export interface StateSampleOptions {
  /** The label that names the state (e.g. "state"). */
  label: string;
  /** Every state worth a 0 sample when it is not the current one. */
  known: readonly string[];
}

/** Samples for a state gauge: 1 for `current`, 0 for every other known state (`current` is shown even if not known). */
export function stateSamples(current: string, options: StateSampleOptions): Sample[] {
  const states = options.known.includes(current) ? options.known : [...options.known, current];
  return states.map((state) => ({ labels: { [options.label]: state }, value: state === current ? 1 : 0 }));
}

/** The `outcome` label of a reply: ok, not_found, or the error code in lower case. */
export function outcomeOf(reply: Reply): string {
  if (reply.type === "not_found") return "not_found";
  if (reply.type === "error") return ERROR_OUTCOMES[reply.code] ?? "internal";
  return "ok";
}

const ERROR_OUTCOMES: Record<string, string> = {
  BAD_REQUEST: "bad_request",
  UNKNOWN_COMMAND: "unknown_command",
  TOO_LARGE: "too_large",
  UNAVAILABLE: "unavailable",
  TIMEOUT: "timeout",
  FORBIDDEN: "forbidden",
  NOT_LEADER: "not_leader",
  INTERNAL: "internal",
};

/** Command words → their label, so the request path does not build strings. */
const COMMAND_LABELS = new Map<string, string>(
  ["PUT", "GET", "DELETE", "EXISTS", "PING", "HELP", "INFO", "RING", "QUIT", "READONLY", "READWRITE", "INVALID", "AUTH", "REPLICATE", "SNAPSHOT", "FWD"]
    .map((word) => [word, word.toLowerCase()]),
);

/** The `command` label of a request: the command in lower case (peer commands by their name). */
export function commandOf(request: Request): string {
  const word = request.command === "PEER" ? request.name : request.command;
  return COMMAND_LABELS.get(word) ?? word.toLowerCase();
}

let turnNow = -1;

function resetTurnClock(): void {
  turnNow = -1;
}

/**
 * performance.now(), read at most once per batch of synchronous work (until
 * the next microtask checkpoint). A clock read costs 100+ ns on some
 * machines, a node serves 100k+ requests/s, and pipelined requests arrive in
 * batches: one read per batch is as accurate as the batch itself. A request
 * answered synchronously thus takes 0 s: it did take well under the
 * smallest latency bucket (0.1 ms).
 */
export function turnClock(): number {
  if (turnNow < 0) {
    turnNow = performance.now();
    queueMicrotask(resetTurnClock);
  }
  return turnNow;
}

/** Per-command cached handles: the request path looks up two Maps and does no string building. */
interface CommandHandles {
  duration: HistogramHandle;
  outcomes: Map<string, CounterHandle>;
}

/** Records requests in `ringkv_requests_total` and `ringkv_request_duration_seconds`; see {@linkcode instrumentHandler}. */
export class RequestRecorder {
  readonly #metrics: Metrics;
  readonly #commands = new Map<string, CommandHandles>();

  constructor(metrics: Metrics) {
    this.#metrics = metrics;
  }

  /** Counts one answered request (`command` and `outcome` are label values) and its duration in seconds. */
  record(command: string, outcome: string, seconds: number): void {
    let handles = this.#commands.get(command);
    if (handles === undefined) {
      handles = { duration: this.#metrics.histogram("ringkv_request_duration_seconds", { command }), outcomes: new Map() };
      this.#commands.set(command, handles);
    }
    let counter = handles.outcomes.get(outcome);
    if (counter === undefined) {
      counter = this.#metrics.counter("ringkv_requests_total", { command, outcome });
      handles.outcomes.set(outcome, counter);
    }
    counter.inc();
    handles.duration.observe(seconds);
  }
}

/**
 * Wraps the TCP server's request handler so every request is counted and
 * timed (with {@linkcode turnClock}). The wrapper answers exactly what
 * `handler` answers, and passes `closed` through.
 */
export function instrumentHandler(handler: RequestHandler, metrics: Metrics): RequestHandler {
  const recorder = new RequestRecorder(metrics);
  const wrapped: RequestHandler = {
    handle(request, context) {
      const started = turnClock();
      const command = commandOf(request);
      const result = handler.handle(request, context);
      if (result instanceof Promise) {
        return result.then((reply) => {
          recorder.record(command, outcomeOf(reply), (turnClock() - started) / 1000);
          return reply;
        });
      }
      recorder.record(command, outcomeOf(result), 0);
      return result;
    },
  };
  if (handler.closed !== undefined) wrapped.closed = (context) => handler.closed!(context);
  return wrapped;
}
