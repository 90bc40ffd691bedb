/**
 * Long chaos runs from the command line:
 *
 *   node dist/tests/faults/main.js --duration 300 [--seed N] [--nemesis kill,pause,partition,zk-cut,zk-pause] [--clients 10] [--keys 6]
 *
 * `--stale-reads` is the harness's self-check: clients read with READONLY
 * (documented as possibly stale), and the run should fail.
 *
 * Prints the seed first, every nemesis event, and one summary line; exits 0
 * only when the history is linearizable and nothing else went wrong.
 * Ctrl-C (SIGINT) ends the chaos early: the fault is healed and the run
 * still reads every key and checks what it recorded; a second Ctrl-C exits
 * at once.
 * RINGKV_CHAOS_SEED=N replays a seed as --seed N does.
 *
 * @module
 */
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { runChaos } from "./chaos.ts";
import { FAULT_KINDS, type FaultKind } from "./nemesis.ts";

/** Longest run the CLI accepts, in seconds (a named limit: the machine is shared). */
export const MAX_DURATION_S = 24 * 3600;

const USAGE = "usage: main.js --duration <seconds> [--seed N] [--nemesis kill,pause,partition,zk-cut,zk-pause] [--clients N] [--keys N] [--session-timeout ms] [--stale-reads]";

/** Parses the CLI arguments, runs the chaos test, and returns the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        duration: { type: "string", default: "60" },
        seed: { type: "string" },
        nemesis: { type: "string", default: FAULT_KINDS.join(",") },
        clients: { type: "string", default: "10" },
        keys: { type: "string", default: "6" },
        "session-timeout": { type: "string", default: "1500" },
        "stale-reads": { type: "boolean" },
        help: { type: "boolean" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    console.error(`${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help === true) {
    console.log(USAGE);
    return 0;
  }
  const duration = wholeNumber("--duration", values.duration, 1, MAX_DURATION_S);
  const clients = wholeNumber("--clients", values.clients, 1, 64);
  const keys = wholeNumber("--keys", values.keys, 1, 64);
  const sessionTimeoutMs = wholeNumber("--session-timeout", values["session-timeout"], 400, 20_000);
  const seed = values.seed === undefined ? undefined : wholeNumber("--seed", values.seed, 0, 2 ** 32 - 1);
  const nemesis = values.nemesis.split(",").map((k) => k.trim()).filter((k) => k !== "");
  for (const kind of nemesis) {
    if (!FAULT_KINDS.includes(kind as FaultKind)) throw new Error(`--nemesis: unknown fault ${JSON.stringify(kind)} (one of ${FAULT_KINDS.join(", ")})`);
  }
  if (nemesis.length === 0) throw new Error("--nemesis: at least one fault kind");
  const result = await runChaos({
    durationMs: duration * 1000,
    seed,
    nemesis: nemesis as FaultKind[],
    clients,
    keys,
    sessionTimeoutMs,
    staleReads: values["stale-reads"] === true,
    interruptible: true,
  });
  return result.passed ? 0 : 1;
}

function wholeNumber(flag: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new Error(`${flag} must be a whole number, got ${JSON.stringify(text)}`);
  const value = Number(text);
  if (value < min || value > max) throw new Error(`${flag} must be between ${min} and ${max}, got ${value}`);
  return value;
}

// Runs only as the entry point, not when imported.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: Error) => {
      console.error(error.message);
      process.exit(2);
    },
  );
}
