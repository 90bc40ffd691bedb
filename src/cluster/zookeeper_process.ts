/**
 * A real, standalone ZooKeeper server for tests and for `ringkv cluster`
 * (npm start): Debian's zookeeper.jar run
 * with java, one server per caller, on a free loopback port and a temp data
 * dir. Every cluster test in the project starts its ZooKeeper through here.
 *
 * Every server started here is SIGKILLed when the test process exits (even
 * a paused one; see src/process/owned.ts), so no test leaves a ZooKeeper behind.
 *
 * @module
 */

import { freePort } from "../net/ports.ts";
import { forget, killOnExit, removeOnExit } from "../process/owned.ts";
import { execa, type ResultPromise } from "execa";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Where Debian's zookeeper package puts the server jar (its manifest lists the other jars). */
export const ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar";
/** Logging backend; without it the server writes no log at all. */
export const SLF4J_SIMPLE_JAR = "/usr/share/java/slf4j-simple.jar";

/** How long a (re)start may take until `ruok` answers `imok`. */
const START_DEADLINE_MS = 10_000;
/** Pause between two `ruok` attempts. */
const RUOK_RETRY_MS = 50;
/** One `ruok` attempt gives up after this long (a paused server never answers). */
const RUOK_ATTEMPT_TIMEOUT_MS = 1_000;
/** How long to wait for a SIGKILLed server to be reaped. */
const STOP_DEADLINE_MS = 5_000;
/** Attempts with a fresh free port when the chosen port turns out to be taken. */
const PORT_ATTEMPTS = 3;
/** Lines of the server log quoted in a start failure. */
const LOG_TAIL_LINES = 30;

/** Options for {@linkcode startZooKeeper}. */
export interface ZooKeeperOptions {
  /** Client port on 127.0.0.1. Defaults to a free port. */
  port?: number;
  /** ZooKeeper's tick in ms; sessions may last 2 to 20 ticks. Defaults to 200. */
  tickTime?: number;
  /** Kill the server and exit on SIGINT/SIGTERM/SIGHUP (tests). False: the caller stops it (ringkv cluster). Defaults to true. */
  handleSignals?: boolean;
  /** Base directory for the config, data and log. Defaults to a new temp dir (removed at exit). */
  dataDir?: string;
}

/** A running standalone ZooKeeper server owned by the caller. */
export interface ZooKeeperServer {
  /** Connection string for clients: "127.0.0.1:port". */
  readonly connect: string;
  /** The client port. */
  readonly port: number;
  /** PID of the current java process (changes on restart). */
  readonly pid: number;
  /** ZooKeeper's data directory (snapshots and transaction log). */
  readonly dataDir: string;
  /** SIGKILLs the server and waits until it has exited. Idempotent. */
  stop(): Promise<void>;
  /** Starts again on the same port and data dir (stopping first if running); resolves once `ruok` answers. */
  restart(): Promise<void>;
  /** SIGSTOPs the server: it keeps its sockets but answers nothing. */
  pause(): void;
  /** SIGCONTs a paused server. */
  resume(): void;
}

/** True when the ZooKeeper jar is installed, so tests can start a real server. */
export function zooKeeperAvailable(): boolean {
  return existsSync(ZOOKEEPER_JAR);
}

/** Re-exported: tests ask for a free port where they ask for ZooKeeper. */
export { freePort };

/** Options for {@linkcode fourLetterWord}. */
export interface FourLetterWordOptions {
  /** Give up after this long. Defaults to 1000. */
  timeoutMs?: number;
}

/** Sends a four-letter command ("ruok", "stat", "mntr", ...) and returns the whole answer (or throws on error/timeout). */
export async function fourLetterWord(port: number, word: string, options: FourLetterWordOptions = {}): Promise<string> {
  const timeoutMs = options.timeoutMs ?? RUOK_ATTEMPT_TIMEOUT_MS;
  return await new Promise<string>((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${word}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on("connect", () => socket.end(word));
    socket.on("data", (chunk) => chunks.push(chunk));
    socket.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString("utf8"));
    });
  });
}

function writeConfig(baseDir: string, dataDir: string, port: number, tickTime: number): string {
  const config = [
    `tickTime=${tickTime}`,
    "initLimit=10",
    "syncLimit=5",
    `dataDir=${dataDir}`,
    `clientPort=${port}`,
    "clientPortAddress=127.0.0.1",
    // Otherwise every server grabs port 8080 and two servers clash.
    "admin.enableServer=false",
    // Otherwise `ruok` is refused.
    "4lw.commands.whitelist=*",
    "maxClientCnxns=0",
    "",
  ].join("\n");
  const path = join(baseDir, "zoo.cfg");
  writeFileSync(path, config);
  return path;
}

function logTail(logPath: string): string {
  try {
    const lines = readFileSync(logPath, "utf8").trimEnd().split("\n");
    return lines.slice(-LOG_TAIL_LINES).join("\n");
  } catch {
    return "(no log)";
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** One java process; `exited` resolves when it is gone. */
interface JavaProcess {
  pid: number;
  exited: Promise<void>;
  hasExited(): boolean;
}

function spawnJava(configPath: string, logPath: string, handleSignals: boolean): JavaProcess {
  const classpath = [ZOOKEEPER_JAR, SLF4J_SIMPLE_JAR].filter((jar) => existsSync(jar)).join(":");
  const subprocess: ResultPromise = execa("java", [
    "-Xmx256m",
    // A small heap and the client JIT start faster and share the 2 cores better.
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Dzookeeper.admin.enableServer=false",
    "-cp",
    classpath,
    "org.apache.zookeeper.server.quorum.QuorumPeerMain",
    configPath,
  ], {
    stdin: "ignore",
    // To a file, not a pipe: an unread pipe would block the server once full.
    stdout: { file: logPath, append: true },
    stderr: { file: logPath, append: true },
    reject: false,
    // Its own process group: a Ctrl-C in the terminal reaches only our
    // process, which stops the nodes first and ZooKeeper last (killOnExit
    // covers the case where we exit without stopping it).
    detached: true,
  });
  const pid = subprocess.pid;
  if (pid === undefined) throw new Error("java did not start (is a JRE installed?)");
  killOnExit(pid, { handleSignals, last: true });
  let done = false;
  const exited = subprocess.then(() => {
    done = true;
    forget(pid);
  }, () => {
    done = true;
    forget(pid);
  });
  return { pid, exited, hasExited: () => done };
}

async function waitUntilServing(java: JavaProcess, port: number, logPath: string): Promise<void> {
  const deadline = Date.now() + START_DEADLINE_MS;
  let lastError = "";
  while (Date.now() < deadline) {
    if (java.hasExited()) {
      throw new Error(`ZooKeeper (pid ${java.pid}) exited during start on port ${port}:\n${logTail(logPath)}`);
    }
    try {
      const answer = await fourLetterWord(port, "ruok");
      if (answer === "imok") return;
      lastError = `ruok answered ${JSON.stringify(answer)}`;
    } catch (error) {
      lastError = (error as Error).message;
    }
    await sleep(RUOK_RETRY_MS);
  }
  throw new Error(`ZooKeeper on port ${port} not serving within ${START_DEADLINE_MS} ms (${lastError}):\n${logTail(logPath)}`);
}

async function killAndWait(java: JavaProcess): Promise<void> {
  if (java.hasExited()) return;
  try {
    process.kill(java.pid, "SIGKILL");
  } catch {
    // Already gone.
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), STOP_DEADLINE_MS);
  });
  const result = await Promise.race([java.exited.then(() => "exited" as const), timeout]);
  // A pending timer would keep the test process alive for seconds after its last test.
  clearTimeout(timer);
  if (result === "timeout") throw new Error(`ZooKeeper pid ${java.pid} did not exit within ${STOP_DEADLINE_MS} ms of SIGKILL`);
}

/**
 * Starts a standalone ZooKeeper and resolves once it answers `ruok` with
 * `imok` (within 10 s), or rejects with the tail of its log.
 */
export async function startZooKeeper(options: ZooKeeperOptions = {}): Promise<ZooKeeperServer> {
  if (!zooKeeperAvailable()) throw new Error(`ZooKeeper is not installed (${ZOOKEEPER_JAR} missing)`);
  const handleSignals = options.handleSignals ?? true;
  const tickTime = options.tickTime ?? 200;
  if (!Number.isInteger(tickTime) || tickTime < 10) throw new Error(`bad tickTime ${tickTime}`);
  let baseDir: string;
  if (options.dataDir === undefined) {
    baseDir = mkdtempSync(join(tmpdir(), "ringkv-zk-"));
    removeOnExit(baseDir, { handleSignals });
  } else {
    baseDir = options.dataDir;
    mkdirSync(baseDir, { recursive: true });
  }
  const dataDir = join(baseDir, "data");
  mkdirSync(dataDir, { recursive: true });
  const logPath = join(baseDir, "zookeeper.log");

  // A free port can be taken between our probe and java's bind: retry with another one.
  const attempts = options.port === undefined ? PORT_ATTEMPTS : 1;
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < attempts; attempt += 1) {
    const port = options.port ?? await freePort();
    const configPath = writeConfig(baseDir, dataDir, port, tickTime);
    const java = spawnJava(configPath, logPath, handleSignals);
    try {
      await waitUntilServing(java, port, logPath);
    } catch (error) {
      lastError = error as Error;
      await killAndWait(java);
      continue;
    }
    return makeServer(java, { port, dataDir, configPath, logPath, handleSignals });
  }
  throw lastError ?? new Error("ZooKeeper did not start");
}

function makeServer(
  first: JavaProcess,
  { port, dataDir, configPath, logPath, handleSignals }: { port: number; dataDir: string; configPath: string; logPath: string; handleSignals: boolean },
): ZooKeeperServer {
  let java = first;
  return {
    connect: `127.0.0.1:${port}`,
    port,
    get pid() {
      return java.pid;
    },
    dataDir,
    async stop() {
      await killAndWait(java);
    },
    async restart() {
      await killAndWait(java);
      java = spawnJava(configPath, logPath, handleSignals);
      try {
        await waitUntilServing(java, port, logPath);
      } catch (error) {
        await killAndWait(java);
        throw error;
      }
    },
    pause() {
      if (!java.hasExited()) process.kill(java.pid, "SIGSTOP");
    },
    resume() {
      if (!java.hasExited()) process.kill(java.pid, "SIGCONT");
    },
  };
}
