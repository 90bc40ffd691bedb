/**
 * The JSON stored in znodes: NodeInfo, LeaderInfo. Everything read from
 * ZooKeeper is validated; anything malformed is rejected, never half-used.
 *
 * @module
 */

import { isValidName, MAX_HOST_LENGTH, MAX_PARTITIONS_PER_NODE } from "./layout.ts";
import type { LeaderInfo, NodeInfo } from "./types.ts";

/** Largest znode payload we write or accept (ZooKeeper's own limit is 1 MiB). */
export const MAX_ZNODE_BYTES = 512 * 1024;

/** Returns an error message if `info` is not a valid NodeInfo, else undefined. */
export function checkNodeInfo(info: unknown): string | undefined {
  if (typeof info !== "object" || info === null) return "not an object";
  const node = info as Record<string, unknown>;
  if (!isValidName(node.id)) return `bad node id ${JSON.stringify(node.id)}`;
  if (typeof node.host !== "string" || node.host.length === 0 || node.host.length > MAX_HOST_LENGTH) {
    return `bad host ${JSON.stringify(node.host)}`;
  }
  if (!Number.isInteger(node.port) || (node.port as number) < 1 || (node.port as number) > 65535) {
    return `bad port ${JSON.stringify(node.port)}`;
  }
  if (!Array.isArray(node.partitions) || node.partitions.length > MAX_PARTITIONS_PER_NODE) {
    return "partitions must be an array of at most " + MAX_PARTITIONS_PER_NODE;
  }
  for (const partition of node.partitions) {
    if (!isValidName(partition)) return `bad partition name ${JSON.stringify(partition)}`;
  }
  if (new Set(node.partitions).size !== node.partitions.length) return "duplicate partition";
  return undefined;
}

/** Encodes a NodeInfo for `<root>/nodes/<id>` (only the known fields). */
export function encodeNodeInfo(info: NodeInfo): Buffer {
  const problem = checkNodeInfo(info);
  if (problem !== undefined) throw new Error(`invalid NodeInfo: ${problem}`);
  return Buffer.from(JSON.stringify({ id: info.id, host: info.host, port: info.port, partitions: info.partitions }));
}

/** Parses a NodeInfo; throws on anything malformed. */
export function parseNodeInfo(data: Buffer): NodeInfo {
  const value = parseJson(data, "NodeInfo");
  const problem = checkNodeInfo(value);
  if (problem !== undefined) throw new Error(`invalid NodeInfo: ${problem}`);
  const node = value as NodeInfo;
  return { id: node.id, host: node.host, port: node.port, partitions: [...node.partitions] };
}

/** Encodes a LeaderInfo for `<root>/partitions/<p>/leader`. */
export function encodeLeaderInfo(info: LeaderInfo): Buffer {
  const problem = checkLeaderInfo(info);
  if (problem !== undefined) throw new Error(`invalid LeaderInfo: ${problem}`);
  return Buffer.from(JSON.stringify({ id: info.id, epoch: info.epoch, address: info.address }));
}

/** Parses a LeaderInfo; throws on anything malformed. */
export function parseLeaderInfo(data: Buffer): LeaderInfo {
  const value = parseJson(data, "LeaderInfo");
  const problem = checkLeaderInfo(value);
  if (problem !== undefined) throw new Error(`invalid LeaderInfo: ${problem}`);
  const leader = value as LeaderInfo;
  return { id: leader.id, epoch: leader.epoch, address: leader.address };
}

/** True if both describe the same leader (or both none). */
export function sameLeader(a: LeaderInfo | undefined, b: LeaderInfo | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.id === b.id && a.epoch === b.epoch && a.address === b.address;
}

/** "host:port", bracketing IPv6 literals. */
export function addressOf(node: NodeInfo): string {
  return node.host.includes(":") ? `[${node.host}]:${node.port}` : `${node.host}:${node.port}`;
}

function checkLeaderInfo(info: unknown): string | undefined {
  if (typeof info !== "object" || info === null) return "not an object";
  const leader = info as Record<string, unknown>;
  if (!isValidName(leader.id)) return `bad id ${JSON.stringify(leader.id)}`;
  if (!Number.isSafeInteger(leader.epoch) || (leader.epoch as number) < 0) return `bad epoch ${JSON.stringify(leader.epoch)}`;
  if (typeof leader.address !== "string" || leader.address.length === 0 || leader.address.length > MAX_HOST_LENGTH + 8) {
    return `bad address ${JSON.stringify(leader.address)}`;
  }
  return undefined;
}

/** Parses JSON from a znode, bounded in size. */
export function parseJson(data: Buffer, what: string): unknown {
  if (data.length > MAX_ZNODE_BYTES) throw new Error(`${what}: ${data.length} bytes is over ${MAX_ZNODE_BYTES}`);
  try {
    return JSON.parse(data.toString("utf8"));
  } catch (error) {
    throw new Error(`${what}: not JSON (${(error as Error).message})`);
  }
}
