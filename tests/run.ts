/**
 * The test runner behind `npm test`: runs every compiled uvu test file of the
 * chosen suites as its own process (two at a time: the machine has 2 cores;
 * the fault suite alone, last),
 * prints each file's result, and ends with one line `N passed, N failed`
 * (`, N skipped` if any) summed over all suites.
 *
 *   node dist/tests/run.js [suite ...] [--only substring] [--jobs N]
 *
 * @module
 */
import fs from "node:fs";
import path from "node:path";
import { execa } from "execa";

/** Suites in the order they run by default. */
export const DEFAULT_SUITES = ["unit", "simulation", "blackbox", "fuzz", "faults"];
/** Suites whose files run alone, after the others: a fault run needs the machine's cores to itself to be fair to its timeouts. */
export const SOLO_SUITES = ["faults"];

/** A test file may not run longer than this (a hang counts as one failure). */
const FILE_TIMEOUT_MS = 10 * 60_000;

interface FileResult {
  file: string;
  passed: number;
  failed: number;
  skipped: number;
  ms: number;
  output: string;
}

function listTests(root: string, suites: string[], only: string | undefined): string[] {
  const files: string[] = [];
  for (const suite of suites) {
    const dir = path.join(root, suite);
    if (!fs.existsSync(dir)) continue;
    for (const name of fs.readdirSync(dir).sort()) {
      if (!name.endsWith(".test.js")) continue;
      const file = path.join(dir, name);
      if (only === undefined || file.includes(only)) files.push(file);
    }
  }
  return files;
}

function stripAnsi(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}

async function runFile(file: string): Promise<FileResult> {
  const started = Date.now();
  const child = await execa("node", ["--enable-source-maps", file], {
    reject: false,
    all: true,
    timeout: FILE_TIMEOUT_MS,
    env: { NO_COLOR: "1", FORCE_COLOR: "0" },
  });
  const output = stripAnsi(child.all ?? "");
  const total = Number(/Total:\s+(\d+)/.exec(output)?.[1] ?? NaN);
  const passed = Number(/Passed:\s+(\d+)/.exec(output)?.[1] ?? NaN);
  const skipped = Number(/Skipped:\s+(\d+)/.exec(output)?.[1] ?? 0);
  const ms = Date.now() - started;
  if (Number.isNaN(total) || Number.isNaN(passed)) {
    // Crashed or hung before uvu printed its summary: count the file as one failure.
    return { file, passed: 0, failed: 1, skipped: 0, ms, output };
  }
  let failed = total - passed - skipped;
  if (failed === 0 && child.exitCode !== 0) failed = 1; // uvu passed but the process failed afterwards
  return { file, passed, failed, skipped, ms, output };
}

async function main(argv: string[]): Promise<number> {
  let jobs = 2;
  let only: string | undefined;
  const suites: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--jobs") jobs = Number(argv[++i]);
    else if (argv[i] === "--only") only = argv[++i];
    else suites.push(argv[i]);
  }
  const root = path.dirname(new URL(import.meta.url).pathname);
  const files = listTests(root, suites.length > 0 ? suites : DEFAULT_SUITES, only);
  const results: FileResult[] = [];
  const isSolo = (file: string) => SOLO_SUITES.includes(path.basename(path.dirname(file)));
  const shared = files.filter((file) => !isSolo(file));
  const solo = files.filter(isSolo);
  let next = 0;
  async function worker(queue: string[]): Promise<void> {
    while (next < queue.length) {
      const file = queue[next++];
      const result = await runFile(file);
      results.push(result);
      const name = path.relative(root, file);
      const verdict = result.failed > 0 ? "FAIL" : "ok  ";
      console.log(`${verdict} ${name.padEnd(44)} ${result.passed} passed, ${result.failed} failed${result.skipped ? `, ${result.skipped} skipped` : ""} (${(result.ms / 1000).toFixed(1)} s)`);
      if (result.failed > 0) console.log(result.output.split("\n").map((l) => `    | ${l}`).join("\n"));
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, jobs) }, () => worker(shared)));
  next = 0;
  await worker(solo);
  const passed = results.reduce((s, r) => s + r.passed, 0);
  const failed = results.reduce((s, r) => s + r.failed, 0);
  const skipped = results.reduce((s, r) => s + r.skipped, 0);
  if (files.length === 0) {
    console.log("no test files found");
    console.log("0 passed, 1 failed");
    return 1;
  }
  console.log(`${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ""}`);
  return failed > 0 ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
