/**
 * `npm run sim -- --seeds N [--start S]` runs N seeds of the deterministic
 * replication simulation; `--seed S [--verbose]` runs one and prints its trace.
 * Prints a one-line summary; exits non-zero on any violation.
 *
 * @module
 */
import { formatFailure, runSeed, runSeeds } from "../../tests/simulation/sim.ts";

/** Usage text for `--help` and bad arguments. */
export const SIM_USAGE =
  "usage: sim [--seeds N] [--start S] [--max-failures F] | --seed S [--verbose]   (defaults: --seeds 1000 --start 1)";

const VALUE_OPTIONS = new Set(["--seeds", "--start", "--max-failures", "--seed"]);

/** Runs the simulation as the command line asks; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const args = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--verbose" || arg === "--help") {
      args.set(arg, "true");
    } else if (VALUE_OPTIONS.has(arg) && i + 1 < argv.length) {
      args.set(arg, argv[++i]);
    } else {
      console.error(`unexpected argument ${arg}\n${SIM_USAGE}`);
      return 2;
    }
  }
  if (args.has("--help")) {
    console.log(SIM_USAGE);
    return 0;
  }
  const number = (name: string, fallback: number): number => {
    const text = args.get(name);
    if (text === undefined) return fallback;
    const value = Number(text);
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${name} must be a non-negative integer`);
    return value;
  };
  try {
    if (args.has("--seed")) {
      const seed = number("--seed", 0);
      const result = runSeed(seed, { trace: true, verbose: args.has("--verbose") });
      if (args.has("--verbose") || result.violations.length > 0) console.log(formatFailureOrTrace(result));
      console.log(
        `seed ${seed}: steps=${result.steps} commits=${result.commits} faults=${result.faults} ops=${result.ops} ` +
          `messages=${result.messages} violations=${result.violations.length}\nconfig: ${result.config}`,
      );
      return result.violations.length === 0 ? 0 : 1;
    }
    const count = number("--seeds", 1000);
    const start = number("--start", 1);
    const summary = runSeeds(start, count, { maxFailures: number("--max-failures", 1) });
    for (const failure of summary.failures) console.log(formatFailure(failure));
    const perSecond = summary.seeds / (summary.ms / 1000);
    console.log(
      `seeds=${summary.seeds} (from ${start}) steps=${summary.steps} commits=${summary.commits} ` +
        `faults=${summary.faults} ops=${summary.ops} messages=${summary.messages} inconclusive=${summary.inconclusive} ` +
        `violations=${summary.failures.length} time=${(summary.ms / 1000).toFixed(1)}s (${perSecond.toFixed(0)} seeds/s)`,
    );
    return summary.failures.length === 0 ? 0 : 1;
  } catch (error) {
    console.error((error as Error).message);
    return 2;
  }
}

function formatFailureOrTrace(result: ReturnType<typeof runSeed>): string {
  if (result.violations.length > 0) return formatFailure(result);
  return result.trace.join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
