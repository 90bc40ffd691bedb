#!/usr/bin/env node
/**
 * The `ringkv` command: `node`, `cluster`, `cli`, `bench`, `bench-suite`, `sim`.
 *
 * @module
 */
import { ConfigError, nodeHelp, parseNodeConfig } from "./config.ts";
import { VERSION } from "./version.ts";
import type { RunningNode } from "../node/node.ts";

const USAGE = `ringkv ${VERSION} — a distributed key-value store

usage: ringkv <command> [flags]

commands:
  node         run one node (standalone without --zk; see ringkv node --help)
  cluster      run a local 5-node cluster with ZooKeeper (npm start)
  cli          interactive client (ringkv cli --help)
  bench        load generator (ringkv bench --help)
  bench-suite  the benchmark comparison behind npm run bench
  sim          deterministic simulation of the replication core (npm run sim)
  drill        failover drill against a local cluster or docker compose
  rolling      rolling-restart drill: SIGTERM every node in turn under load

flags: --help, --version`;

/** Runs the command line; resolves to the exit code (the node itself keeps running until a signal). */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case undefined:
    case "--help":
    case "-h":
    case "help":
      console.log(USAGE);
      return command === undefined ? 2 : 0;
    case "--version":
    case "-v":
    case "version":
      console.log(VERSION);
      return 0;
    case "node":
      return runNode(rest);
    case "cluster":
      return (await import("./cluster.ts")).main(rest);
    case "cli":
      return (await import("./repl.ts")).main(rest);
    case "bench":
      return (await import("./bench.ts")).main(rest);
    case "bench-suite":
      return (await import("./bench_suite.ts")).main(rest);
    case "drill":
      return (await import("./drill.ts")).main(rest);
    case "rolling":
      return (await import("./rolling.ts")).main(rest);
    case "sim":
      return (await import("./sim.ts")).main(rest);
    default:
      console.error(`ringkv: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

async function runNode(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(nodeHelp());
    return 0;
  }
  let config;
  try {
    config = parseNodeConfig(argv);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`ringkv node: ${error.message}\n(see ringkv node --help)`);
      return 2;
    }
    throw error;
  }
  const { startNode } = await import("../node/node.ts");
  // Signals are caught from the start: one that arrives while the node is
  // still starting stops it cleanly as soon as it is up.
  let signalled: string | undefined;
  let wake: (() => void) | undefined;
  function onSignal(signal: string): void {
    signalled ??= signal;
    wake?.();
  }
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  process.on("SIGINT", () => onSignal("SIGINT"));
  // A log pipe whose reader is gone (a `| tee` that died) must not take the
  // node down: those lines are lost, the node keeps serving.
  process.stderr.on("error", () => {});
  process.stdout.on("error", () => {});
  let node: RunningNode;
  try {
    node = await startNode(config);
  } catch (error) {
    console.error(`ringkv node: cannot start: ${(error as Error).message}`);
    return 1;
  }
  if (signalled === undefined) await new Promise<void>((resolve) => (wake = resolve));
  node.logger.info("shutdown", { signal: signalled });
  try {
    await node.close();
  } catch (error) {
    node.logger.error("shutdown_failed", { error });
    return 1;
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    // A node has closed its files by now; leave at once rather than wait for stray timers.
    if (process.argv[2] === "node" || process.argv[2] === "cluster") process.exit(code);
    process.exitCode = code;
  },
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
