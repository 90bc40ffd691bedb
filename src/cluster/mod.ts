/**
 * The cluster layer: the only user of ZooKeeper (node-zookeeper-client).
 * Registration, the startup barrier, the ring and its pending partitions,
 * per-partition elections (epoch = candidate sequence number), leader
 * publication, and a session lease that tells a leader to stop before
 * ZooKeeper could have elected another.
 *
 * @module
 */

export { joinCluster, MAX_NODES, MAX_SESSION_TIMEOUT_MS, MIN_SESSION_TIMEOUT_MS } from "./cluster.ts";
export type {
  CandidateView,
  Cluster,
  ClusterHandlers,
  ClusterOptions,
  ClusterState,
  LeaderInfo,
  NodeInfo,
  RingView,
  SessionEvent,
  SessionState,
} from "./types.ts";
export { deadlineMargin, leaseMs } from "./timing.ts";
export { preferredLeaders } from "./election.ts";
