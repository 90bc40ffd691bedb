/**
 * What the router needs from a partition this node replicates, whether it is
 * a standalone partition (no peers) or a replicated one.
 *
 * @module
 */
import type { Proposal } from "./types.ts";

/** A write's or read's outcome, before it becomes a reply of some dialect. */
export type Outcome =
  | { type: "ok" }
  | { type: "deleted" }
  | { type: "not_found" }
  | { type: "value"; value: Buffer }
  /** Definite failure: nothing changed; safe to retry. */
  | { type: "unavailable"; message: string }
  /** Unknown outcome: the write may or may not take effect. */
  | { type: "timeout"; message: string }
  /** This node does not lead the partition (the router forwards or says NOT_LEADER). */
  | { type: "not_leader"; leader: string | undefined };

/** How far one follower is behind, for INFO and metrics. */
export interface FollowerStatus {
  id: string;
  matchIndex: number;
  lag: number;
}

/** A partition's state for INFO, RING and metrics. */
export interface PartitionStatus {
  partition: string;
  role: "leader" | "follower" | "candidate" | "standalone";
  epoch: number;
  promisedEpoch: number;
  leader: string | undefined;
  commitIndex: number;
  appliedIndex: number;
  lastIndex: number;
  keys: number;
  followers: FollowerStatus[];
}

/** Options of {@linkcode PartitionHandle.read}. */
export interface ReadOptions {
  /** READONLY: answer from this replica's applied state, possibly stale. */
  local: boolean;
}

/** A partition replicated by this node. */
export interface PartitionHandle {
  readonly name: string;
  /** Proposes a write; resolves once it is committed and applied (or with why not). */
  write(proposal: Proposal): Promise<Outcome>;
  /** Reads a key: linearizable unless `local`. */
  read(key: string, options: ReadOptions): Outcome | Promise<Outcome>;
  status(): PartitionStatus;
  /** Flushes and closes files; pending requests get `unavailable`. */
  close(): Promise<void>;
}
