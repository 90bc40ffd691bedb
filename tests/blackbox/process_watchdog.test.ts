/**
 * What a local cluster leaves behind when the process that runs it is
 * SIGKILLed (no exit hook runs): the watchdog stops every child it still
 * owned — SIGTERM, then SIGKILL for one that ignores it — the one marked
 * `last` only after the others, and nothing else. Real processes, real
 * signals.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { GRACE_MS, isRunning, parseWatchdogLine } from "../../src/process/watchdog.ts";
import { waitUntil } from "../support/wait.ts";

const OWNER_JS = fileURLToPath(new URL("../support/owner_process.js", import.meta.url));

function kill(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // Gone already.
  }
}

test("watchdog lines: +pid and -pid, anything else ignored", () => {
  assert.equal(parseWatchdogLine("+123"), { add: 123, last: false });
  assert.equal(parseWatchdogLine("+123 last"), { add: 123, last: true });
  assert.equal(parseWatchdogLine("-42\r"), { remove: 42 });
  for (const bad of ["", "+", "123", "+0", "+-1", "+1.5", "+12345678901", "*1", "+1 2", "-1 last", "+1 first"]) {
    assert.is(parseWatchdogLine(bad), undefined, bad);
  }
});

test("the owner is SIGKILLed: its children are stopped, the last one after the others, the forgotten one is left alone", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ringkv-watchdog-"));
  const marker = path.join(dir, "last");
  const owner = execa(process.execPath, [OWNER_JS, marker], { reject: false, detached: true });
  let pids: { owned: number[]; forgotten: number } | undefined;
  try {
    const line = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the owner printed no pids within 10 s")), 10_000);
      owner.stdout!.once("data", (chunk: Buffer) => {
        clearTimeout(timer);
        resolve(chunk.toString("utf8"));
      });
    });
    pids = JSON.parse(line) as { owned: number[]; forgotten: number };
    assert.ok([...pids.owned, pids.forgotten].every(isRunning), "every child runs");
    kill(owner.pid!);
    await owner;
    const owned = pids.owned;
    assert.ok(await waitUntil(() => !owned.some(isRunning), 2 * GRACE_MS + 5_000), `children still running: ${owned.filter(isRunning)}`);
    assert.ok(isRunning(pids.forgotten), "a forgotten child is not the watchdog's");
    assert.is(fs.readFileSync(marker, "utf8"), "deaf stopped", "the last child is stopped after the others");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    kill(owner.pid!);
    for (const pid of [...(pids?.owned ?? []), pids?.forgotten ?? 0]) if (pid > 0) kill(pid);
  }
});

test.run();
