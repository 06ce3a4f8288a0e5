/**
 * A TCP proxy in front of the server whose connections a test can cut, to see what a client does
 * when its connection drops in the middle of an answer.
 *
 * @example
 *   const proxy = await startProxy(server.url);
 *   const sandbox = await Sandbox.connect(id, { apiUrl: proxy.url, apiKey });
 *   proxy.dropAll();
 */
import net from "node:net";

export interface TcpProxy {
  readonly url: string;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Destroys every open connection, both sides. */
  dropAll(): void;
  close(): Promise<void>;
}

export async function startProxy(targetURL: string): Promise<TcpProxy> {
  const target = new URL(targetURL);
  const open = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((client) => {
    connections++;
    const upstream = net.connect(Number(target.port), target.hostname);
    open.add(client);
    open.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get connections() {
      return connections;
    },
    dropAll() {
      for (const socket of [...open]) socket.destroy();
      open.clear();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of open) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
