/**
 * The failover drill (`ringkv drill --target local`) against real processes:
 * a real ZooKeeper and five real nodes; the drill SIGKILLs a leader, measures
 * the write gap, checks every survivor, restarts the old leader and checks it
 * caught up. Also the drill's failure and usage paths.
 *
 * The drill runs as its own process, through src/cli/drill.ts's `main` (the
 * same function `ringkv drill` dispatches to), so its stdout and exit code
 * are what an operator sees.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { startZooKeeper, type ZooKeeperServer } from "../support/zookeeper.ts";

/** The compiled drill next to this compiled test. */
const DRILL = fileURLToPath(new URL("../../src/cli/drill.js", import.meta.url));
/** A whole drill run: cluster start, failover, catch-up and teardown, on 2 busy cores. */
const DRILL_RUN_TIMEOUT_MS = 240_000;

interface DrillRun {
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
  lines: string[];
}

/** Runs `ringkv drill <args>` as a process; SIGTERM past the deadline (the drill then tears its cluster down). */
async function runDrill(args: string[], timeoutMs: number): Promise<DrillRun> {
  const script = `import(${JSON.stringify(DRILL)}).then((m) => m.main(${JSON.stringify(args)})).then((code) => { process.exitCode = code; })`;
  const result = await execa(process.execPath, ["--input-type=module", "-e", script], {
    reject: false,
    timeout: timeoutMs,
    killSignal: "SIGTERM",
    forceKillAfterDelay: 20_000,
    stdin: "ignore",
    env: { NO_COLOR: "1" },
  });
  const stdout = String(result.stdout ?? "");
  return { exitCode: result.exitCode, stdout, stderr: String(result.stderr ?? ""), lines: stdout.split("\n").filter((l) => l !== "") };
}

let zk: ZooKeeperServer;

test.before(async () => {
  zk = await startZooKeeper();
});

test.after(async () => {
  await zk?.stop();
});

test("the drill passes against a local cluster: a killed leader is replaced, survivors serve the latest value, the old leader catches up", async () => {
  const run = await runDrill(["--target", "local", "--zk", zk.connect, "--writes", "20", "--timeout", "200"], DRILL_RUN_TIMEOUT_MS);
  const transcript = `\n--- drill stdout ---\n${run.stdout}\n--- stderr ---\n${run.stderr.slice(-4000)}`;
  const verdict = run.lines.at(-1) ?? "";
  assert.match(verdict, /^drill: PASS \(/, `the last line is the verdict${transcript}`);
  assert.is(run.exitCode, 0, `PASS exits 0${transcript}`);
  for (let step = 1; step <= 5; step++) {
    assert.ok(run.lines.some((l) => l.startsWith(`drill: step ${step}/5: `)), `step ${step} is reported${transcript}`);
  }
  const measured = /^drill: PASS \(gap (\d+) ms, (\d+) writes, (p\d+) leader (n\d) -> (n\d),/.exec(verdict);
  assert.ok(measured, `the verdict names the gap, writes and leaders: ${verdict}`);
  const [, gap, writes, , oldLeader, newLeader] = measured;
  assert.ok(Number(gap) > 0 && Number(gap) < 30_000, `a gap within the failover deadline: ${gap} ms`);
  // 20 before the kill, at least 1 ending the gap, one through each of the 4 survivors.
  assert.ok(Number(writes) >= 20 + 1 + 4, `writes counted: ${writes}`);
  assert.is.not(newLeader, oldLeader, "a different node leads after the kill");
  assert.ok(run.lines.some((l) => /step 2\/5: stopped leader n\d .*SIGKILL/.test(l)), `the leader was SIGKILLed${transcript}`);
});

test("the drill fails, with the reason, when the nodes it is pointed at do not answer", async () => {
  const port = await closedPort();
  const started = Date.now();
  const composeFile = path.join(repoRoot(), "compose.yaml");
  const run = await runDrill(["--target", "compose", "--compose-file", composeFile, "--nodes", `127.0.0.1:${port}`, "--timeout", "10"], 90_000);
  assert.is(run.exitCode, 1, run.stdout + run.stderr);
  assert.match(run.lines.at(-1) ?? "", new RegExp(`^drill: FAIL .*127\\.0\\.0\\.1:${port}`));
  assert.ok(Date.now() - started < 85_000, "bounded by its deadlines");
});

test("a bad --target is a usage error (exit 2)", async () => {
  const run = await runDrill(["--target", "kubernetes"], 30_000);
  assert.is(run.exitCode, 2);
  assert.match(run.stderr, /--target must be local or compose/);
});

/** The repository root: the first directory above this (compiled) file holding compose.yaml and package.json. */
function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!(fs.existsSync(path.join(dir, "compose.yaml")) && fs.existsSync(path.join(dir, "package.json")))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error("no repository root above this test");
    dir = parent;
  }
  return dir;
}

/** A port nothing listens on (bound, read, released). */
function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      if (address === null || typeof address === "string") return reject(new Error("no port"));
      server.close(() => resolve(address.port));
    });
  });
}

test.run();
