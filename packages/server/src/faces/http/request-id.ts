/**
 * Request ids: a client's `X-Request-Id` is kept only when it matches `^[\w\-=]{1,255}$`;
 * otherwise the server makes a fresh `req_…` id. The id is echoed on every response.
 */

import { randomUUID } from "node:crypto";
import type { IncomingMessage } from "node:http";

export const requestIdPattern = /^[\w\-=]{1,255}$/;

export function requestIdFor(request: IncomingMessage): string {
  const offered = request.headers["x-request-id"];
  if (typeof offered === "string" && requestIdPattern.test(offered)) return offered;
  return newRequestId();
}

export function newRequestId(): string {
  return `req_${randomUUID().replaceAll("-", "")}`;
}
