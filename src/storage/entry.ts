/**
 * A log entry: the unit the replication core orders and the storage layer
 * makes durable.
 *
 * @module
 */

/** What an entry does to the key-value state. `noop` is a new leader's first entry. */
export type EntryOp = "put" | "delete" | "noop";

/** One replicated, durable log entry. Indexes start at 1 and have no gaps. */
export interface LogEntry {
  /** Leadership epoch of the leader that created the entry. */
  epoch: number;
  /** Position in the partition's log. */
  index: number;
  op: EntryOp;
  /** Empty for `noop`. */
  key: string;
  /** Empty for `delete` and `noop`. */
  value: Buffer;
}
