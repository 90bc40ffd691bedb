/**
 * The standalone partition host over a real log (real files, real fsync):
 * its snapshot trigger around shutdown.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../../src/log/log.ts";
import { openStandalonePartition } from "../../src/replication/standalone.ts";

test("close right after writes that landed during a snapshot: no snapshot on a closing log, no error", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ringkv-standalone-test-"));
  const errors: string[] = [];
  const logger = createLogger("n1", { write: (line) => line.includes('"level":"error"') && errors.push(line) });
  try {
    const partition = await openStandalonePartition(dir, "p0", { fsync: "always", snapshotEvery: 1, logger, nodeId: "n1" });
    // The first write starts a snapshot; the second lands while it runs, so
    // the next trigger comes only when the snapshot is done — during close.
    assert.equal(await partition.write({ op: "put", key: "a", value: Buffer.from("1") }), { type: "ok" });
    assert.equal(await partition.write({ op: "put", key: "b", value: Buffer.from("2") }), { type: "ok" });
    await partition.close();
    assert.equal(errors, []);
    const again = await openStandalonePartition(dir, "p0", { fsync: "always", snapshotEvery: 1000, logger, nodeId: "n1" });
    assert.equal(await again.read("b", { local: false }), { type: "value", value: Buffer.from("2") });
    await again.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test.run();
