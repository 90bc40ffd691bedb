/**
 * `ringkv cli` as a user and a script meet it: --eval and piped stdin
 * against real node processes, exit codes (0, 1 on any error reply, 2 on bad
 * flags), failover along --nodes at start and mid-session, --timeout, and an
 * interactive session on a pseudo-terminal (util-linux `script`).
 */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { execa } from "execa";
import { CLI_PATH, EXIT_TIMEOUT_MS, makeTempDir, runCli, startNode, type CliResult, type NodeHandle } from "../support/node_process.ts";

/** Deadline for output a running CLI is expected to print. */
const OUTPUT_TIMEOUT_MS = 5_000;

/** Runs `ringkv cli args` with `input` piped on stdin (not a terminal). */
async function pipeCli(args: string[], input: string): Promise<CliResult> {
  const result = await execa("node", [CLI_PATH, "cli", ...args], {
    input,
    reject: false,
    timeout: EXIT_TIMEOUT_MS,
    killSignal: "SIGKILL",
    env: { NO_COLOR: "1", RINGKV_HISTORY_FILE: path.join(makeTempDir(), "history") },
  });
  return {
    exitCode: result.exitCode ?? null,
    signal: result.signal ?? null,
    stdout: String(result.stdout ?? ""),
    stderr: String(result.stderr ?? ""),
  };
}

function lines(text: string): string[] {
  return text.split("\n").filter((line) => line !== "");
}

/** A port nobody listens on: bound, then released. */
async function deadPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

let first: NodeHandle;

test.before(async () => {
  first = await startNode({ args: ["--id", "n1"] });
});

test.after(async () => {
  if (first.alive()) await first.stop();
});

test("--eval runs each command in order, prints the raw replies, and exits 0", async () => {
  const result = await runCli([
    "cli",
    "--port",
    String(first.port),
    "--eval",
    "PUT e1 hello  spaced world ",
    "--eval",
    "GET e1",
    "--eval",
    "SET e2 x",
    "--eval",
    "EXISTS e1 e2 e3",
    "--eval",
    "DEL e2",
    "--eval",
    "GET e2",
    "--eval",
    "ping",
  ]);
  assert.is(result.exitCode, 0, result.stderr);
  assert.equal(lines(result.stdout), ["OK", "VALUE hello  spaced world ", "OK", "2", "DELETED", "NOT_FOUND", "PONG"]);
});

test("--eval exits 1 if any reply is an error, and still runs the commands after it", async () => {
  const result = await runCli([
    "cli",
    "--port",
    String(first.port),
    "--eval",
    "FROBNICATE x",
    "--eval",
    "PUT after-error yes",
    "--eval",
    "GET after-error",
  ]);
  assert.is(result.exitCode, 1);
  const out = lines(result.stdout);
  assert.match(out[0], /^ERR UNKNOWN_COMMAND /);
  assert.equal(out.slice(1), ["OK", "VALUE yes"]);
  const notFound = await runCli(["cli", "--port", String(first.port), "--eval", "GET never-written"]);
  assert.is(notFound.exitCode, 0, "NOT_FOUND is an answer, not an error");
});

test("piped stdin: one command per line, blank lines skipped, no prompt; INFO is one JSON line", async () => {
  const result = await pipeCli(["--port", String(first.port)], "PUT p1 one\n\n   GET p1\r\nINFO\nHELP\nREADONLY\nGET p1\nREADWRITE\n");
  assert.is(result.exitCode, 0, result.stderr);
  const out = lines(result.stdout);
  assert.is(out.length, 7, result.stdout);
  assert.equal(out.slice(0, 2), ["OK", "VALUE one"]);
  const info = JSON.parse(out[2]) as { id: string; role: string };
  assert.is(info.id, "n1");
  assert.is(info.role, "standalone");
  assert.match(out[3], /PUT/);
  assert.equal(out.slice(4), ["OK", "VALUE one", "OK"]);
  assert.not.match(result.stdout, /ringkv .*> /, "no prompt when stdin is not a terminal");
});

test("piped stdin: EXIT and QUIT end the session locally; lines after them are not run", async () => {
  for (const word of ["EXIT", "quit"]) {
    const result = await pipeCli(["--port", String(first.port)], `PUT q-${word} 1\n${word}\nPUT q-${word} 2\nFROBNICATE\n`);
    assert.is(result.exitCode, 0, `${word}: ${result.stdout}`);
    assert.equal(lines(result.stdout), ["OK"]);
  }
  const check = await runCli(["cli", "--port", String(first.port), "--eval", "GET q-EXIT"]);
  assert.equal(lines(check.stdout), ["VALUE 1"]);
});

test("piped stdin exits 1 after an error reply (plain or JSON dialect); RESP input is refused locally", async () => {
  const plain = await pipeCli(["--port", String(first.port)], "PUT x\nPING\n");
  assert.is(plain.exitCode, 1);
  assert.match(lines(plain.stdout)[0], /^ERR BAD_REQUEST /);
  assert.is(lines(plain.stdout)[1], "PONG");
  const json = await pipeCli(["--port", String(first.port)], '{"op":"GET","key":"bad key"}\n');
  assert.is(json.exitCode, 1);
  assert.match(json.stdout, /"status":"error"/);
  const okJson = await pipeCli(["--port", String(first.port)], '{"op":"GET","key":"nothing"}\n');
  assert.is(okJson.exitCode, 0);
  assert.equal(lines(okJson.stdout), ['{"status":"not_found"}']);
  const resp = await pipeCli(["--port", String(first.port)], "*1\n$4\nPING\n");
  assert.is(resp.exitCode, 1);
  assert.match(resp.stdout, /RESP/);
});

test("bad flags exit 2 with a message naming the problem; --help exits 0", async () => {
  const bad: [string[], RegExp][] = [
    [["--bogus"], /bogus/],
    [["--port", "0"], /port/],
    [["--port", "abc"], /port/],
    [["--port", "70000"], /port/],
    [["--timeout", "0"], /--timeout/],
    [["--timeout", "soon"], /--timeout/],
    [["--nodes", "no-port-here"], /host:port/],
    [["--nodes", "127.0.0.1:1", "--port", "9001"], /either --nodes or --host/],
    [["--nodes", ","], /no node/],
    [["stray"], /stray|positional|argument/i],
    [["--eval"], /eval/],
  ];
  for (const [args, mention] of bad) {
    const result = await runCli(["cli", ...args]);
    assert.is(result.exitCode, 2, `ringkv cli ${args.join(" ")}: exit ${result.exitCode}\n${result.stderr}`);
    assert.match(result.stderr, mention, `ringkv cli ${args.join(" ")}: ${result.stderr}`);
  }
  const help = await runCli(["cli", "--help"]);
  assert.is(help.exitCode, 0);
  assert.match(help.stdout, /--nodes/);
  assert.match(help.stdout, /--eval/);
});

test("--nodes: a node that is down is skipped; with every node down the command fails with exit 1", async () => {
  const dead = await deadPort();
  const result = await runCli(["cli", "--nodes", `127.0.0.1:${dead},127.0.0.1:${first.port}`, "--eval", "INFO"]);
  assert.is(result.exitCode, 0, result.stdout + result.stderr);
  assert.is((JSON.parse(lines(result.stdout)[0]) as { id: string }).id, "n1");
  const none = await runCli(["cli", "--nodes", `127.0.0.1:${dead}`, "--eval", "GET a", "--eval", "PING"]);
  assert.is(none.exitCode, 1);
  const out = lines(none.stdout);
  assert.is(out.length, 2, "one line per command");
  for (const line of out) assert.match(line, new RegExp(`^ERR UNAVAILABLE cannot connect to 127\\.0\\.0\\.1:${dead} \\(ECONNREFUSED\\)`));
});

test("mid-session failover: when the node in use goes down, the next command goes to the next node", async () => {
  const second = await startNode({ args: ["--id", "n2"] });
  const dying = await startNode({ args: ["--id", "n3"] });
  const child = execa("node", [CLI_PATH, "cli", "--nodes", `127.0.0.1:${dying.port},127.0.0.1:${second.port}`], {
    stdin: "pipe",
    reject: false,
    timeout: EXIT_TIMEOUT_MS,
    killSignal: "SIGKILL",
    env: { NO_COLOR: "1" },
  });
  let stdout = "";
  child.stdout!.setEncoding("utf8");
  child.stdout!.on("data", (text: string) => (stdout += text));
  async function waitForLines(count: number): Promise<string[]> {
    const deadline = Date.now() + OUTPUT_TIMEOUT_MS;
    while (lines(stdout).length < count) {
      if (Date.now() > deadline) throw new Error(`expected ${count} lines within ${OUTPUT_TIMEOUT_MS} ms, got: ${stdout}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return lines(stdout);
  }
  try {
    child.stdin!.write("INFO\nPUT only-on-n3 v\n");
    const before = await waitForLines(2);
    assert.is((JSON.parse(before[0]) as { id: string }).id, "n3");
    assert.is(before[1], "OK");
    assert.is(await dying.stop(), 0);
    child.stdin!.write("INFO\nGET only-on-n3\n");
    const after = await waitForLines(4);
    assert.is((JSON.parse(after[2]) as { id: string }).id, "n2", "moved to the next node");
    assert.is(after[3], "NOT_FOUND", "n2 is another standalone node");
    child.stdin!.end();
    const result = await child;
    assert.is(result.exitCode, 0);
  } finally {
    child.kill("SIGKILL");
    await second.stop();
  }
});

test("--timeout: a node that accepts but never answers gives ERR TIMEOUT (outcome unknown) and exit 1", async () => {
  const paused = await startNode({ args: ["--id", "n4"] });
  process.kill(paused.pid, "SIGSTOP");
  try {
    const started = Date.now();
    const result = await runCli(["cli", "--port", String(paused.port), "--timeout", "300", "--eval", "PUT t 1"]);
    const elapsed = Date.now() - started;
    assert.is(result.exitCode, 1);
    assert.match(result.stdout, /^ERR TIMEOUT .*within 300 ms.*unknown/m);
    assert.ok(elapsed < 4_000, `gave up after ${elapsed} ms`);
  } finally {
    process.kill(paused.pid, "SIGCONT");
    await paused.stop();
  }
});

test("interactive on a terminal: prompt, clear errors, pretty INFO, history saved to the history file", async () => {
  assert.ok(fs.existsSync("/usr/bin/script"), "util-linux script(1) runs the CLI on a pseudo-terminal");
  const historyFile = path.join(makeTempDir(), "history");
  fs.writeFileSync(historyFile, "GET from-an-earlier-session\n");
  const command = `node ${CLI_PATH} cli --port ${first.port}`;
  const child = execa("script", ["-qfec", command, "/dev/null"], {
    stdin: "pipe",
    reject: false,
    timeout: EXIT_TIMEOUT_MS,
    killSignal: "SIGKILL",
    env: { NO_COLOR: "1", RINGKV_HISTORY_FILE: historyFile, TERM: "dumb" },
  });
  let output = "";
  child.stdout!.setEncoding("utf8");
  child.stdout!.on("data", (text: string) => (output += text));
  async function waitFor(pattern: RegExp): Promise<void> {
    const deadline = Date.now() + OUTPUT_TIMEOUT_MS;
    while (!pattern.test(output)) {
      if (Date.now() > deadline) throw new Error(`no ${pattern} within ${OUTPUT_TIMEOUT_MS} ms in: ${JSON.stringify(output)}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
  try {
    const prompt = `ringkv 127.0.0.1:${first.port}> `;
    await waitFor(new RegExp(prompt.replace(/[.]/g, "\\.")));
    child.stdin!.write("PUT tty-key tty value\r");
    await waitFor(/\bOK\r?\n/);
    child.stdin!.write("GET tty-key\r");
    await waitFor(/VALUE tty value/);
    child.stdin!.write("FROBNICATE\r");
    await waitFor(/\(error\) UNKNOWN_COMMAND /);
    child.stdin!.write("INFO\r");
    await waitFor(/\n {2}"id": "n1",/); // indented, one field per line
    child.stdin!.write("exit\r");
    const result = await child;
    assert.is(result.exitCode, 0, output);
  } finally {
    child.kill("SIGKILL");
  }
  const history = fs.readFileSync(historyFile, "utf8").split("\n").filter((line) => line !== "");
  assert.equal(history, ["GET from-an-earlier-session", "PUT tty-key tty value", "GET tty-key", "FROBNICATE", "INFO", "exit"]);
});

test.run();
