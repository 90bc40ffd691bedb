/** SNAPSHOT lines: what the sender encodes, the receiver rebuilds exactly; garbage is refused. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { encodeSnapshot, SNAPSHOT_CHUNK_BYTES, SnapshotReceiver } from "../../src/replication/transport.ts";

function feedAll(receiver: SnapshotReceiver, lines: string[]) {
  let last;
  for (const line of lines) {
    assert.ok(line.startsWith("SNAPSHOT "));
    last = receiver.feed(line.slice("SNAPSHOT ".length));
    assert.is.not(last.type, "error", JSON.stringify(last));
  }
  return last;
}

test("a snapshot round-trips through its lines, binary values and unicode keys included", () => {
  const state = new Map<string, Buffer>();
  for (let i = 0; i < 20_000; i++) state.set(`key-${i}-é`, Buffer.from(`value ${i}\n\0 with spaces`));
  state.set("big", Buffer.alloc(SNAPSHOT_CHUNK_BYTES * 2, 7));
  const lines = encodeSnapshot("p1", { epoch: 7, index: 42, lastEpoch: 6, state });
  assert.ok(lines.length > 3, "chunked into several DATA lines");
  for (const line of lines) assert.not.ok(line.includes("\n"));
  const step = feedAll(new SnapshotReceiver(), lines);
  assert.is(step?.type, "complete");
  if (step?.type !== "complete") return;
  assert.equal([step.snapshot.epoch, step.snapshot.index, step.snapshot.lastEpoch], [7, 42, 6]);
  assert.is(step.snapshot.state.size, state.size);
  for (const [key, value] of state) assert.ok(step.snapshot.state.get(key)?.equals(value), key);
});

test("an empty snapshot round-trips", () => {
  const step = feedAll(new SnapshotReceiver(), encodeSnapshot("p2", { epoch: 1, index: 0, lastEpoch: 0, state: new Map() }));
  assert.is(step?.type, "complete");
});

test("malformed SNAPSHOT lines are refused, never thrown", () => {
  const receiver = new SnapshotReceiver();
  for (const text of ["", "BEGIN", "BEGIN p1 1 2", "BEGIN p1 -1 2 3 4", "BEGIN bad/name 1 2 3 4", "DATA p1 a:b", "END p1", "REQUEST p1 x", "WHAT p1"]) {
    assert.is(receiver.feed(text).type, "error", text);
  }
  assert.is(receiver.feed("BEGIN p1 1 1 1 1").type, "more");
  assert.is(receiver.feed("DATA p1 nocolon").type, "error");
  assert.is(receiver.feed("BEGIN p1 1 1 1 1").type, "more");
  assert.is(receiver.feed("END p1").type, "error", "fewer keys than announced");
  assert.equal(receiver.feed("REQUEST p1 5"), { type: "request", partition: "p1", epoch: 5 });
});

test.run();
