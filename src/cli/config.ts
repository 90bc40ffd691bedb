/**
 * Node configuration: every flag has an environment variable; flags win.
 * Unknown or malformed flags are a {@linkcode ConfigError} (exit code 2).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { LOG_LEVELS, type LogLevel } from "../log/log.ts";

/** A bad flag or environment value; the CLI prints the message and exits 2. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Everything a node needs to start. */
export interface NodeConfig {
  id: string;
  host: string;
  port: number;
  /** host:port other nodes and forwarded clients use to reach this node. */
  advertise: string;
  /** Partitions this node replicates (standalone: every partition of the ring). */
  partitions: string[];
  /** ZooKeeper connect string; undefined: standalone single node. */
  zk: string | undefined;
  dataDir: string;
  httpPort: number | undefined;
  expectNodes: number;
  secret: string;
  /** True when `secret` is the development default (logged as a warning). */
  defaultSecret: boolean;
  maxLine: number;
  /** Idle connection timeout in ms; 0 disables. */
  idleTimeoutMs: number;
  maxConnections: number;
  fsync: "always" | "never";
  logLevel: LogLevel;
  sessionTimeoutMs: number;
  /** Forward requests for partitions led elsewhere (else reply NOT_LEADER). */
  forward: boolean;
  /** How long a request waits for a leader or quorum before ERR UNAVAILABLE. */
  requestTimeoutMs: number;
  /** Snapshot a partition after this many log entries. */
  snapshotEvery: number;
  /** Move leadership back towards the preferred spread after this many calm ms; 0: never. */
  rebalanceAfterMs: number;
}

/** The development secret; fine on a laptop, never in production (the docs say so). */
export const DEFAULT_SECRET = "ringkv-dev-secret";

/** Standalone partitions when `--partitions` is absent. */
export const DEFAULT_STANDALONE_PARTITIONS = ["p0"];

interface FlagSpec {
  env: string;
  help: string;
  default?: string;
}

/** Flags of `ringkv node`, their environment variables and defaults (also the --help text). */
export const NODE_FLAGS: Record<string, FlagSpec> = {
  "id": { env: "RINGKV_ID", help: "unique node id", default: "n1" },
  "host": { env: "RINGKV_HOST", help: "address to listen on (and to bind outgoing sockets to)", default: "127.0.0.1" },
  "port": { env: "RINGKV_PORT", help: "client and peer port", default: "9001" },
  "advertise": { env: "RINGKV_ADVERTISE", help: "host:port others use to reach this node (default host:port)" },
  "partitions": { env: "RINGKV_PARTITIONS", help: "comma list of partitions this node replicates", default: "p0 (standalone)" },
  "zk": { env: "RINGKV_ZK", help: "ZooKeeper connect string; absent: standalone single node" },
  "data-dir": { env: "RINGKV_DATA_DIR", help: "where logs and snapshots live", default: "./data/<id>" },
  "http-port": { env: "RINGKV_HTTP_PORT", help: "optional HTTP API and /metrics port" },
  "expect-nodes": { env: "RINGKV_EXPECT_NODES", help: "serve only once this many nodes registered", default: "1" },
  "secret": { env: "RINGKV_SECRET", help: "cluster secret peers authenticate with", default: "a development secret: change it" },
  "max-line": { env: "RINGKV_MAX_LINE", help: "longest request line in bytes", default: "1048576" },
  "idle-timeout": { env: "RINGKV_IDLE_TIMEOUT", help: "close idle connections after this many seconds (0: never)", default: "300" },
  "max-connections": { env: "RINGKV_MAX_CONNECTIONS", help: "client connections accepted at once", default: "10000" },
  "fsync": { env: "RINGKV_FSYNC", help: "always (durable) | never (UNSAFE: benchmarks only)", default: "always" },
  "log-level": { env: "RINGKV_LOG_LEVEL", help: "debug | info | warn | error", default: "info" },
  "session-timeout": { env: "RINGKV_SESSION_TIMEOUT", help: "ZooKeeper session timeout in ms", default: "2000" },
  "forward": { env: "RINGKV_FORWARD", help: "on: forward to the leader | off: reply NOT_LEADER", default: "on" },
  "request-timeout": { env: "RINGKV_REQUEST_TIMEOUT", help: "ms a request waits for a leader or quorum", default: "5000" },
  "snapshot-every": { env: "RINGKV_SNAPSHOT_EVERY", help: "snapshot a partition after this many log entries", default: "200000" },
  "rebalance-after": { env: "RINGKV_REBALANCE_AFTER", help: "ms of calm after which leadership moves back to preferred nodes (0: never)", default: "10000" },
};

/** Parses `ringkv node` arguments and the environment into a config. */
export function parseNodeConfig(argv: readonly string[], env: Record<string, string | undefined> = process.env): NodeConfig {
  const options: Record<string, { type: "string" }> = {};
  for (const name of Object.keys(NODE_FLAGS)) options[name] = { type: "string" };
  let values: Record<string, string | undefined>;
  try {
    const parsed = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false });
    values = parsed.values as Record<string, string | undefined>;
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
  function raw(name: string): string | undefined {
    const value = values[name] ?? env[NODE_FLAGS[name].env];
    return value === undefined || value === "" ? undefined : value;
  }
  function int(name: string, fallback: number, min: number, max: number): number {
    const text = raw(name);
    if (text === undefined) return fallback;
    if (!/^\d+$/.test(text)) throw new ConfigError(`--${name} must be a whole number, got "${text}"`);
    const value = Number(text);
    if (value < min || value > max) throw new ConfigError(`--${name} must be between ${min} and ${max}, got ${value}`);
    return value;
  }
  function choice<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const text = raw(name);
    if (text === undefined) return fallback;
    if (!(allowed as readonly string[]).includes(text)) {
      throw new ConfigError(`--${name} must be one of ${allowed.join(", ")}, got "${text}"`);
    }
    return text as T;
  }

  const id = raw("id") ?? "n1";
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(id)) {
    throw new ConfigError(`--id must be 1-64 characters of letters, digits, '_', '.', '-', got "${id}"`);
  }
  const host = raw("host") ?? "127.0.0.1";
  const port = int("port", 9001, 0, 65535);
  const advertise = raw("advertise") ?? `${host === "0.0.0.0" ? "127.0.0.1" : host}:${port}`;
  if (!/^[^\s:]+:\d{1,5}$/.test(advertise)) throw new ConfigError(`--advertise must be host:port, got "${advertise}"`);
  const zk = raw("zk");
  const partitionsText = raw("partitions");
  const partitions = partitionsText === undefined
    ? (zk === undefined ? [...DEFAULT_STANDALONE_PARTITIONS] : [])
    : partitionsText.split(",").map((p) => p.trim()).filter((p) => p !== "");
  for (const partition of partitions) {
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(partition)) {
      throw new ConfigError(`partition names are 1-64 characters of letters, digits, '_', '.', '-', got "${partition}"`);
    }
  }
  if (new Set(partitions).size !== partitions.length) throw new ConfigError("--partitions lists a partition twice");
  if (zk !== undefined && partitions.length === 0) {
    throw new ConfigError("--partitions is required with --zk: name the partitions this node replicates");
  }
  const httpText = raw("http-port");
  const secret = raw("secret");
  return {
    id,
    host,
    port,
    advertise,
    partitions,
    zk,
    dataDir: raw("data-dir") ?? `./data/${id}`,
    httpPort: httpText === undefined ? undefined : int("http-port", 0, 0, 65535),
    expectNodes: int("expect-nodes", 1, 1, 1000),
    secret: secret ?? DEFAULT_SECRET,
    defaultSecret: secret === undefined,
    maxLine: int("max-line", 1_048_576, 1024, 512 * 1_048_576),
    idleTimeoutMs: int("idle-timeout", 300, 0, 86_400 * 365) * 1000,
    maxConnections: int("max-connections", 10_000, 1, 1_000_000),
    fsync: choice("fsync", ["always", "never"] as const, "always"),
    logLevel: choice("log-level", LOG_LEVELS, "info"),
    sessionTimeoutMs: int("session-timeout", 2000, 400, 60_000),
    forward: choice("forward", ["on", "off"] as const, "on") === "on",
    requestTimeoutMs: int("request-timeout", 5000, 10, 600_000),
    snapshotEvery: int("snapshot-every", 200_000, 10, 100_000_000),
    rebalanceAfterMs: int("rebalance-after", 10_000, 0, 3_600_000),
  };
}

/** The `ringkv node --help` text, generated from {@linkcode NODE_FLAGS}. */
export function nodeHelp(): string {
  const lines = ["usage: ringkv node [flags]   (each flag also reads its environment variable)", ""];
  for (const [name, spec] of Object.entries(NODE_FLAGS)) {
    const left = `  --${name} <v>`.padEnd(24);
    const dflt = spec.default === undefined ? "" : ` [default: ${spec.default}]`;
    lines.push(`${left}${spec.env.padEnd(24)}${spec.help}${dflt}`);
  }
  return lines.join("\n");
}
