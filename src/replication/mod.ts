/**
 * Replication of one partition: the pure core ({@linkcode ReplicaCore}), its
 * contract with hosts (types), and the peer message line codec.
 *
 * @module
 */
export * from "./types.ts";
export * from "./core.ts";
export * from "./codec.ts";
