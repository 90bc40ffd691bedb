/**
 * `npm run chaos` as a person uses it: a long run stopped with Ctrl-C still
 * heals, reads every key, checks the history and prints its verdict. The
 * run gets its own process group and the SIGINT goes to the whole group,
 * twice, as a terminal's Ctrl-C and npm's forwarded copy do.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { listChaosRules } from "./nemesis.ts";

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), "main.js");
/** Deadline for the first fault to be healed and the cluster to recover. */
const FIRST_RECOVERY_MS = 60_000;
/** Deadline for the run to finish after SIGINT (heal, tail, final reads, check, cluster down). */
const AFTER_SIGINT_MS = 60_000;

test("Ctrl-C ends a long run early with a verdict, exit 0, and no iptables rule left", async () => {
  const run = execa(process.execPath, [MAIN, "--duration", "3600", "--clients", "3", "--keys", "3"], { reject: false, all: true, detached: true });
  let output = "";
  const recovered = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no fault recovered within ${FIRST_RECOVERY_MS} ms:\n${output}`)), FIRST_RECOVERY_MS);
    run.all!.on("data", (chunk: Buffer) => {
      output += chunk.toString("utf8");
      if (/nemesis: .* recovered after/.test(output)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  try {
    await recovered;
    // The terminal's Ctrl-C reaches every process of the foreground group; npm sends its script a copy.
    process.kill(-run.pid!, "SIGINT");
    await new Promise((resolve) => setTimeout(resolve, 50));
    process.kill(-run.pid!, "SIGINT");
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      run,
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), AFTER_SIGINT_MS);
      }),
    ]);
    clearTimeout(timer);
    assert.ok(finished !== undefined, `the run ended within ${AFTER_SIGINT_MS} ms of SIGINT:\n${output}`);
    assert.is(finished.exitCode, 0, output);
    assert.match(output, "nemesis: ");
    assert.match(output, /interrupt SIGINT: healing/);
    assert.match(output, /verdict: linearizable \[seed \d+, [\d.]+ s, interrupted by SIGINT\]/);
  } finally {
    // SIGTERM first: the run then kills its cluster (its own process groups) on the way out.
    if (run.exitCode === undefined || run.exitCode === null) {
      run.kill("SIGTERM");
      const killer = setTimeout(() => run.kill("SIGKILL"), 10_000);
      await run.catch(() => {});
      clearTimeout(killer);
    }
  }
  assert.equal(listChaosRules({}), [], "no chaos iptables rule is left");
});

test.run();
