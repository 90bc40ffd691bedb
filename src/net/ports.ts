/**
 * Finding free TCP ports on this machine, for the local cluster runner, the
 * drill, the benchmarks, ZooKeeper and tests. A probe is only a snapshot:
 * callers that bind later must cope with losing a race.
 *
 * @module
 */
import net from "node:net";

/** Random base ports are drawn from [PORT_RANGE_START, PORT_RANGE_START + PORT_RANGE_SIZE). */
const PORT_RANGE_START = 20_000;
const PORT_RANGE_SIZE = 40_000;
/** Attempts before {@linkcode freePortRun} gives up. */
export const PORT_RUN_ATTEMPTS = 50;

/** A port the OS says is free on `host` (default 127.0.0.1) right now. */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      if (address === null || typeof address === "string") {
        server.close();
        reject(new Error("no port from the OS"));
        return;
      }
      server.close(() => resolve(address.port));
    });
  });
}

/** True when `port` can be bound on `host` (default 127.0.0.1) right now. */
export function portIsFree(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once("error", () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

/** Options for {@linkcode freePortRun}. */
export interface PortRunOptions {
  /** Every port must be free on each of these addresses. Defaults to ["127.0.0.1"]. */
  hosts?: readonly string[];
}

/** A first port such that it and the next `count - 1` are free on every host; throws after {@linkcode PORT_RUN_ATTEMPTS} tries. */
export async function freePortRun(count: number, options: PortRunOptions = {}): Promise<number> {
  const hosts = options.hosts ?? ["127.0.0.1"];
  for (let attempt = 0; attempt < PORT_RUN_ATTEMPTS; attempt++) {
    const base = PORT_RANGE_START + Math.floor(Math.random() * (PORT_RANGE_SIZE - count));
    let free = true;
    for (let i = 0; i < count && free; i++) {
      for (const host of hosts) {
        free = await portIsFree(base + i, host);
        if (!free) break;
      }
    }
    if (free) return base;
  }
  throw new Error(`found no ${count} consecutive free ports in ${PORT_RUN_ATTEMPTS} attempts`);
}
