/**
 * Tests start their real ZooKeeper through the same launcher as `ringkv cluster`.
 *
 * @module
 */
export * from "../../src/cluster/zookeeper_process.ts";
