/**
 * The consistent-hash ring: SHA-256 (sha.js) over 10 virtual nodes per
 * partition. Pure: the same partitions give the same ring on every node, so
 * every node computes the same owner for every key.
 *
 * @module
 */
import shajs from "sha.js";

/** Virtual nodes per partition unless told otherwise. */
export const DEFAULT_VNODES = 10;

/** Options for {@linkcode createRing}. */
export interface RingOptions {
  /** Virtual nodes per partition. Defaults to 10. */
  vnodes?: number;
}

/** One point on the ring: a partition's virtual node at `position`. */
export interface Vnode {
  partition: string;
  /** Which of the partition's vnodes (0-based). */
  replica: number;
  /** Position on the ring: the first 48 bits of SHA-256(`<partition>#<replica>`). */
  position: number;
}

/** A built ring: look keys up with {@linkcode ownerOf}. */
export interface Ring {
  /** Partitions on the ring, sorted. */
  partitions: readonly string[];
  /** Vnodes sorted by position (ties broken by partition name, then replica). */
  vnodes: readonly Vnode[];
}

/** Hashes `text` (UTF-8) to a ring position: the first 48 bits of its SHA-256. */
export function ringPosition(text: string): number {
  const digest = shajs("sha256").update(text, "utf8").digest();
  return digest.readUIntBE(0, 6);
}

/** Builds the SHA-256 ring for `partitions`; the same input gives the same ring on every node. */
export function createRing(partitions: readonly string[], options: RingOptions = {}): Ring {
  const vnodesPer = options.vnodes ?? DEFAULT_VNODES;
  if (!Number.isInteger(vnodesPer) || vnodesPer < 1) {
    throw new RangeError(`vnodes must be a positive integer, got ${vnodesPer}`);
  }
  const sorted = [...new Set(partitions)].sort();
  const vnodes: Vnode[] = [];
  for (const partition of sorted) {
    for (let replica = 0; replica < vnodesPer; replica++) {
      vnodes.push({ partition, replica, position: ringPosition(`${partition}#${replica}`) });
    }
  }
  vnodes.sort(compareVnodes);
  return { partitions: sorted, vnodes };
}

function compareVnodes(a: Vnode, b: Vnode): number {
  if (a.position !== b.position) return a.position - b.position;
  if (a.partition !== b.partition) return a.partition < b.partition ? -1 : 1;
  return a.replica - b.replica;
}

/**
 * The partition owning `key`: the first vnode at or after the key's position,
 * wrapping around. Throws on an empty ring.
 */
export function ownerOf(ring: Ring, key: string): string {
  const { vnodes } = ring;
  if (vnodes.length === 0) throw new Error("the ring has no partitions");
  // One partition owns every position (a standalone node): no hashing needed.
  if (ring.partitions.length === 1) return ring.partitions[0];
  const position = ringPosition(key);
  // Binary search for the first vnode with position >= key position.
  let low = 0;
  let high = vnodes.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (vnodes[mid].position < position) low = mid + 1;
    else high = mid;
  }
  return vnodes[low === vnodes.length ? 0 : low].partition;
}
