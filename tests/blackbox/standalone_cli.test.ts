/**
 * The `ringkv` command line as a user meets it: --help, --version, bad flags
 * (exit code 2 with a message), environment variables, and signals.
 */
import fs from "node:fs";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { makeTempDir, runCli, startNode } from "../support/node_process.ts";
import { LineClient } from "../support/tcp.ts";

/** package.json of the checkout (tests/blackbox → the build root → the checkout). */
const PACKAGE_VERSION = (JSON.parse(fs.readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {
  version: string;
}).version;

test("--version prints the package version and exits 0", async () => {
  const result = await runCli(["--version"]);
  assert.is(result.exitCode, 0);
  assert.is(result.stdout.trim(), PACKAGE_VERSION);
});

test("--help prints the usage with the commands and exits 0", async () => {
  const result = await runCli(["--help"]);
  assert.is(result.exitCode, 0);
  assert.match(result.stdout, /usage/i);
  assert.match(result.stdout, /\bnode\b/);
});

test("node --help lists every flag with its environment variable and exits 0", async () => {
  const result = await runCli(["node", "--help"]);
  assert.is(result.exitCode, 0);
  for (const flag of ["--id", "--host", "--port", "--data-dir", "--max-line", "--idle-timeout", "--max-connections", "--fsync", "--zk", "--secret", "--rebalance-after"]) {
    assert.ok(result.stdout.includes(flag), `--help names ${flag}`);
  }
  for (const env of ["RINGKV_ID", "RINGKV_PORT", "RINGKV_DATA_DIR", "RINGKV_ZK"]) {
    assert.ok(result.stdout.includes(env), `--help names ${env}`);
  }
});

/** Bad command lines: each must exit 2 and say what is wrong (`mention`). */
const BAD_FLAGS: { args: string[]; mention: RegExp }[] = [
  { args: ["node", "--bogus"], mention: /bogus/ },
  { args: ["node", "--port", "notanumber"], mention: /--port/ },
  { args: ["node", "--port", "70000"], mention: /--port/ },
  { args: ["node", "--port"], mention: /port/ },
  { args: ["node", "--fsync", "sometimes"], mention: /--fsync/ },
  { args: ["node", "--max-line", "10"], mention: /--max-line/ },
  { args: ["node", "--idle-timeout=-1"], mention: /--idle-timeout/ },
  { args: ["node", "--max-connections", "0"], mention: /--max-connections/ },
  { args: ["node", "--snapshot-every", "1.5"], mention: /--snapshot-every/ },
  { args: ["node", "--rebalance-after", "-1"], mention: /--rebalance-after/ },
  { args: ["node", "--rebalance-after", "soon"], mention: /--rebalance-after/ },
  { args: ["node", "--id", "has space"], mention: /--id/ },
  { args: ["node", "stray-positional"], mention: /stray-positional|positional|argument/i },
  { args: ["frobnicate"], mention: /frobnicate/ },
];

test("bad flags exit with code 2 and a message naming the problem", async () => {
  const dataDir = makeTempDir();
  for (const { args, mention } of BAD_FLAGS) {
    const result = await runCli([...args, "--data-dir", dataDir]);
    const what = `ringkv ${args.join(" ")}`;
    assert.is(result.exitCode, 2, `${what}: exit code ${result.exitCode}\n${result.stderr}`);
    assert.match(result.stderr, mention, `${what}: the message names the problem:\n${result.stderr}`);
    assert.not.match(result.stderr, /"event":"listening"/, `${what}: never listened`);
  }
});

test("a bad environment variable is refused like a bad flag", async () => {
  const result = await runCli(["node", "--data-dir", makeTempDir()], { env: { RINGKV_MAX_LINE: "lots" } });
  assert.is(result.exitCode, 2, result.stderr);
  assert.match(result.stderr, /max-line/);
});

test("ringkv with no command prints the usage and exits 2", async () => {
  const result = await runCli([]);
  assert.is(result.exitCode, 2);
  assert.match(result.stdout + result.stderr, /usage/i);
});

test("flags can come from environment variables, and a flag wins over its variable", async () => {
  const node = await startNode({
    env: { RINGKV_ID: "from-env", RINGKV_MAX_LINE: "2048" },
    args: ["--max-line", "4096"],
  });
  const c = await LineClient.connect(node.port);
  const info = JSON.parse(await c.request("INFO")) as { id: string };
  assert.is(info.id, "from-env");
  assert.is(await c.request(`PUT k ${"v".repeat(4000)}`), "OK", "--max-line 4096 beats RINGKV_MAX_LINE=2048");
  assert.match(await c.request(`PUT k ${"v".repeat(4100)}`), /^ERR TOO_LARGE /);
  c.destroy();
  assert.is(await node.stop(), 0);
});

test("a port already in use: the node says so and exits non-zero", async () => {
  const first = await startNode();
  const result = await runCli(["node", "--host", "127.0.0.1", "--port", String(first.port), "--data-dir", makeTempDir()]);
  assert.ok(result.exitCode !== 0 && result.exitCode !== null, `exit code ${result.exitCode}`);
  assert.match(result.stderr, /EADDRINUSE|in use/i, result.stderr);
  assert.is(await first.stop(), 0);
});

test("SIGINT stops a node cleanly too (exit code 0)", async () => {
  const node = await startNode();
  const c = await LineClient.connect(node.port);
  assert.is(await c.request("PING"), "PONG");
  c.destroy();
  assert.is(await node.kill("SIGINT"), 0);
  assert.ok(node.events().some((e) => e.event === "stopped"), "it logged its clean stop");
});

test("SIGTERM right after the listening line is a clean shutdown too (exit code 0)", async () => {
  // A supervisor may stop a node the moment it reports ready. Several tries: it is a race.
  for (const signal of ["SIGTERM", "SIGINT", "SIGTERM", "SIGINT", "SIGTERM", "SIGINT"] as const) {
    const node = await startNode();
    process.kill(node.pid, signal);
    const exit = await node.exited();
    assert.equal(exit, { code: 0, signal: null }, `${signal} at once: ${JSON.stringify(exit)}\n${node.stderr()}`);
  }
});

test("the listening line reports the port actually bound with --port 0", async () => {
  const node = await startNode();
  assert.ok(node.port > 0);
  const c = await LineClient.connect(node.port);
  assert.is(await c.request("PING"), "PONG");
  c.destroy();
  const listening = node.events().find((e) => e.event === "listening")!;
  assert.is(listening.port, node.port);
  assert.is(await node.stop(), 0);
});

test.run();
