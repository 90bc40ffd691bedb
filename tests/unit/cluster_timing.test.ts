import { test } from "uvu";
import * as assert from "uvu/assert";
import { backoffMs, deadlineMargin, leaseMs, probeIntervalMs, requestTimeoutMs } from "../../src/cluster/timing.ts";

test("the margin is max(300 ms, 25%) and the lease is what is left", () => {
  assert.is(deadlineMargin(2000), 500);
  assert.is(leaseMs(2000), 1500);
  assert.is(deadlineMargin(1000), 300);
  assert.is(leaseMs(1000), 700);
  assert.is(deadlineMargin(10_000), 2500);
});

test("tiny timeouts still leave a positive lease", () => {
  assert.is(deadlineMargin(400), 200);
  assert.is(leaseMs(400), 200);
  assert.throws(() => leaseMs(0));
});

test("several probes fit in one lease, so one lost probe does not trip the deadline", () => {
  for (const timeout of [400, 1000, 2000, 4000, 30_000]) {
    assert.ok(leaseMs(timeout) >= 2 * probeIntervalMs(timeout) - 1, `timeout ${timeout}`);
  }
});

test("requests time out well within the session, and backoff is capped", () => {
  assert.is(requestTimeoutMs(2000), 1000);
  assert.is(requestTimeoutMs(400), 500);
  assert.equal([1, 2, 3, 4, 10].map((n) => backoffMs(n, 1000)), [50, 100, 200, 400, 1000]);
});

test.run();
