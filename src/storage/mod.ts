/**
 * Storage: the only module that touches data files. One durable log per
 * partition (CRC'd records, group-commit fsync), snapshots, the promised
 * epoch, and replay on open.
 *
 * @module
 */

export type { EntryOp, LogEntry } from "./entry.ts";
export {
  APPEND_MAX_BYTES,
  BATCH_MAX_BYTES,
  CorruptionError,
  openPartitionLog,
  PartitionLog,
  SEGMENT_MAX_BYTES,
} from "./partition_log.ts";
export type { AppendOptions, PartitionLogOptions, PartitionLogStats, Recovery } from "./partition_log.ts";
export { MAX_KEY_BYTES, MAX_VALUE_BYTES } from "./record.ts";
export { lockDataDir } from "./lock.ts";
export type { DataDirLock } from "./lock.ts";
