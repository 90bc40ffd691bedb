/**
 * The Jepsen-style fault run: a real cluster (its own ZooKeeper, five node
 * processes on 127.0.0.11..15), concurrent clients doing PUT/GET/DELETE on
 * a few keys through random nodes (in turn the plain, JSON and RESP dialects), a {@linkcode Nemesis} killing, pausing and
 * partitioning nodes, then a heal, a final read of every key through every
 * node, and the linearizability check of the whole recorded history.
 *
 * @module
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { formatHistoryJsonl, HistoryRecorder } from "../../src/check/history.ts";
import { checkLinearizable, type CheckResult, type HistoryOp } from "../../src/check/linearizability.ts";
import { Prng } from "../simulation/prng.ts";
import { printLogs, startTestCluster, type TestCluster } from "../support/cluster.ts";
import { FAULT_KINDS, formatNemesisEvent, Nemesis, type FaultKind, type NemesisEvent, type ScheduleOptions } from "./nemesis.ts";

/** Environment variable that fixes the seed (replays the nemesis schedule and the clients' choices). */
export const CHAOS_SEED_ENV = "RINGKV_CHAOS_SEED";

/** A client gives up on a reply this long after the node's own request timeout (then the outcome is unknown). */
const CLIENT_TIMEOUT_MARGIN_MS = 3_000;
/** A client's connection attempt gives up after this long. */
const CONNECT_TIMEOUT_MS = 2_000;
/** Pause before a client tries another node after a failed connection. */
const RECONNECT_DELAY_MS = 50;
/** Chance that a client moves to another random node after an op. */
const SWITCH_NODE_CHANCE = 0.2;
/** Longest reply line a client accepts (values are short here). */
const MAX_REPLY_BYTES = 64 * 1024;
/** Most clients one run starts. */
const MAX_CLIENTS = 64;
/** Most keys one run uses. */
const MAX_KEYS = 64;
/** Deadline for every key's final read to get a definite reply from every node. */
const FINAL_READ_TIMEOUT_MS = 30_000;
/** Deadline for every partition to have a leader after the chaos phase. */
const FINAL_LEADERS_TIMEOUT_MS = 45_000;
/** Ops of the failing key shown around the ops the checker names. */
const SHOWN_NEIGHBOURS = 6;

/** Options for {@linkcode runChaos}. */
export interface ChaosOptions {
  /** Seed of the nemesis schedule and of the clients; defaults to $RINGKV_CHAOS_SEED, else a random one. */
  seed?: number;
  /** Length of the chaos phase (clients + nemesis) in ms. Defaults to 60_000. */
  durationMs?: number;
  /** End the chaos phase once this many faults have been injected and healed (and `tailMs` passed). */
  maxFaults?: number;
  /** Fault-free time with clients running after the last heal. Defaults to 2000. */
  tailMs?: number;
  /** Fault kinds. Defaults to all. */
  nemesis?: readonly FaultKind[];
  /** Concurrent clients. Defaults to 10. */
  clients?: number;
  /** Distinct keys (few, so that ops conflict). Defaults to 6. */
  keys?: number;
  /** Nodes (on 127.0.0.11, .12, ...). Defaults to 5. */
  nodes?: number;
  /** Partitions. Defaults to 5. */
  partitions?: number;
  /** Replicas per partition. Defaults to 3 (the nemesis faults one node at a time: a majority stays). */
  replicas?: number;
  /** ZooKeeper session timeout of the nodes. Defaults to 1500. */
  sessionTimeoutMs?: number;
  /** The nodes' --request-timeout. Defaults to 3000. */
  requestTimeoutMs?: number;
  /**
   * The nodes' --rebalance-after. Defaults to 3000: short enough that
   * leadership moves back (planned handovers) between faults, under load.
   */
  rebalanceAfterMs?: number;
  /** Think time of a client between two ops, [min, max] ms. Defaults to [0, 10]. */
  thinkMs?: readonly [number, number];
  /** Timing of the faults (see {@linkcode ScheduleOptions}). */
  schedule?: Omit<ScheduleOptions, "kinds" | "sessionTimeoutMs">;
  /** State budget per key of the checker. */
  maxStates?: number;
  /** Where progress lines go. Defaults to console.log. */
  log?: (line: string) => void;
  /**
   * Self-check of the harness: clients send READONLY first, so a replica
   * answers GET from its own, possibly stale, copy (documented as not
   * linearizable). A run with faults should then be found NOT linearizable.
   */
  staleReads?: boolean;
  /** The first SIGINT ends the chaos early and the run still checks what it recorded (see the nemesis's `interruptible`). */
  interruptible?: boolean;
}

/** Counts of ops by outcome class. */
export interface OpCounts {
  ops: number;
  /** Definite replies: OK, VALUE, NOT_FOUND, DELETED. */
  ok: number;
  /** Definite errors (never took effect), e.g. ERR UNAVAILABLE. */
  failed: number;
  /** ERR TIMEOUT, dropped connection, no reply in time. */
  unknown: number;
}

/** What {@linkcode runChaos} found. */
export interface ChaosResult extends OpCounts {
  seed: number;
  /** Faults injected, by kind. */
  nemesis: Record<FaultKind, number>;
  nemesisLog: NemesisEvent[];
  verdict: "linearizable" | "not_linearizable" | "inconclusive";
  check: CheckResult;
  /** Everything else that is wrong: impossible replies, nodes that do not recover, final reads that disagree, lost writes. */
  problems: string[];
  /** True when linearizable and no problem. */
  passed: boolean;
  /** Final value of each key as read through every node (null: absent); undefined when the nodes disagreed or did not answer. */
  finalValues: Record<string, string | null | undefined>;
  /** Nodes running and answering PING at the end, before the cluster stopped. */
  nodesAlive: string[];
  /** The recorded history, final reads included. */
  history: HistoryOp[];
  /** Where the history, nemesis log and node logs were written (on a failure). */
  artifactDir?: string;
  /** The longest time some key went without a definite reply to any op (clients' ops only), and when it began. */
  longestGap: { key: string; fromMs: number; ms: number };
  /** Wall time of the phases, ms. */
  timings: { setupMs: number; chaosMs: number; finalMs: number; checkMs: number; totalMs: number };
  /** The one-line summary printed at the end. */
  summary: string;
}

/** The seed of a run: `explicit`, else $RINGKV_CHAOS_SEED, else random. */
export function chaosSeed(explicit?: number): number {
  if (explicit !== undefined) return explicit >>> 0;
  const text = process.env[CHAOS_SEED_ENV];
  if (text !== undefined && text !== "") {
    if (!/^\d+$/.test(text)) throw new Error(`${CHAOS_SEED_ENV} must be a whole number, got ${JSON.stringify(text)}`);
    return Number(text) >>> 0;
  }
  return Math.floor(Math.random() * 2 ** 32) >>> 0;
}

/**
 * Runs one chaos test end to end (cluster up, chaos, heal, final reads,
 * check, cluster down) and prints one summary line. On a failure it writes
 * the history, the nemesis log and the node logs under `os.tmpdir()` and
 * prints where.
 */
export async function runChaos(options: ChaosOptions = {}): Promise<ChaosResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  const seed = chaosSeed(options.seed);
  const clientCount = options.clients ?? 10;
  const keyCount = options.keys ?? 6;
  const sessionTimeoutMs = options.sessionTimeoutMs ?? 1500;
  const requestTimeoutMs = options.requestTimeoutMs ?? 3000;
  const durationMs = options.durationMs ?? 60_000;
  const kinds = options.nemesis ?? FAULT_KINDS;
  assert.ok(clientCount >= 1 && clientCount <= MAX_CLIENTS, `1..${MAX_CLIENTS} clients`);
  assert.ok(keyCount >= 1 && keyCount <= MAX_KEYS, `1..${MAX_KEYS} keys`);
  log(`chaos: seed ${seed} (replay with ${CHAOS_SEED_ENV}=${seed}), ${clientCount} clients, ${keyCount} keys, nemesis ${kinds.join(",")}, ${Math.round(durationMs / 1000)} s`);

  const origin = performance.now();
  const recorder = new HistoryRecorder({ now: () => performance.now() - origin });
  const problems: string[] = [];
  const keys = Array.from({ length: keyCount }, (_, i) => `k${i + 1}`);
  const cluster = await startTestCluster({
    nodes: options.nodes ?? 5,
    partitions: options.partitions ?? 5,
    replicas: options.replicas ?? 3,
    sessionTimeoutMs,
    args: ["--request-timeout", String(requestTimeoutMs), "--rebalance-after", String(options.rebalanceAfterMs ?? 3000)],
    zkRelays: true,
    // An interruptible run handles SIGINT itself (the nemesis heals, the run checks, then stops the cluster).
    handleSignals: options.interruptible !== true,
  });
  const dataDir = path.dirname(cluster.specs[0].logFile);
  const setupMs = performance.now() - origin;
  log(`chaos: cluster up in ${Math.round(setupMs)} ms (${cluster.specs.map((s) => `${s.id}=${s.host}:${s.port}`).join(" ")}), data ${dataDir}`);

  let nemesis: Nemesis | undefined;
  let nodesAlive: string[] = [];
  let finalValues: Record<string, string | null | undefined> = {};
  let chaosMs = 0;
  let finalMs = 0;
  const stopClients = { stopped: false };
  let clients: Promise<void>[] = [];
  try {
    nemesis = new Nemesis(cluster, {
      seed,
      kinds,
      sessionTimeoutMs,
      origin,
      onEvent: (event) => log(`nemesis: ${formatNemesisEvent(event)}`),
      interruptible: options.interruptible,
      ...options.schedule,
    });
    // ---- chaos: clients and nemesis together ----
    const chaosStarted = performance.now();
    const clientTimeoutMs = requestTimeoutMs + CLIENT_TIMEOUT_MARGIN_MS;
    clients = Array.from({ length: clientCount }, (_, i) =>
      runClient(`c${i + 1}`, {
        cluster,
        recorder,
        keys,
        prng: new Prng(seed + 1 + i),
        thinkMs: options.thinkMs ?? [0, 10],
        timeoutMs: clientTimeoutMs,
        stop: stopClients,
        problems,
        staleReads: options.staleReads === true,
        dialect: clientDialect(`c${i + 1}`)!,
      }));
    const until = chaosStarted + durationMs;
    await nemesis.run({ until, maxFaults: options.maxFaults });
    // Fault-free tail: clients keep going on the healed cluster.
    const tailMs = options.tailMs ?? 2000;
    const tailEnd = options.maxFaults !== undefined || nemesis.interrupted ? performance.now() + tailMs : Math.max(until, performance.now() + tailMs);
    await sleep(Math.max(0, tailEnd - performance.now()));
    stopClients.stopped = true;
    await settleClients(clients, problems);
    chaosMs = performance.now() - chaosStarted;

    // ---- healed: every node up, leaders back, final reads ----
    const finalStarted = performance.now();
    await nemesis.close();
    try {
      await cluster.cluster.waitForLeaders({ timeoutMs: FINAL_LEADERS_TIMEOUT_MS });
    } catch (error) {
      problems.push(`after healing: ${(error as Error).message}`);
    }
    finalValues = await finalReads(cluster, recorder, keys, problems);
    nodesAlive = await aliveNodes(cluster);
    if (nodesAlive.length !== cluster.specs.length) {
      problems.push(`nodes not alive at the end: ${cluster.specs.map((s) => s.id).filter((id) => !nodesAlive.includes(id)).join(", ")}`);
    }
    finalMs = performance.now() - finalStarted;
  } catch (error) {
    problems.push(`the run failed: ${(error as Error).stack ?? error}`);
  } finally {
    // Whatever happened: clients stop (each within its timeout), nothing stays injected.
    stopClients.stopped = true;
    await settleClients(clients, problems);
    await nemesis?.close();
    if (nemesis !== undefined) problems.push(...nemesis.problems);
  }

  // ---- check ----
  const checkStarted = performance.now();
  const history = recorder.history();
  const check = checkLinearizable(history, { maxStates: options.maxStates });
  problems.push(...explainFinalStates(history, finalValues));
  const checkMs = performance.now() - checkStarted;
  const counts = countOps(history);
  const longestGap = longestGapWithoutReply(history.filter((h) => !h.client.startsWith("final-")));
  const nemesisLog = nemesis?.log ?? [];
  const nemesisCounts = nemesis?.counts() ?? { kill: 0, pause: 0, partition: 0, "zk-cut": 0, "zk-pause": 0 };
  const verdict = check.ok ? "linearizable" : check.inconclusive ? "inconclusive" : "not_linearizable";
  const passed = verdict === "linearizable" && problems.length === 0;

  let artifactDir: string | undefined;
  if (!passed) {
    artifactDir = writeArtifacts({ seed, history, nemesisLog, check, problems, dataDir });
    log(`chaos: FAILED with seed ${seed} (replay with ${CHAOS_SEED_ENV}=${seed}); history, nemesis log and node logs in ${artifactDir}`);
    for (const problem of problems) log(`chaos: problem: ${problem}`);
    if (!check.ok) {
      log(`chaos: checker: ${check.message}`);
      log(`chaos: ops of key ${check.key} around the ones named:\n${relevantOps(history, check)}`);
    }
    printLogs(dataDir);
  }
  // After the verdict: a failure to stop is reported, not part of it.
  await cluster.stop().catch((error) => log(`chaos: stopping the cluster failed: ${(error as Error).message}`));

  const totalMs = performance.now() - origin;
  const verdictText = verdict === "linearizable"
    ? "linearizable"
    : verdict === "inconclusive"
    ? `INCONCLUSIVE (${firstLine(check.message)})`
    : `NOT LINEARIZABLE (${firstLine(check.message)})`;
  const summary = `chaos: ${counts.ops} operations (${counts.ok} ok, ${counts.failed} failed, ${counts.unknown} unknown), ` +
    `nemesis: ${nemesisCounts.kill} kills, ${nemesisCounts.pause} pauses, ${nemesisCounts.partition} partitions, ` +
    `${nemesisCounts["zk-cut"]} cut off ZooKeeper, ${nemesisCounts["zk-pause"]} ZooKeeper pauses, ` +
    `verdict: ${verdictText}` + (problems.length > 0 ? `, ${problems.length} problems` : "") +
    ` [seed ${seed}, ${(totalMs / 1000).toFixed(1)} s${nemesis?.interrupted === true ? ", interrupted by SIGINT" : ""}]`;
  log(
    `chaos: phases: setup ${Math.round(setupMs)} ms, chaos ${Math.round(chaosMs)} ms, final reads ${Math.round(finalMs)} ms, ` +
      `check ${Math.round(checkMs)} ms; longest time without a definite reply on one key: ${Math.round(longestGap.ms)} ms ` +
      `(${longestGap.key} from +${(longestGap.fromMs / 1000).toFixed(3)}s)`,
  );
  log(summary);
  return {
    seed,
    ...counts,
    nemesis: nemesisCounts,
    nemesisLog,
    verdict,
    check,
    problems,
    passed,
    finalValues,
    nodesAlive,
    history,
    artifactDir,
    longestGap,
    timings: { setupMs, chaosMs, finalMs, checkMs, totalMs },
    summary,
  };
}

// ---- clients ----

/** Waits for every client (once); a client that threw is a problem of the run. */
async function settleClients(clients: Promise<void>[], problems: string[]): Promise<void> {
  const settled = await Promise.allSettled(clients.splice(0));
  for (const result of settled) {
    if (result.status === "rejected") problems.push(`a client failed: ${(result.reason as Error)?.stack ?? result.reason}`);
  }
}

/** The dialects of PROTOCOL.md, which the clients speak in turn. */
export const CLIENT_DIALECTS = ["plain", "json", "resp"] as const;
/** One of {@linkcode CLIENT_DIALECTS}. */
export type ClientDialect = typeof CLIENT_DIALECTS[number];

/** The dialect client `c<n>` speaks: c1 plain, c2 JSON, c3 RESP, c4 plain...; undefined for other names (final reads). */
export function clientDialect(client: string): ClientDialect | undefined {
  const match = /^c(\d+)$/.exec(client);
  return match === null ? undefined : CLIENT_DIALECTS[(Number(match[1]) - 1) % CLIENT_DIALECTS.length];
}

/** One request in `dialect`, with its line ending(s). */
function encodeRequest(dialect: ClientDialect, op: HistoryOp["op"], key: string, value: string | undefined): string {
  const command = op === "put" ? "PUT" : op === "get" ? "GET" : "DELETE";
  if (dialect === "json") return JSON.stringify(op === "put" ? { op: command, key, value } : { op: command, key }) + "\n";
  if (dialect === "resp") {
    const args = op === "put" ? ["SET", key, value ?? ""] : [op === "get" ? "GET" : "DEL", key];
    return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("");
  }
  return op === "put" ? `PUT ${key} ${value}\n` : `${command} ${key}\n`;
}

/**
 * A RESP reply in the plain dialect's words (what the history records):
 * `+OK` → OK, `$n` → VALUE, `$-1` → NOT_FOUND, `:1`/`:0` → DELETED/NOT_FOUND,
 * `-ERR CODE ...` → ERR CODE .... Undefined until `buffer` holds a whole reply.
 */
function takeRespReply(buffer: string): { reply: string; rest: string } | undefined {
  const end = buffer.indexOf("\r\n");
  if (end < 0) return undefined;
  const head = buffer.slice(0, end);
  const rest = buffer.slice(end + 2);
  if (head.startsWith("$") && head !== "$-1") {
    const length = Number(head.slice(1));
    if (rest.length < length + 2) return undefined; // values here are ASCII: characters are bytes
    return { reply: `VALUE ${rest.slice(0, length)}`, rest: rest.slice(length + 2) };
  }
  const plain = head === "+OK" ? "OK" : head === "$-1" || head === ":0" ? "NOT_FOUND" : head === ":1" ? "DELETED" : head.startsWith("-") ? head.slice(1) : `(unexpected RESP reply ${head})`;
  return { reply: plain, rest };
}

/** What one client needs. */
interface ClientContext {
  cluster: TestCluster;
  recorder: HistoryRecorder;
  keys: readonly string[];
  prng: Prng;
  thinkMs: readonly [number, number];
  timeoutMs: number;
  stop: { stopped: boolean };
  problems: string[];
  staleReads: boolean;
  dialect: ClientDialect;
}

/**
 * One client: one request at a time on its own connection to a random node;
 * a connection that fails with a request in flight leaves that op unknown,
 * and the client reconnects (to another random node).
 */
async function runClient(name: string, context: ClientContext): Promise<void> {
  const { cluster, recorder, keys, prng } = context;
  let connection: LineConnection | undefined;
  let seq = 0;
  try {
    while (!context.stop.stopped) {
      if (connection === undefined) {
        const spec = prng.pick(cluster.specs);
        connection = await LineConnection.open(spec.host, spec.port, CONNECT_TIMEOUT_MS).catch(() => undefined);
        if (connection !== undefined && context.staleReads && (await connection.request("READONLY\n", context.timeoutMs)) !== "OK") {
          connection.destroy();
          connection = undefined;
        }
        if (connection === undefined) {
          await sleep(RECONNECT_DELAY_MS);
          continue;
        }
      }
      const key = prng.pick(keys);
      const roll = prng.float();
      const op = roll < 0.45 ? "get" : roll < 0.85 ? "put" : "delete";
      const value = op === "put" ? `${name}-${++seq}` : undefined;
      const line = encodeRequest(context.dialect, op, key, value);
      const handle = recorder.invoke({ client: name, op, key, value });
      const reply = await connection.request(line, context.timeoutMs, { resp: context.dialect === "resp" });
      if (reply === undefined || reply.startsWith("BYE")) {
        recorder.lose(handle);
        connection.destroy();
        connection = undefined;
        continue;
      }
      try {
        recorder.complete(handle, reply);
      } catch (error) {
        context.problems.push(`${name}: ${JSON.stringify(line)} got an impossible reply: ${(error as Error).message}`);
      }
      if (prng.chance(SWITCH_NODE_CHANCE)) {
        connection.destroy();
        connection = undefined;
      }
      const [low, high] = context.thinkMs;
      if (high > 0) await sleep(prng.range(low, high));
    }
  } finally {
    connection?.destroy();
  }
}

/** A client connection that sends one line at a time and reads one reply line. */
class LineConnection {
  #buffer = "";
  #closed = false;
  #waiter: (() => void) | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.#buffer += chunk;
      this.#waiter?.();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      this.#closed = true;
      this.#waiter?.();
    });
  }

  /** Connects; rejects on refusal or after `timeoutMs`. */
  static open(host: string, port: number, timeoutMs: number): Promise<LineConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port, noDelay: true });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no connection to ${host}:${port} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("error", (error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(error);
      });
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        resolve(new LineConnection(socket));
      });
    });
  }

  /**
   * Sends `request` (with its line ending); resolves with the reply line (a
   * RESP reply, with `resp`, in the plain dialect's words), or undefined when
   * the connection closed or no reply came in time.
   */
  request(request: string, timeoutMs: number, { resp = false }: { resp?: boolean } = {}): Promise<string | undefined> {
    assert.equal(this.#waiter, undefined, "one request at a time");
    assert.equal(this.#buffer, "", "no reply without a request");
    if (this.#closed) return Promise.resolve(undefined);
    this.socket.write(request);
    return new Promise((resolve) => {
      const finish = (reply: string | undefined): void => {
        clearTimeout(timer);
        this.#waiter = undefined;
        resolve(reply);
      };
      const timer = setTimeout(() => finish(undefined), timeoutMs);
      this.#waiter = () => {
        const taken = resp ? takeRespReply(this.#buffer) : undefined;
        const end = this.#buffer.indexOf("\n");
        if (taken !== undefined) {
          this.#buffer = taken.rest;
          finish(taken.reply);
        } else if (!resp && end >= 0) {
          const reply = this.#buffer.slice(0, end).replace(/\r$/, "");
          this.#buffer = this.#buffer.slice(end + 1);
          finish(reply);
        } else if (this.#closed || this.#buffer.length > MAX_REPLY_BYTES) {
          finish(undefined);
        }
      };
      this.#waiter();
    });
  }

  destroy(): void {
    this.socket.destroy();
  }
}

// ---- the end of a run ----

/**
 * Reads every key through every node (recorded as clients `final-<node>`),
 * retrying definite errors and timeouts until a deadline; returns each key's
 * value when all nodes agree, and records a problem otherwise.
 */
async function finalReads(
  cluster: TestCluster,
  recorder: HistoryRecorder,
  keys: readonly string[],
  problems: string[],
): Promise<Record<string, string | null | undefined>> {
  const deadline = performance.now() + FINAL_READ_TIMEOUT_MS;
  const values: Record<string, string | null | undefined> = {};
  for (const key of keys) {
    const seen = new Map<string, string | null>();
    for (const spec of cluster.specs) {
      let got: string | null | undefined;
      while (got === undefined && performance.now() < deadline) {
        const handle = recorder.invoke({ client: `final-${spec.id}`, op: "get", key });
        const reply = await cluster.send(spec.id, `GET ${key}`, 10_000).catch(() => undefined);
        if (reply === undefined) {
          recorder.lose(handle);
          continue;
        }
        recorder.complete(handle, reply);
        if (reply.startsWith("VALUE ")) got = reply.slice("VALUE ".length);
        else if (reply === "NOT_FOUND") got = null;
        else await sleep(RECONNECT_DELAY_MS * 2);
      }
      if (got === undefined) problems.push(`final read of ${key} through ${spec.id}: no definite reply within ${FINAL_READ_TIMEOUT_MS} ms`);
      else seen.set(spec.id, got);
    }
    const distinct = new Set(seen.values());
    if (distinct.size > 1) {
      problems.push(`final reads of ${key} disagree: ${[...seen].map(([id, v]) => `${id}=${v === null ? "NOT_FOUND" : v}`).join(" ")}`);
    }
    values[key] = distinct.size === 1 && seen.size === cluster.specs.length ? [...distinct][0] : undefined;
  }
  return values;
}

/** Nodes that run and answer PING. */
async function aliveNodes(cluster: TestCluster): Promise<string[]> {
  const alive: string[] = [];
  for (const spec of cluster.specs) {
    if (cluster.cluster.pid(spec.id) === undefined) continue;
    const reply = await cluster.send(spec.id, "PING", 5_000).catch(() => "");
    if (reply === "PONG") alive.push(spec.id);
  }
  return alive;
}

/**
 * The explicit "no acknowledged write lost" check on the final state of
 * each key: it must be left by a write that no acknowledged write
 * definitely followed (a PUT of that value, OK or unknown; for "absent", a
 * DELETE or the initial state). Returns one message per key that fails. The
 * linearizability check implies this; this names the lost write plainly.
 */
export function explainFinalStates(history: readonly HistoryOp[], finals: Record<string, string | null | undefined>): string[] {
  const messages: string[] = [];
  for (const [key, final] of Object.entries(finals)) {
    if (final === undefined) continue;
    const writes = history.filter((h) => h.key === key && h.op !== "get" && h.outcome !== "failed");
    const acked = writes.filter((h) => h.outcome === "ok" || h.outcome === "deleted");
    const latestAckedStart = acked.reduce((latest, h) => Math.max(latest, h.start), -Infinity);
    /** Not surely overwritten: no acknowledged write started after it returned. */
    const live = (h: HistoryOp) => !(Number.isFinite(h.end) && h.outcome !== "unknown" && latestAckedStart > h.end);
    const explained = final === null
      ? acked.length === 0 || writes.some((h) => h.op === "delete" && live(h))
      : writes.some((h) => h.op === "put" && h.value === final && live(h));
    if (!explained) {
      const last = acked.reduce<HistoryOp | undefined>((best, h) => (best === undefined || h.end > best.end ? h : best), undefined);
      messages.push(
        `key ${key}: the final state ${final === null ? "NOT_FOUND" : JSON.stringify(final)} is left by no write that could be last; ` +
          `an acknowledged write was lost (the last to return: ${last === undefined ? "none" : describe(last)})`,
      );
    }
  }
  return messages;
}

/** Counts ops by outcome class. */
export function countOps(history: readonly HistoryOp[]): OpCounts {
  const counts: OpCounts = { ops: history.length, ok: 0, failed: 0, unknown: 0 };
  for (const op of history) {
    if (op.outcome === "failed") counts.failed++;
    else if (op.outcome === "unknown") counts.unknown++;
    else counts.ok++;
  }
  return counts;
}

/** Per key, the gap between consecutive definite replies (from the first op on); the longest over all keys. */
export function longestGapWithoutReply(history: readonly HistoryOp[]): { key: string; fromMs: number; ms: number } {
  let longest = { key: "", fromMs: 0, ms: 0 };
  if (history.length === 0) return longest;
  const first = history.reduce((min, h) => Math.min(min, h.start), Infinity);
  const byKey = new Map<string, number[]>();
  for (const h of history) {
    if (h.outcome === "unknown" || h.outcome === "failed") continue;
    const ends = byKey.get(h.key) ?? [];
    ends.push(h.end);
    byKey.set(h.key, ends);
  }
  for (const [key, ends] of byKey) {
    ends.sort((a, b) => a - b);
    let previous = first;
    for (const end of ends) {
      if (end - previous > longest.ms) longest = { key, fromMs: previous, ms: end - previous };
      previous = end;
    }
  }
  return longest;
}

/** The failing key's ops named by the checker (`#index`), each with its neighbours in time. */
function relevantOps(history: readonly HistoryOp[], check: CheckResult): string {
  const named = new Set([...(check.message ?? "").matchAll(/#(\d+)/g)].map((m) => Number(m[1])));
  const keyOps = history.map((h, i) => ({ h, i })).filter(({ h }) => h.key === check.key).sort((a, b) => a.h.start - b.h.start);
  const shown = new Set<number>();
  keyOps.forEach(({ i }, position) => {
    if (!named.has(i)) return;
    for (let j = Math.max(0, position - SHOWN_NEIGHBOURS); j <= Math.min(keyOps.length - 1, position + SHOWN_NEIGHBOURS); j++) shown.add(j);
  });
  if (shown.size === 0) for (let j = Math.max(0, keyOps.length - 2 * SHOWN_NEIGHBOURS); j < keyOps.length; j++) shown.add(j);
  return [...shown].sort((a, b) => a - b).map((j) => `  #${keyOps[j].i} ${describe(keyOps[j].h)}`).join("\n");
}

function describe(h: HistoryOp): string {
  const request = h.op === "put" ? `PUT ${h.key} ${h.value}` : `${h.op.toUpperCase()} ${h.key}`;
  const reply = h.outcome === "ok" && h.op === "get" ? `VALUE ${h.result}` : h.outcome;
  const end = Number.isFinite(h.end) ? h.end.toFixed(1) : "∞";
  return `${h.client} ${request} -> ${reply} [${h.start.toFixed(1)}..${end}]`;
}

/** Writes what a failed run needs for a bug report; returns the directory. */
function writeArtifacts(run: {
  seed: number;
  history: readonly HistoryOp[];
  nemesisLog: readonly NemesisEvent[];
  check: CheckResult;
  problems: readonly string[];
  dataDir: string;
}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `ringkv-chaos-${run.seed}-`));
  fs.writeFileSync(path.join(dir, "history.jsonl"), formatHistoryJsonl(run.history));
  fs.writeFileSync(path.join(dir, "nemesis.log"), run.nemesisLog.map(formatNemesisEvent).join("\n") + "\n");
  const report = [`seed ${run.seed}`, `replay: ${CHAOS_SEED_ENV}=${run.seed}`, "", "checker:", run.check.message ?? "linearizable", "", "problems:", ...run.problems];
  fs.writeFileSync(path.join(dir, "report.txt"), report.join("\n") + "\n");
  for (const name of fs.readdirSync(run.dataDir)) {
    if (name.endsWith(".log")) fs.copyFileSync(path.join(run.dataDir, name), path.join(dir, name));
  }
  return dir;
}

function firstLine(text: string | undefined): string {
  return (text ?? "").split("\n")[0];
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
