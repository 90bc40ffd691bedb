/**
 * The nemesis of the fault suite: injects one fault at a time into a running
 * local cluster (real processes, real iptables) on a schedule drawn from a
 * seeded PRNG, and heals it.
 *
 * - kill: SIGKILL a node, restart it later on the same data dir;
 * - pause: SIGSTOP the current leader of a partition for longer than the
 *   ZooKeeper session timeout, then SIGCONT (it wakes up deposed);
 * - partition: DROP every TCP packet of the cluster's port between one
 *   node's loopback address and every other node's address, both ways,
 *   half of the time its route to ZooKeeper too, then remove the rules;
 * - zk-cut: DROP every packet of one node's route to ZooKeeper (a relay on
 *   its own address, see tests/support/tcp_relay.ts): it still reaches its
 *   peers, but its session expires and its partitions elect without it;
 * - zk-pause: SIGSTOP ZooKeeper itself, for a fraction of the session
 *   timeout up to more than twice it, then SIGCONT (every node loses
 *   ZooKeeper at once; after a long pause their sessions expire and every
 *   partition elects again).
 *
 * Only one node is faulty at a time, and the next fault waits until the
 * cluster has recovered (every node answers, every partition serves a
 * linearizable read through every node),
 * so a majority of every replica group is always there: the run has
 * availability to check, not just safety.
 *
 * Every iptables rule carries the comment `ringkv-chaos-<pid>` and is removed
 * on heal, at the end, on failure, on exit and on SIGINT/SIGTERM; rules left
 * by a dead process are swept at start.
 *
 * @module
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import net from "node:net";
import { performance } from "node:perf_hooks";
import { promisify } from "node:util";
import { Prng } from "../simulation/prng.ts";
import type { TestCluster } from "../support/cluster.ts";
import { processAlive } from "../../src/storage/lock.ts";

const execFileAsync = promisify(execFile);

/** The kinds of fault the nemesis injects. */
export type FaultKind = "kill" | "pause" | "partition" | "zk-cut" | "zk-pause";

/** Every fault kind, in a fixed order. */
export const FAULT_KINDS: readonly FaultKind[] = ["kill", "pause", "partition", "zk-cut", "zk-pause"];

/** iptables binary (nf_tables backend; we run as root). */
export const IPTABLES = "/usr/sbin/iptables";
/** Every rule the fault suite installs has a comment starting with this. */
export const CHAOS_TAG_PREFIX = "ringkv-chaos-";
/** Chains the partition rules go into (loopback packets traverse both OUTPUT and INPUT). */
const CHAOS_CHAIN = "INPUT";
/** Seconds an iptables call waits for the xtables lock (`-w`). */
const IPTABLES_LOCK_WAIT_S = 5;
/** One iptables call may take this long. */
const IPTABLES_TIMEOUT_MS = 10_000;
/** Most rules a sweep removes (a sanity limit: we never install nearly this many). */
const MAX_SWEPT_RULES = 1_000;

/** After installing a partition, a connection from the isolated address must not open within this long. */
const PARTITION_PROBE_MS = 400;
/** Default deadline for the cluster to recover after a heal. */
export const DEFAULT_RECOVERY_TIMEOUT_MS = 45_000;
/** Poll interval while waiting for recovery. */
const RECOVERY_POLL_MS = 100;
/** One PING while checking that a node answers. */
const PING_TIMEOUT_MS = 2_000;
/** One probe read while checking that a partition serves. */
const PROBE_TIMEOUT_MS = 5_000;
/** Key prefix of the probe reads (never written; the clients use other keys). */
export const PROBE_KEY_PREFIX = "nemesis-probe-";
/** Candidate probe keys tried per partition before giving up. */
const MAX_PROBE_CANDIDATES = 10_000;

/** The comment tag of the rules process `pid` installs. */
export function chaosTag(pid: number = process.pid): string {
  return `${CHAOS_TAG_PREFIX}${pid}`;
}

/** `[min, max]` in ms (inclusive). */
export type MsRange = readonly [number, number];

/** Options for {@linkcode FaultSchedule}. */
export interface ScheduleOptions {
  /** Kinds to inject. Defaults to {@linkcode FAULT_KINDS}. */
  kinds?: readonly FaultKind[];
  /** The nodes' ZooKeeper session timeout (pauses last a multiple of it). */
  sessionTimeoutMs: number;
  /** Quiet time before each fault (after the previous one healed and the cluster recovered). Defaults to [1000, 3000]. */
  gapMs?: MsRange;
  /** How long a killed node stays down. Defaults to [1000, 4000]. */
  killDownMs?: MsRange;
  /** How long a partition lasts. Defaults to [2000, 5000]. */
  partitionMs?: MsRange;
  /** How long a node is cut off from ZooKeeper. Defaults to [1000, 5000]. */
  zkCutMs?: MsRange;
  /** A pause lasts the session timeout times a factor drawn from this range. Defaults to [1.5, 2.5]. */
  pauseFactor?: readonly [number, number];
  /**
   * A ZooKeeper pause lasts the session timeout times a factor drawn from
   * this range. Defaults to [0.5, 2.5]: short ones where the nodes only see
   * the connection drop, long ones after which their sessions expire.
   */
  zkPauseFactor?: readonly [number, number];
}

/** Whom a fault hits: the leader of the partition with this index (in layout order), or the node with this index. */
export type FaultTarget = { leaderOf: number } | { node: number };

/** One fault as planned from the seed; who the "leader" target is depends on the run. */
export interface PlannedFault {
  kind: FaultKind;
  target: FaultTarget;
  /** Quiet time before injecting it. */
  gapMs: number;
  /** How long the fault lasts before it is healed. */
  durationMs: number;
  /** A partition that cuts the node off from ZooKeeper too. */
  withZk?: boolean;
}

/**
 * The seeded fault plan: faults come in rounds, each round a seeded
 * permutation of the enabled kinds, so any run of `kinds.length` faults from
 * the start of a round has every kind once (a short run still covers all).
 * Targets and durations come from the same PRNG: one seed, one plan.
 */
export class FaultSchedule {
  readonly #prng: Prng;
  readonly #kinds: readonly FaultKind[];
  readonly #options: ScheduleOptions;
  #round: FaultKind[] = [];

  /** Creates the plan for `seed`. */
  constructor(seed: number, options: ScheduleOptions) {
    const kinds = options.kinds ?? FAULT_KINDS;
    assert.ok(kinds.length > 0, "at least one fault kind");
    for (const kind of kinds) assert.ok(FAULT_KINDS.includes(kind), `unknown fault kind ${kind}`);
    assert.ok(options.sessionTimeoutMs > 0, "a positive session timeout");
    this.#prng = new Prng(seed);
    this.#kinds = [...new Set(kinds)];
    this.#options = options;
  }

  /** The next fault of the plan. */
  next(): PlannedFault {
    if (this.#round.length === 0) {
      const round = [...this.#kinds];
      for (let i = round.length - 1; i > 0; i--) {
        const j = this.#prng.int(i + 1);
        [round[i], round[j]] = [round[j], round[i]];
      }
      this.#round = round;
    }
    const kind = this.#round.shift()!;
    const gapMs = drawMs(this.#prng, this.#options.gapMs ?? [1000, 3000]);
    // Pauses always hit a leader (that is the interesting case); kills and
    // partitions a leader half of the time, any node otherwise.
    const byLeader = kind === "pause" || this.#prng.chance(0.5);
    const index = this.#prng.int(1 << 16);
    const target: FaultTarget = byLeader ? { leaderOf: index } : { node: index };
    let durationMs: number;
    if (kind === "kill") durationMs = drawMs(this.#prng, this.#options.killDownMs ?? [1000, 4000]);
    else if (kind === "partition") durationMs = drawMs(this.#prng, this.#options.partitionMs ?? [2000, 5000]);
    else if (kind === "zk-cut") durationMs = drawMs(this.#prng, this.#options.zkCutMs ?? [1000, 5000]);
    else if (kind === "zk-pause") {
      const [low, high] = this.#options.zkPauseFactor ?? [0.5, 2.5];
      assert.ok(low > 0 && high >= low, "a positive ZooKeeper pause");
      durationMs = Math.round(this.#options.sessionTimeoutMs * (low + this.#prng.float() * (high - low)));
    } else {
      const [low, high] = this.#options.pauseFactor ?? [1.5, 2.5];
      assert.ok(low > 1 && high >= low, "a pause outlasts the session timeout");
      durationMs = Math.round(this.#options.sessionTimeoutMs * (low + this.#prng.float() * (high - low)));
    }
    if (kind === "partition") return { kind, target, gapMs, durationMs, withZk: this.#prng.chance(0.5) };
    return { kind, target, gapMs, durationMs };
  }
}

function drawMs(prng: Prng, [min, max]: MsRange): number {
  assert.ok(min >= 0 && max >= min, `bad range [${min}, ${max}]`);
  return prng.range(Math.round(min), Math.round(max));
}

// ---- iptables ----

/** Options for {@linkcode isolationRules}. */
export interface IsolationOptions {
  /** Addresses of the other nodes. */
  others: readonly string[];
  /** The port every node of the cluster listens on. */
  port: number;
  /** Comment tag of the rules (see {@linkcode chaosTag}). */
  tag: string;
}

/**
 * The rule bodies (chain, match, target; no -A/-I/-D) that cut `isolated`
 * off from each address of `others`, both directions, tagged with `tag`.
 * Only TCP to or from the cluster's `port` is dropped (every node of a test
 * cluster listens on the same port, peers connect to it): other clusters on
 * the same loopback addresses (tests running in parallel) are not cut, and
 * ZooKeeper on 127.0.0.1 stays reachable.
 */
export function isolationRules(isolated: string, options: IsolationOptions): string[][] {
  const { others, port, tag } = options;
  assert.ok(tag.startsWith(CHAOS_TAG_PREFIX), "every chaos rule carries the chaos tag");
  assert.ok(Number.isInteger(port) && port > 0 && port < 65536, `bad port ${port}`);
  const rules: string[][] = [];
  for (const other of others) {
    assert.notEqual(other, isolated, "a node is not partitioned from itself");
    for (const [source, destination] of [[isolated, other], [other, isolated]]) {
      rules.push([
        CHAOS_CHAIN, "-s", source, "-d", destination, "-p", "tcp", "-m", "multiport", "--ports", String(port),
        "-m", "comment", "--comment", tag, "-j", "DROP",
      ]);
    }
  }
  return rules;
}

/** Where a relay to ZooKeeper listens (see tests/support/tcp_relay.ts). */
export interface RelayAddress {
  host: string;
  port: number;
}

/**
 * The rule bodies that cut every connection to and from `relay`, tagged
 * with `tag`: only the node it belongs to uses that address and port, so
 * that node alone loses ZooKeeper.
 */
export function relayCutRules(relay: RelayAddress, tag: string): string[][] {
  assert.ok(tag.startsWith(CHAOS_TAG_PREFIX), "every chaos rule carries the chaos tag");
  assert.ok(Number.isInteger(relay.port) && relay.port > 0 && relay.port < 65536, `bad port ${relay.port}`);
  const comment = ["-m", "comment", "--comment", tag, "-j", "DROP"];
  return [
    [CHAOS_CHAIN, "-d", relay.host, "-p", "tcp", "--dport", String(relay.port), ...comment],
    [CHAOS_CHAIN, "-s", relay.host, "-p", "tcp", "--sport", String(relay.port), ...comment],
  ];
}

/** Options for {@linkcode listChaosRules}. */
export interface ListRulesOptions {
  /** Only rules tagged exactly this (see {@linkcode chaosTag}); default: every chaos rule. */
  tag?: string;
}

/** The `iptables -S` lines (every chain of the filter table) of chaos rules. */
export function listChaosRules(options: ListRulesOptions = {}): string[] {
  const out = execFileSync(IPTABLES, ["-w", String(IPTABLES_LOCK_WAIT_S), "-S"], { encoding: "utf8", timeout: IPTABLES_TIMEOUT_MS });
  return out.split("\n").filter((line) => {
    if (!line.startsWith("-A ")) return false;
    const tag = tagOfRule(line);
    return tag !== undefined && (options.tag === undefined ? tag.startsWith(CHAOS_TAG_PREFIX) : tag === options.tag);
  });
}

/** The comment of one `iptables -S` line, without quotes; undefined when it has none. */
function tagOfRule(line: string): string | undefined {
  const match = /--comment "?([^"\s]+)"?/.exec(line);
  return match?.[1];
}

/** Deletes one rule printed by `iptables -S` (its `-A` turned into `-D`); synchronous, for exit paths. */
function deleteRuleLineSync(line: string): void {
  const words = line.split(/\s+/).filter((w) => w !== "").map((w) => w.replace(/^"(.*)"$/, "$1"));
  assert.equal(words[0], "-A");
  execFileSync(IPTABLES, ["-w", String(IPTABLES_LOCK_WAIT_S), "-D", ...words.slice(1)], { stdio: "ignore", timeout: IPTABLES_TIMEOUT_MS });
}

/**
 * Removes every rule tagged exactly `tag` (synchronously: safe in an exit
 * handler); returns how many. Never throws: it runs on failure paths.
 */
export function removeChaosRules(tag: string = chaosTag()): number {
  let removed = 0;
  try {
    for (const line of listChaosRules({ tag })) {
      deleteRuleLineSync(line);
      removed++;
      assert.ok(removed <= MAX_SWEPT_RULES, "too many chaos rules");
    }
  } catch (error) {
    console.error(`nemesis: could not remove iptables rules tagged ${tag}: ${(error as Error).message}`);
  }
  return removed;
}

/**
 * Removes chaos rules left behind by processes that no longer run (a run
 * that was SIGKILLed); rules of a live chaos run are left alone. Returns how
 * many were removed.
 */
export function sweepStaleChaosRules(): number {
  let removed = 0;
  for (const line of listChaosRules()) {
    const pid = Number(tagOfRule(line)!.slice(CHAOS_TAG_PREFIX.length));
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) continue;
    deleteRuleLineSync(line);
    removed++;
    assert.ok(removed <= MAX_SWEPT_RULES, "too many chaos rules");
  }
  return removed;
}


async function iptables(args: readonly string[]): Promise<void> {
  await execFileAsync(IPTABLES, ["-w", String(IPTABLES_LOCK_WAIT_S), ...args], { timeout: IPTABLES_TIMEOUT_MS });
}

/** True when a TCP connection from `localAddress` to `host:port` opens within `timeoutMs`. */
function canConnect(localAddress: string, host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, localAddress });
    const finish = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.once("connect", () => finish(true));
    socket.once("error", () => finish(false));
  });
}

// ---- the nemesis ----

/** One line of the nemesis log. */
export interface NemesisEvent {
  /** ms since the run's origin. */
  atMs: number;
  /** Wall-clock time, ISO 8601. */
  time: string;
  event: "plan" | "kill" | "restart" | "pause" | "resume" | "partition" | "heal" | "recovered" | "sweep" | "interrupt" | "error";
  node?: string;
  detail?: string;
}

/** How the nemesis log names ZooKeeper (its faults hit no node). */
const ZOOKEEPER = "zookeeper";

/** SIGINTs this close together are one Ctrl-C (the terminal's, and npm's forwarded copy). */
const SAME_CTRL_C_MS = 1_000;

/** Options for {@linkcode Nemesis}. */
export interface NemesisOptions extends ScheduleOptions {
  seed: number;
  /** `performance.now()` at the start of the run: event times are relative to it (the history uses the same clock). */
  origin?: number;
  /** Called with every event as it is logged. */
  onEvent?: (event: NemesisEvent) => void;
  /** Deadline for the cluster to recover after a heal. Defaults to {@linkcode DEFAULT_RECOVERY_TIMEOUT_MS}. */
  recoveryTimeoutMs?: number;
  /**
   * The first SIGINT ends the run early instead of exiting: heal, stop (see
   * {@linkcode Nemesis.interrupted}), so the caller still checks what was
   * recorded. A second one exits at once, rules removed.
   */
  interruptible?: boolean;
}

/** Options for {@linkcode Nemesis.run}. */
export interface NemesisRunOptions {
  /** No fault starts after this `performance.now()` time. */
  until: number;
  /** Stop after this many faults. Defaults to no limit. */
  maxFaults?: number;
}

/** The fault currently injected, to heal. */
type ActiveFault =
  | { kind: "kill"; node: string }
  | { kind: "pause"; node: string }
  | { kind: "partition"; node: string }
  | { kind: "zk-cut"; node: string }
  | { kind: "zk-pause"; node: string };

/**
 * Injects the faults of a {@linkcode FaultSchedule} into `cluster`, one at a
 * time, healing each and waiting for recovery before the next. Call
 * {@linkcode Nemesis.close} when done (it heals anything still active).
 */
export class Nemesis {
  /** Every event so far, in order. */
  readonly log: NemesisEvent[] = [];
  /** Problems with the product seen by the nemesis (a node that does not restart, a cluster that does not recover). */
  readonly problems: string[] = [];
  readonly #cluster: TestCluster;
  readonly #options: NemesisOptions;
  readonly #schedule: FaultSchedule;
  readonly #tag = chaosTag();
  readonly #counts: Record<FaultKind, number> = { kill: 0, pause: 0, partition: 0, "zk-cut": 0, "zk-pause": 0 };
  /** One never-written key per partition, read to check that the partition serves. */
  readonly #probeKeys = new Map<string, string>();
  #active: ActiveFault | undefined;
  #stopping = false;
  #interrupted = false;
  #interruptedAt: number | undefined;
  #wakeStop: (() => void) | undefined;
  readonly #onExit = (): void => this.#emergencyHeal();
  readonly #onSignal = (signal: NodeJS.Signals): void => {
    // npm forwards the terminal's SIGINT to a script that got it already: one Ctrl-C.
    if (signal === "SIGINT" && this.#interruptedAt !== undefined && performance.now() - this.#interruptedAt < SAME_CTRL_C_MS) return;
    if (signal === "SIGINT" && this.#options.interruptible === true && !this.#stopping) {
      this.#interrupted = true;
      this.#interruptedAt = performance.now();
      this.#record({ event: "interrupt", detail: "SIGINT: healing, then the final reads and the check (SIGINT again exits at once)" });
      this.stop();
      return;
    }
    this.#emergencyHeal();
    process.exit(signal === "SIGINT" ? 130 : signal === "SIGHUP" ? 129 : 143);
  };

  /** Sweeps stale rules and arms the exit and signal hooks that remove this process's rules. */
  constructor(cluster: TestCluster, options: NemesisOptions) {
    this.#cluster = cluster;
    this.#options = options;
    this.#schedule = new FaultSchedule(options.seed, options);
    const partitions = Object.keys(cluster.cluster.layout).sort();
    for (let i = 0; i < MAX_PROBE_CANDIDATES && this.#probeKeys.size < partitions.length; i++) {
      const key = `${PROBE_KEY_PREFIX}${i}`;
      const partition = cluster.partitionOf(key);
      if (!this.#probeKeys.has(partition)) this.#probeKeys.set(partition, key);
    }
    assert.equal(this.#probeKeys.size, partitions.length, "a probe key for every partition");
    const swept = sweepStaleChaosRules();
    if (swept > 0) this.#record({ event: "sweep", detail: `removed ${swept} stale iptables rules` });
    removeChaosRules(this.#tag);
    process.on("exit", this.#onExit);
    process.on("SIGINT", this.#onSignal);
    process.on("SIGTERM", this.#onSignal);
    process.on("SIGHUP", this.#onSignal);
  }

  /** True once a SIGINT ended the run early (with `interruptible`). */
  get interrupted(): boolean {
    return this.#interrupted;
  }

  /** Faults injected so far, by kind. */
  counts(): Record<FaultKind, number> {
    return { ...this.#counts };
  }

  /**
   * Runs the schedule until `until` or `maxFaults`, or until {@linkcode stop}:
   * gap, inject, wait, heal, wait for recovery. Stops early (with a problem
   * recorded) when the cluster does not recover. Always leaves nothing injected.
   */
  async run(options: NemesisRunOptions): Promise<void> {
    let faults = 0;
    try {
      while (!this.#stopping && performance.now() < options.until && faults < (options.maxFaults ?? Infinity)) {
        const plan = this.#schedule.next();
        await this.#sleep(plan.gapMs);
        if (this.#stopping || performance.now() >= options.until) break;
        await this.#inject(plan);
        faults++;
        await this.#sleep(plan.durationMs);
        await this.heal();
        if (!(await this.#waitRecovered())) break;
      }
    } finally {
      await this.heal();
    }
  }

  /** Asks {@linkcode run} to heal the current fault now and return. */
  stop(): void {
    this.#stopping = true;
    this.#wakeStop?.();
  }

  /** Heals the active fault, if any: restarts a killed node, resumes a paused node or ZooKeeper, removes partition rules. */
  async heal(): Promise<void> {
    const fault = this.#active;
    if (fault === undefined) return;
    this.#active = undefined;
    try {
      if (fault.kind === "kill") {
        await this.#cluster.cluster.start(fault.node);
        this.#record({ event: "restart", node: fault.node, detail: `pid ${this.#cluster.cluster.pid(fault.node)}` });
      } else if (fault.kind === "pause") {
        this.#cluster.cluster.resume(fault.node);
        this.#record({ event: "resume", node: fault.node });
      } else if (fault.kind === "zk-pause") {
        this.#cluster.zk.resume();
        this.#record({ event: "resume", node: fault.node, detail: `SIGCONT pid ${this.#cluster.zk.pid}` });
      } else {
        const removed = removeChaosRules(this.#tag);
        const left = listChaosRules({ tag: this.#tag }).length;
        this.#record({ event: "heal", node: fault.node, detail: `removed ${removed} iptables rules` });
        if (left > 0) this.#problem(`nemesis: ${left} iptables rules tagged ${this.#tag} are left after healing ${fault.node}`);
      }
    } catch (error) {
      this.#problem(`heal of ${fault.kind} on ${fault.node} failed: ${(error as Error).message}`);
      if (fault.kind === "partition" || fault.kind === "zk-cut") removeChaosRules(this.#tag);
    }
  }

  /** Heals, removes the hooks; idempotent. */
  async close(): Promise<void> {
    this.stop();
    await this.heal();
    removeChaosRules(this.#tag);
    process.off("exit", this.#onExit);
    process.off("SIGINT", this.#onSignal);
    process.off("SIGTERM", this.#onSignal);
    process.off("SIGHUP", this.#onSignal);
  }

  /** Waits until every node answers and every partition serves reads through every node; records a problem on timeout. */
  async #waitRecovered(): Promise<boolean> {
    const started = performance.now();
    const timeoutMs = this.#options.recoveryTimeoutMs ?? DEFAULT_RECOVERY_TIMEOUT_MS;
    const deadline = started + timeoutMs;
    let missing = "";
    while (performance.now() < deadline) {
      missing = await this.#notRecovered();
      if (missing === "") {
        this.#record({ event: "recovered", detail: `after ${Math.round(performance.now() - started)} ms` });
        return true;
      }
      await new Promise((resolve) => setTimeout(resolve, RECOVERY_POLL_MS));
    }
    this.#problem(`the cluster did not recover within ${timeoutMs} ms after a heal: ${missing}`);
    return false;
  }

  /**
   * What is still missing for recovery, in words; "" when recovered: every
   * node runs and answers PING, and every partition serves a linearizable
   * GET (a read-index round with a majority) through every node.
   */
  async #notRecovered(): Promise<string> {
    const cluster = this.#cluster;
    for (const spec of cluster.specs) {
      if (cluster.cluster.pid(spec.id) === undefined) return `${spec.id} is not running`;
      const reply = await cluster.send(spec.id, "PING", PING_TIMEOUT_MS).catch(() => "");
      if (reply !== "PONG") return `${spec.id} does not answer PING`;
    }
    for (const [partition, key] of this.#probeKeys) {
      for (const spec of cluster.specs) {
        const reply = await cluster.send(spec.id, `GET ${key}`, PROBE_TIMEOUT_MS).catch((e: Error) => `(${e.message})`);
        if (reply !== "NOT_FOUND" && !reply.startsWith("VALUE ")) return `partition ${partition} does not serve a read through ${spec.id}: ${reply}`;
      }
    }
    return "";
  }

  async #inject(plan: PlannedFault): Promise<void> {
    assert.equal(this.#active, undefined, "one fault at a time");
    if (plan.kind === "zk-pause") {
      this.#record({ event: "plan", node: ZOOKEEPER, detail: `pause ZooKeeper for ${plan.durationMs} ms` });
      this.#counts["zk-pause"]++;
      this.#active = { kind: "zk-pause", node: ZOOKEEPER };
      this.#cluster.zk.pause();
      this.#record({ event: "pause", node: ZOOKEEPER, detail: `SIGSTOP pid ${this.#cluster.zk.pid}` });
      return;
    }
    const node = await this.#resolveTarget(plan.target);
    const targetText = "leaderOf" in plan.target ? `leader of ${this.#partitionName(plan.target.leaderOf)}` : "node";
    const what = plan.withZk === true ? "partition (ZooKeeper too)" : plan.kind;
    this.#record({ event: "plan", node, detail: `${what} ${targetText} for ${plan.durationMs} ms` });
    this.#counts[plan.kind]++;
    if (plan.kind === "kill") {
      this.#active = { kind: "kill", node };
      const pid = this.#cluster.cluster.pid(node);
      await this.#cluster.cluster.kill(node, "SIGKILL");
      this.#record({ event: "kill", node, detail: `SIGKILL pid ${pid}` });
    } else if (plan.kind === "pause") {
      this.#active = { kind: "pause", node };
      this.#cluster.cluster.pause(node);
      this.#record({ event: "pause", node, detail: `SIGSTOP pid ${this.#cluster.cluster.pid(node)}` });
    } else if (plan.kind === "zk-cut") {
      this.#active = { kind: "zk-cut", node };
      const relay = this.#zkRelay(node);
      await this.#installRules(relayCutRules(relay, this.#tag), [[relay.host, relay]]);
      this.#record({ event: "partition", node, detail: `${node} cut off from ZooKeeper (its relay ${relay.host}:${relay.port}, verified)` });
    } else {
      this.#active = { kind: "partition", node };
      const spec = this.#cluster.specs.find((s) => s.id === node)!;
      const others = this.#cluster.specs.filter((s) => s.id !== node);
      assert.ok(others.every((s) => s.port === spec.port), "every node of the cluster listens on one port (distinct hosts)");
      const rules = isolationRules(spec.host, { others: others.map((s) => s.host), port: spec.port, tag: this.#tag });
      // The partition must be real: a connection from the isolated address to a peer must not open.
      const probes: [string, RelayAddress][] = [[spec.host, others[0]]];
      if (plan.withZk === true) {
        const relay = this.#zkRelay(node);
        rules.push(...relayCutRules(relay, this.#tag));
        probes.push([relay.host, relay]);
      }
      await this.#installRules(rules, probes);
      const zkText = plan.withZk === true ? " and from ZooKeeper" : "";
      this.#record({ event: "partition", node, detail: `${spec.host} cut off from ${others.map((s) => s.host).join(",")}${zkText} (${rules.length} rules, verified)` });
    }
  }

  /** Inserts `rules`, then checks that each probe (from address, to host:port) no longer connects; removes them all if one does. */
  async #installRules(rules: readonly string[][], probes: readonly [string, RelayAddress][]): Promise<void> {
    for (const rule of rules) await iptables(["-I", ...rule]);
    for (const [from, to] of probes) {
      if (await canConnect(from, to.host, to.port, PARTITION_PROBE_MS)) {
        removeChaosRules(this.#tag);
        this.#active = undefined;
        throw new Error(`nemesis: after ${rules.length} DROP rules, ${from} still connects to ${to.host}:${to.port}`);
      }
    }
  }

  /** The relay `node` reaches ZooKeeper through (the cluster must be started with `zkRelays`). */
  #zkRelay(node: string): RelayAddress {
    const relay = this.#cluster.zkRelays.get(node);
    if (relay === undefined) throw new Error(`nemesis: ${node} has no ZooKeeper relay (start the cluster with zkRelays)`);
    return relay;
  }

  /** The node a target names now; a leader target falls back to a node index when the partition has no leader. */
  async #resolveTarget(target: FaultTarget): Promise<string> {
    const specs = this.#cluster.specs;
    if ("leaderOf" in target) {
      const leader = await this.#cluster.leaderOf(this.#partitionName(target.leaderOf));
      if (leader !== undefined) return leader;
      return specs[target.leaderOf % specs.length].id;
    }
    return specs[target.node % specs.length].id;
  }

  #partitionName(index: number): string {
    const partitions = Object.keys(this.#cluster.cluster.layout).sort();
    return partitions[index % partitions.length];
  }

  /** Sleeps `ms`, or less when {@linkcode stop} is called. */
  #sleep(ms: number): Promise<void> {
    if (this.#stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#wakeStop = done;
    });
  }

  #problem(message: string): void {
    this.problems.push(message);
    this.#record({ event: "error", detail: message });
  }

  #record(event: Omit<NemesisEvent, "atMs" | "time">): void {
    const full: NemesisEvent = {
      atMs: Math.round(performance.now() - (this.#options.origin ?? 0)),
      time: new Date().toISOString(),
      ...event,
    };
    this.log.push(full);
    this.#options.onEvent?.(full);
  }

  /** Synchronous last resort on exit or a signal: resume a paused node, remove our rules. */
  #emergencyHeal(): void {
    const fault = this.#active;
    if (fault?.kind === "pause") this.#cluster.cluster.resume(fault.node);
    if (fault?.kind === "zk-pause") this.#cluster.zk.resume();
    removeChaosRules(this.#tag);
  }
}

/** One nemesis event as a log line: `+12.345s 2024-...Z kill n3 SIGKILL pid 123`. */
export function formatNemesisEvent(event: NemesisEvent): string {
  const parts = [`+${(event.atMs / 1000).toFixed(3)}s`, event.time, event.event];
  if (event.node !== undefined) parts.push(event.node);
  if (event.detail !== undefined) parts.push(event.detail);
  return parts.join(" ");
}
