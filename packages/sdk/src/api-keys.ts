/**
 * API keys: create (the secret is answered once), list, get and revoke. Needs a key with
 * `keys:admin`; a key can only grant scopes it holds itself.
 *
 * @example
 *   const keys = new ApiKeys();
 *   const { secret } = await keys.create({ name: "ci", scopes: ["sandboxes:read"] });
 */
import type { ApiKeyInfo, CreateApiKeyBody, CreatedApiKey } from "./api-types.ts";
import type { CallOptions, ConnectionOptions } from "./config.ts";
import { eachItem, type Page } from "./pages.ts";
import { Transport } from "./transport.ts";

export class ApiKeys {
  private readonly transport: Transport;

  constructor(options: ConnectionOptions = {}) {
    this.transport = new Transport(options);
  }

  create(body: CreateApiKeyBody, options: CallOptions = {}): Promise<CreatedApiKey> {
    return this.transport.json<CreatedApiKey>(
      { method: "POST", path: "/v1/api-keys", route: "/v1/api-keys", json: body },
      options,
    );
  }

  /** Every key, fetching pages as the loop goes. */
  list(options: CallOptions & { pageSize?: number } = {}): AsyncGenerator<ApiKeyInfo> {
    return eachItem((cursor) =>
      this.transport.json<Page<ApiKeyInfo>>(
        { method: "GET", path: "/v1/api-keys", query: { limit: options.pageSize ?? 100, cursor } },
        options,
      ),
    );
  }

  get(id: string, options: CallOptions = {}): Promise<ApiKeyInfo> {
    return this.transport.json<ApiKeyInfo>({ method: "GET", path: `/v1/api-keys/${encodeURIComponent(id)}` }, options);
  }

  /** Revokes the key at once; a revoked key never becomes valid again. */
  async revoke(id: string, options: CallOptions = {}): Promise<void> {
    await this.transport.json({ method: "DELETE", path: `/v1/api-keys/${encodeURIComponent(id)}` }, options);
  }
}
