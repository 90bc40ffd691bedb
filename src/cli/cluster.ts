/**
 * `ringkv cluster` (npm start): a real ZooKeeper (Debian's, unless `--zk`
 * names one) and 5 nodes on 127.0.0.1:9001-9005, every partition on 3 of
 * them, so any single node may die. Prints who leads what and commands to
 * try; Ctrl-C stops everything.
 *
 * @module
 */
import fs from "node:fs";
import path from "node:path";
import { startLocalCluster } from "../node/local_cluster.ts";
import { parseCommandFlags } from "./args.ts";
import { startZooKeeper, zooKeeperAvailable, type ZooKeeperServer } from "../cluster/zookeeper_process.ts";

const USAGE = `usage: ringkv cluster [--zk host:port] [--nodes 5] [--base-port 9001] [--http-base-port 8001] [--data-dir ./data/cluster] [--fresh]

Starts ZooKeeper (unless --zk is given) and a local cluster; Ctrl-C stops it.
  --zk <connect>     use this ZooKeeper instead of starting one
  --nodes <n>        number of nodes (default 5; partitions = nodes, 3 replicas each)
  --base-port <p>    first client port (default 9001)
  --http-base-port <p>  first HTTP API port (default 8001; 0: no HTTP API)
  --data-dir <dir>   where node data, logs and ZooKeeper's data go (default ./data/cluster)
  --fresh            delete the data dir first (a new, empty cluster)`;

/** Runs the local cluster until SIGINT/SIGTERM/SIGHUP; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const values = parseCommandFlags(argv, {
    name: "ringkv cluster",
    usage: USAGE,
    options: {
      "zk": { type: "string" },
      "nodes": { type: "string", default: "5" },
      "base-port": { type: "string", default: "9001" },
      "http-base-port": { type: "string", default: "8001" },
      "data-dir": { type: "string", default: "./data/cluster" },
      "fresh": { type: "boolean", default: false },
    },
  });
  if (typeof values === "number") return values;
  const nodes = Number(values.nodes);
  const basePort = Number(values["base-port"]);
  const httpBasePort = Number(values["http-base-port"]);
  if (!Number.isInteger(nodes) || nodes < 3 || nodes > 50) {
    console.error("ringkv cluster: --nodes must be a whole number from 3 to 50");
    return 2;
  }
  if (!Number.isInteger(basePort) || basePort < 1 || basePort + nodes > 65535) {
    console.error("ringkv cluster: --base-port must be a port number");
    return 2;
  }
  if (!Number.isInteger(httpBasePort) || httpBasePort < 0 || httpBasePort + nodes > 65535) {
    console.error("ringkv cluster: --http-base-port must be a port number (0: no HTTP API)");
    return 2;
  }
  const dataDir = path.resolve(values["data-dir"]!);
  if (values.fresh) fs.rmSync(dataDir, { recursive: true, force: true });
  fs.mkdirSync(dataDir, { recursive: true });

  // From here on a signal asks for a clean stop (nodes, then ZooKeeper): they
  // run in their own process groups, so the terminal's Ctrl-C or hang-up
  // reaches only this process, which must not die and leave them running.
  const stopRequested = new Promise<void>((resolve) => {
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(signal, () => resolve());
  });
  let zookeeper: ZooKeeperServer | undefined;
  let connect: string | undefined = values.zk;
  if (connect === undefined) {
    if (!zooKeeperAvailable()) {
      console.error("ringkv cluster: ZooKeeper is not installed (apt-get install zookeeper), and --zk was not given");
      return 1;
    }
    zookeeper = await startZooKeeper({ port: 2181, dataDir: path.join(dataDir, "zookeeper"), tickTime: 200, handleSignals: false });
    connect = zookeeper.connect;
    console.log(`ZooKeeper      ${connect} (pid ${zookeeper.pid}, data in ${path.join(dataDir, "zookeeper")})`);
  }
  const cluster = await startLocalCluster({
    zk: connect!,
    nodes,
    basePort,
    httpBasePort: httpBasePort === 0 ? undefined : httpBasePort,
    dataDir,
    sessionTimeoutMs: 2000,
    handleSignals: false,
  });
  const leaders = await cluster.waitForLeaders({ timeoutMs: 60_000 });
  console.log("");
  for (const spec of cluster.specs) {
    const leads = Object.entries(leaders).filter(([, id]) => id === spec.id).map(([p]) => p);
    const http = spec.httpPort === undefined ? "" : ` http ${spec.httpPort}`;
    console.log(`${spec.id.padEnd(4)} ${spec.host}:${spec.port}${http}  pid ${String(cluster.pid(spec.id)).padEnd(7)} replicates ${spec.partitions.join(",").padEnd(10)} leads ${leads.join(",") || "-"}   log ${spec.logFile}`);
  }
  const port = cluster.specs[0].port;
  const host = cluster.specs[0].host;
  console.log(`
ringkv is up: ${nodes} nodes, ${Object.keys(cluster.layout).length} partitions, 3 replicas each. Any node serves any key.

  echo "PUT greeting hello world" | nc -q1 ${host} ${port}
  echo "GET greeting" | nc -q1 ${host} ${basePort + 1}
  echo '{"op":"GET","key":"greeting"}' | nc -q1 ${host} ${basePort + 2}
  redis-cli -p ${basePort + 3} get greeting${httpBasePort === 0 ? "" : `
  curl -s 'http://${host}:${httpBasePort + 4}/get?key=greeting'
  curl -s http://${host}:${httpBasePort}/metrics | grep ringkv_partition_leader`}
  echo INFO | nc -q1 ${host} ${port}      # who leads what, commit indexes
  kill -9 <a leader's pid>                 # and watch another node take over
  kill <a leader's pid>                    # SIGTERM: it hands its partitions over first

Ctrl-C stops the cluster (data stays in ${dataDir}; --fresh starts empty).`);

  await stopRequested;
  console.log("\nstopping the cluster ...");
  await cluster.stop();
  await zookeeper?.stop();
  console.log("stopped.");
  return 0;
}
