/**
 * Where everything lives in ZooKeeper, and the names allowed in paths.
 *
 * ```
 * <root>/nodes/<id>                          ephemeral JSON NodeInfo
 * <root>/ring                                persistent JSON {partitions: {p: [ids]}, version}
 * <root>/partitions/<p>/members/<id>         persistent: the declared replica set
 * <root>/partitions/<p>/election/c_<id>_<session>_<seq>  ephemeral-sequential, data = id
 * <root>/partitions/<p>/leader               ephemeral JSON LeaderInfo
 * ```
 *
 * @module
 */

/** Node ids and partition names: short, path-safe, no surprises in logs. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Most partitions one node may be a member of. */
export const MAX_PARTITIONS_PER_NODE = 256;
/** Longest host name accepted in a NodeInfo. */
export const MAX_HOST_LENGTH = 255;

/** True if `name` may be used as a node id or partition name. */
export function isValidName(name: unknown): name is string {
  return typeof name === "string" && NAME_PATTERN.test(name);
}

/** Throws unless `root` is an absolute ZooKeeper path without a trailing slash. */
export function assertRoot(root: string): void {
  if (!/^(\/[A-Za-z0-9._-]+)+$/.test(root)) {
    throw new Error(`cluster root must look like "/ringkv" or "/a/b" (got ${JSON.stringify(root)})`);
  }
}

/** The znode paths of one cluster root. */
export interface Layout {
  root: string;
  nodes: string;
  ring: string;
  partitionsDir: string;
}

/** Paths under `root`. */
export function layoutOf(root: string): Layout {
  assertRoot(root);
  return { root, nodes: `${root}/nodes`, ring: `${root}/ring`, partitionsDir: `${root}/partitions` };
}

/** `<root>/nodes/<id>` */
export function nodePath(layout: Layout, id: string): string {
  return `${layout.nodes}/${id}`;
}

/** `<root>/partitions/<p>` */
export function partitionPath(layout: Layout, partition: string): string {
  return `${layout.partitionsDir}/${partition}`;
}

/** `<root>/partitions/<p>/members` */
export function membersPath(layout: Layout, partition: string): string {
  return `${partitionPath(layout, partition)}/members`;
}

/** `<root>/partitions/<p>/election` */
export function electionPath(layout: Layout, partition: string): string {
  return `${partitionPath(layout, partition)}/election`;
}

/** `<root>/partitions/<p>/leader` */
export function leaderPath(layout: Layout, partition: string): string {
  return `${partitionPath(layout, partition)}/leader`;
}
