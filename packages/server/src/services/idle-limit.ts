/**
 * Idle limits for transfers that have no deadline as a whole: a large upload from a slow client
 * takes as long as it takes, and what fails it is a side (its body, the sandbox taking it) that
 * moves nothing for the limit. OPERATION_TIMEOUT names that side.
 *
 * @example
 *   const next = await withinIdle(body.next(), 60_000, "the request body"); // or throws Stalled
 *   throw stalledError(stall, "archive upload", "archive upload"); // OPERATION_TIMEOUT, 504
 */
import { ShoalError } from "../errors/shoal-error.ts";

/** A transfer one of whose sides moved nothing for the idle limit. */
export class Stalled extends Error {
  constructor(
    readonly waitingFor: string,
    readonly idleMs: number,
  ) {
    super(`${waitingFor} moved nothing for ${idleMs} ms`);
  }
}

/** `work`, or a Stalled rejection once it has been pending for `idleMs`. */
export async function withinIdle<T>(work: Promise<T>, idleMs: number, waitingFor: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const stall = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Stalled(waitingFor, idleMs)), idleMs);
  });
  try {
    return await Promise.race([work, stall]);
  } finally {
    clearTimeout(timer);
  }
}

/** The catalog's answer to a stall of `operation` ("files write"), a `what` ("file write") to users. */
export function stalledError(stall: Stalled, operation: string, what: string): ShoalError {
  return new ShoalError("OPERATION_TIMEOUT", {
    message: `The ${what} stopped: ${stall.waitingFor} moved no bytes for ${stall.idleMs} ms`,
    details: { operation, timeout_ms: stall.idleMs },
  });
}
