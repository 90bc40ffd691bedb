/**
 * The main test of the replication core: thousands of seeded runs of the
 * simulated replica group (network loss/delay/reordering/duplication,
 * crashes with torn writes, pauses, partitions, ZooKeeper expiries), each
 * checking its invariants and the linearizability of the client history.
 *
 * RINGKV_SIM_SEEDS (default 10000) and RINGKV_SIM_START (default 1) pick the
 * seeds; a failure prints the seed, its configuration and the trace's tail,
 * and `npm run sim -- --seed S --verbose` replays it exactly.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { formatFailure, runSeed, runSeeds } from "./sim.ts";

const SEEDS = Number(process.env.RINGKV_SIM_SEEDS ?? 10_000);
const START = Number(process.env.RINGKV_SIM_START ?? 1);

test(`${SEEDS} simulated seeds keep every replication invariant and stay linearizable`, () => {
  const summary = runSeeds(START, SEEDS, { maxFailures: 1 });
  if (summary.failures.length > 0) assert.unreachable(formatFailure(summary.failures[0]));
  assert.is(summary.seeds, SEEDS);
  // The runs did real work under real faults, not idle clusters.
  assert.ok(summary.commits > SEEDS * 10, `only ${summary.commits} commits`);
  assert.ok(summary.faults > SEEDS, `only ${summary.faults} faults`);
  console.log(
    `  simulation: seeds=${summary.seeds} steps=${summary.steps} commits=${summary.commits} faults=${summary.faults} ` +
      `ops=${summary.ops} inconclusive=${summary.inconclusive} ${(summary.seeds / (summary.ms / 1000)).toFixed(0)} seeds/s`,
  );
});

test("a seed replays exactly: same configuration, same steps, same outcome", () => {
  for (const seed of [7, 1234, 99_999]) {
    const first = runSeed(seed, { trace: true });
    const second = runSeed(seed, { trace: true });
    assert.equal(
      { ...second, trace: second.trace.length },
      { ...first, trace: first.trace.length },
    );
    assert.equal(second.trace, first.trace);
  }
});

test("different seeds explore different clusters", () => {
  const configs = new Set<string>();
  for (let seed = 1; seed <= 50; seed++) configs.add(runSeed(seed, { faultSteps: 1, quietSteps: 0 }).config);
  assert.ok(configs.size > 40, `only ${configs.size} distinct configurations in 50 seeds`);
});

test.run();
