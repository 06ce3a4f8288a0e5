/**
 * One connection to the agent of each running sandbox, opened lazily: after a server restart the
 * first exec of a sandbox connects to the socket its agent still listens on. A connection that
 * failed is dropped, so the next call opens a fresh one.
 *
 * @example
 *   const links = new AgentLinks(connectAgent);
 *   const result = await links.use(id, socketPath, (agent) => agent.exec(request));
 */

import type { ExecRequest, ExecResult, SandboxProcess, SpawnRequest } from "../../../services/runtime-port.ts";

/** What the runtime needs of an agent connection (AgentClient provides it). */
export interface AgentLink {
  exec(request: ExecRequest): Promise<ExecResult>;
  spawn(request: SpawnRequest): Promise<SandboxProcess>;
  close(): void | Promise<void>;
  /** True once the connection ended (the agent died, the sandbox stopped). */
  readonly closed?: boolean;
}

export type AgentConnector<Link extends AgentLink = AgentLink> = (
  socketPath: string,
  sandboxId: string,
) => Promise<Link>;

export class AgentLinks<Link extends AgentLink = AgentLink> {
  readonly #connect: AgentConnector<Link>;
  readonly #links = new Map<string, Promise<Link>>();

  constructor(connect: AgentConnector<Link>) {
    this.#connect = connect;
  }

  async get(id: string, socketPath: string): Promise<Link> {
    const existing = this.#links.get(id);
    if (existing !== undefined) {
      const link = await existing.catch(() => undefined);
      if (link !== undefined && link.closed !== true) return link;
      if (this.#links.get(id) === existing) this.#links.delete(id);
    }
    return this.#open(id, socketPath);
  }

  #open(id: string, socketPath: string): Promise<Link> {
    let link = this.#links.get(id);
    if (link === undefined) {
      link = this.#connect(socketPath, id);
      this.#links.set(id, link);
      link.catch(() => {
        if (this.#links.get(id) === link) this.#links.delete(id);
      });
    }
    return link;
  }

  async use<T>(id: string, socketPath: string, call: (link: Link) => Promise<T>): Promise<T> {
    const link = await this.get(id, socketPath);
    return call(link);
  }

  async drop(id: string): Promise<void> {
    const link = this.#links.get(id);
    if (link === undefined) return;
    this.#links.delete(id);
    await link.then((l) => l.close()).catch(() => undefined);
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.#links.keys()].map((id) => this.drop(id)));
  }
}
