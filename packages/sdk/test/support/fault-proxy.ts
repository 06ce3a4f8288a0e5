/**
 * A real HTTP proxy in front of a real server that loses the answer of chosen requests: it
 * forwards the request, lets the server do the work, then cuts the client's connection before any
 * byte of the answer reaches it. That is how a retry that must not repeat a create is provoked.
 *
 * @example
 *   const proxy = await startFaultProxy(server.url, (req) => req.method === "POST");
 *   await Sandbox.create({ apiUrl: proxy.url, apiKey });
 *   assert.equal(proxy.dropped, 1);
 *   await proxy.close();
 */
import http, { type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";

export interface FaultProxy {
  readonly url: string;
  /** How many answers were lost so far. */
  readonly dropped: number;
  /** Every request that passed, as `METHOD /path`. */
  readonly seen: string[];
  close(): Promise<void>;
}

/** `dropAnswer` decides per request; it is asked once per request, in arrival order. */
export async function startFaultProxy(
  target: string,
  dropAnswer: (request: IncomingMessage) => boolean,
): Promise<FaultProxy> {
  const upstream = new URL(target);
  let dropped = 0;
  const seen: string[] = [];
  const server = http.createServer((request, response) => {
    seen.push(`${request.method} ${request.url}`);
    const drop = dropAnswer(request);
    const forwarded = http.request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: request.method,
        path: request.url,
        headers: request.headers,
      },
      (answer) => {
        if (drop) {
          dropped++;
          answer.resume();
          answer.once("end", () => request.socket.destroy());
          return;
        }
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      },
    );
    forwarded.on("error", () => request.socket.destroy());
    request.pipe(forwarded);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get dropped() {
      return dropped;
    },
    seen,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
