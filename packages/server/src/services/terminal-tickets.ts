/**
 * Terminal tickets: short-lived credentials for the terminal WebSocket, which a browser cannot
 * open with an `Authorization` header. A client with an API key asks for one; the ticket then
 * stands for that key's principal, for one sandbox, once, until it expires.
 *
 * Tickets live in this process's memory, keyed by their SHA-256 digest. Any presentation uses a
 * ticket up, even one that is then refused (wrong sandbox), since it may have leaked. Tickets
 * are kept one TTL past their expiry so that a reuse or a late use is told apart from a made-up
 * ticket.
 *
 * @example
 *   const { ticket } = await tickets.issue(principal, "sbx_…");
 *   const principal = await tickets.redeem(ticket, "sbx_…"); // throws WS_AUTH_REQUIRED the second time
 */
import { createHash, randomBytes } from "node:crypto";
import { keyStatus, type Principal } from "../domain/api-key.ts";
import { ShoalError } from "../errors/shoal-error.ts";
import type { ApiKeyService } from "./api-keys.ts";
import type { Clock } from "./ports.ts";
import type { SandboxService } from "./sandboxes.ts";

export interface IssuedTicket {
  readonly ticket: string;
  readonly expiresAt: string;
}

/** Why a terminal connection was refused: WS_AUTH_REQUIRED's `details.reason`. */
export type TicketRefusal =
  | "invalid_ticket"
  | "ticket_used"
  | "ticket_expired"
  | "ticket_for_another_sandbox"
  | "key_revoked"
  | "key_expired";

export interface TerminalTicketOptions {
  readonly clock: Clock;
  readonly ttlSeconds: number;
  readonly apiKeys: ApiKeyService;
  readonly sandboxes: SandboxService;
}

interface Entry {
  readonly principal: Principal;
  readonly sandboxId: string;
  readonly expiresAtMs: number;
  used: boolean;
}

const ticketPattern = /^tkt_[A-Za-z0-9_-]{43}$/;
/** Outstanding tickets this process holds at most (each is ~200 bytes). */
const maxTickets = 100_000;

export function refusal(reason: TicketRefusal): ShoalError {
  return new ShoalError("WS_AUTH_REQUIRED", { details: { reason } });
}

export class TerminalTickets {
  /** By digest, in the order issued, which is the order they expire in (one TTL for all). */
  readonly #entries = new Map<string, Entry>();

  constructor(private readonly options: TerminalTicketOptions) {}

  /** A ticket for the principal's sandbox `sandboxId`; SANDBOX_NOT_FOUND when it has none such. */
  async issue(principal: Principal, sandboxId: string): Promise<IssuedTicket> {
    await this.options.sandboxes.get(principal, sandboxId);
    const now = this.options.clock().getTime();
    this.#purge(now);
    if (this.#entries.size >= maxTickets) {
      throw new ShoalError("RATE_LIMIT_EXCEEDED", {
        message: "Too many terminal tickets are outstanding on this server",
        details: { limit: maxTickets, window_seconds: this.options.ttlSeconds },
        retryAfterSeconds: this.options.ttlSeconds,
      });
    }
    const ticket = `tkt_${randomBytes(32).toString("base64url")}`;
    const expiresAtMs = now + this.options.ttlSeconds * 1000;
    this.#entries.set(digest(ticket), { principal, sandboxId, expiresAtMs, used: false });
    return { ticket, expiresAt: new Date(expiresAtMs).toISOString() };
  }

  /**
   * The principal a ticket stands for, if it is unused, unexpired, for `sandboxId`, and its key
   * is still valid; WS_AUTH_REQUIRED with the reason otherwise. Uses the ticket up either way.
   */
  async redeem(ticket: string, sandboxId: string): Promise<Principal> {
    const now = this.options.clock().getTime();
    this.#purge(now);
    const entry = ticketPattern.test(ticket) ? this.#entries.get(digest(ticket)) : undefined;
    if (entry === undefined) throw refusal("invalid_ticket");
    // Marked before anything is awaited: two connections racing with one ticket get one terminal.
    const wasUsed = entry.used;
    entry.used = true;
    if (wasUsed) throw refusal("ticket_used");
    if (now >= entry.expiresAtMs) throw refusal("ticket_expired");
    if (entry.sandboxId !== sandboxId) throw refusal("ticket_for_another_sandbox");
    const key = await this.options.apiKeys.get(entry.principal, entry.principal.keyId).catch((error: unknown) => {
      if (error instanceof ShoalError && error.code === "API_KEY_NOT_FOUND") return undefined;
      throw error;
    });
    const status = key === undefined ? undefined : keyStatus(key, this.options.clock());
    if (status === undefined || !status.valid) {
      throw refusal(status?.reason === "expired" ? "key_expired" : "key_revoked");
    }
    return entry.principal;
  }

  /** Forgets tickets one TTL after they expired: until then a late one is told it expired. */
  #purge(now: number): void {
    const keptMs = this.options.ttlSeconds * 1000;
    for (const [key, entry] of this.#entries) {
      if (entry.expiresAtMs + keptMs > now) break;
      this.#entries.delete(key);
    }
  }
}

function digest(ticket: string): string {
  return createHash("sha256").update(ticket).digest("hex");
}
