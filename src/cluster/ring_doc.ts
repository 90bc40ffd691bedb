/**
 * The ring document at `<root>/ring`: which partitions are active and each
 * one's replica set. Pure: build, parse, compare, change.
 *
 * A partition a registered node declares but the ring lacks is *pending*:
 * adding it would move key ranges away from the data that holds them, so it
 * only enters through an explicit `activatePartition` (DESIGN "Ring changes").
 *
 * @module
 */

import { isValidName } from "./layout.ts";
import { MAX_ZNODE_BYTES, parseJson } from "./codec.ts";
import type { NodeInfo, RingView } from "./types.ts";

/** Most partitions in a ring. */
export const MAX_RING_PARTITIONS = 4096;
/** Most replicas of one partition. */
export const MAX_REPLICAS = 64;

/** The stored ring: partitions → sorted member ids; `version` counts changes from 1. */
export interface RingDoc {
  partitions: Record<string, string[]>;
  version: number;
}

/** Builds the first ring (version 1) from the registered nodes and each partition's declared members. */
export function buildRing(nodes: Iterable<NodeInfo>, members: ReadonlyMap<string, readonly string[]>): RingDoc {
  const declared = new Map<string, Set<string>>();
  for (const node of nodes) {
    for (const partition of node.partitions) {
      const set = declared.get(partition) ?? new Set<string>();
      set.add(node.id);
      declared.set(partition, set);
    }
  }
  const partitions: Record<string, string[]> = {};
  for (const partition of [...declared.keys()].sort()) {
    // The persistent member list is the replica set; it includes every live declarer.
    const set = new Set([...(members.get(partition) ?? []), ...(declared.get(partition) ?? [])]);
    partitions[partition] = [...set].sort();
  }
  const doc = { partitions, version: 1 };
  assertRing(doc);
  return doc;
}

/** A partition to add to the ring, with its replica set. */
export interface PartitionChange {
  partition: string;
  members: readonly string[];
}

/** Returns a new ring with `change.partition` added (version + 1). Throws if already there. */
export function withPartition(doc: RingDoc, change: PartitionChange): RingDoc {
  const { partition, members } = change;
  if (Object.hasOwn(doc.partitions, partition)) throw new Error(`partition ${partition} is already in the ring`);
  const partitions: Record<string, string[]> = {};
  for (const name of [...Object.keys(doc.partitions), partition].sort()) {
    partitions[name] = name === partition ? [...new Set(members)].sort() : [...doc.partitions[name]];
  }
  const next = { partitions, version: doc.version + 1 };
  assertRing(next);
  return next;
}

/** Partitions declared by registered nodes that the ring lacks, sorted. */
export function pendingPartitions(doc: RingDoc, nodes: Iterable<NodeInfo>): string[] {
  const pending = new Set<string>();
  for (const node of nodes) {
    for (const partition of node.partitions) {
      if (!Object.hasOwn(doc.partitions, partition)) pending.add(partition);
    }
  }
  return [...pending].sort();
}

/** The view handed to `onRing`. */
export function ringView(doc: RingDoc, pending: readonly string[]): RingView {
  const partitions = new Map<string, string[]>();
  for (const name of Object.keys(doc.partitions).sort()) partitions.set(name, [...doc.partitions[name]]);
  return { partitions, pending: [...pending], version: doc.version };
}

/** True if two views say the same thing. */
export function sameRingView(a: RingView | undefined, b: RingView | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.version !== b.version || a.pending.join(",") !== b.pending.join(",")) return false;
  if (a.partitions.size !== b.partitions.size) return false;
  for (const [name, members] of a.partitions) {
    const other = b.partitions.get(name);
    if (other === undefined || other.join(",") !== members.join(",")) return false;
  }
  return true;
}

/** Encodes for the ring znode. */
export function encodeRing(doc: RingDoc): Buffer {
  assertRing(doc);
  const data = Buffer.from(JSON.stringify({ partitions: doc.partitions, version: doc.version }));
  if (data.length > MAX_ZNODE_BYTES) throw new Error(`ring document too large (${data.length} bytes)`);
  return data;
}

/** Parses and validates the ring znode; throws on anything malformed. */
export function parseRing(data: Buffer): RingDoc {
  const value = parseJson(data, "ring");
  if (typeof value !== "object" || value === null) throw new Error("ring: not an object");
  const raw = value as Record<string, unknown>;
  if (typeof raw.partitions !== "object" || raw.partitions === null || Array.isArray(raw.partitions)) {
    throw new Error("ring: partitions must be an object");
  }
  const partitions: Record<string, string[]> = {};
  for (const [name, members] of Object.entries(raw.partitions as Record<string, unknown>)) {
    if (!Array.isArray(members)) throw new Error(`ring: members of ${name} must be an array`);
    partitions[name] = members as string[];
  }
  const doc = { partitions, version: raw.version as number };
  assertRing(doc);
  return doc;
}

/** Throws unless `doc` is a well-formed ring. */
export function assertRing(doc: RingDoc): void {
  if (!Number.isSafeInteger(doc.version) || doc.version < 1) throw new Error(`ring: bad version ${doc.version}`);
  const names = Object.keys(doc.partitions);
  if (names.length > MAX_RING_PARTITIONS) throw new Error(`ring: more than ${MAX_RING_PARTITIONS} partitions`);
  for (const name of names) {
    if (!isValidName(name)) throw new Error(`ring: bad partition name ${JSON.stringify(name)}`);
    const members = doc.partitions[name];
    if (members.length === 0 || members.length > MAX_REPLICAS) {
      throw new Error(`ring: partition ${name} needs 1..${MAX_REPLICAS} members, has ${members.length}`);
    }
    for (const member of members) {
      if (!isValidName(member)) throw new Error(`ring: bad member ${JSON.stringify(member)} in ${name}`);
    }
    if (new Set(members).size !== members.length) throw new Error(`ring: duplicate member in ${name}`);
  }
}
