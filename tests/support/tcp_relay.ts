/**
 * A TCP relay for the fault suite: it gives each node its own address for
 * ZooKeeper. On loopback every node reaches ZooKeeper at 127.0.0.1 from
 * 127.0.0.1, so iptables cannot cut one node off from it; through a relay
 * on the node's own address and a port of its own, a DROP rule on that
 * address and port cuts exactly that node off (real kernel drops: the
 * connection stays open and silent, as in a real partition).
 *
 * @module
 */
import net from "node:net";

/** Where a relay listens. */
export interface TcpRelay {
  readonly host: string;
  readonly port: number;
  /** Stops listening and drops every relayed connection. */
  close(): Promise<void>;
}

/** Where a relay forwards to. */
export interface RelayTarget {
  host: string;
  port: number;
}

/**
 * Listens on `host` (a free port) and relays every connection, both ways,
 * to `target`. Either side closing or failing closes the other.
 */
export async function startTcpRelay(host: string, target: RelayTarget): Promise<TcpRelay> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: target.host, port: target.port });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.setNoDelay(true);
      // A relay never outlives either end: an error or close ends both.
      socket.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
      socket.on("close", () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as net.AddressInfo;
  return {
    host,
    port: address.port,
    close() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
