/**
 * The in-memory state machine: applies committed log entries in order.
 *
 * @module
 */
import type { LogEntry } from "../storage/entry.ts";

/** What applying one entry did; the leader turns it into the client's reply. */
export type ApplyResult = "ok" | "deleted" | "not_found";

/** A partition's key-value state plus the index of the last entry applied. */
export class KvStore {
  /** The data; snapshots read it directly. */
  readonly data: Map<string, Buffer> = new Map();
  /** Index of the last applied entry (or of the snapshot loaded). */
  appliedIndex = 0;
  /** Epoch of the entry at `appliedIndex`. */
  appliedEpoch = 0;

  /** Applies `entry`, which must be the next one in order. */
  apply(entry: LogEntry): ApplyResult {
    if (entry.index !== this.appliedIndex + 1) {
      throw new Error(`apply out of order: applied ${this.appliedIndex}, got ${entry.index}`);
    }
    this.appliedIndex = entry.index;
    this.appliedEpoch = entry.epoch;
    switch (entry.op) {
      case "put":
        this.data.set(entry.key, entry.value);
        return "ok";
      case "delete":
        return this.data.delete(entry.key) ? "deleted" : "not_found";
      case "noop":
        return "ok";
    }
  }

  /** Replaces the whole state with a snapshot taken at (index, epoch). */
  load(index: number, epoch: number, state: Map<string, Buffer>): void {
    this.data.clear();
    for (const [key, value] of state) this.data.set(key, value);
    this.appliedIndex = index;
    this.appliedEpoch = epoch;
  }

  /** The value of `key`, or undefined. */
  get(key: string): Buffer | undefined {
    return this.data.get(key);
  }

  /** Number of keys. */
  get size(): number {
    return this.data.size;
  }
}
