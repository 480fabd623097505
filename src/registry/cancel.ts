import { setTimeout as delay } from "node:timers/promises";
import { OvmsError, isOvmsError } from "../core/errors.js";

/**
 * Cancellation: every long registry operation takes an AbortSignal (Ctrl-C in `ovm`), and
 * one stopped by it ends with one error, CANCELLED, whatever layer noticed first (undici,
 * a socket, a wait between retries), so callers tell "asked to stop" from "failed".
 */

/** cancelled is the error of an operation its AbortSignal stopped. */
export function cancelled(what?: string, signal?: AbortSignal): OvmsError {
  return new OvmsError("CANCELLED", what ? `${what}: cancelled` : "cancelled", {
    cause: signal?.reason,
  });
}

/** throwIfCancelled throws CANCELLED when `signal` has fired: checked before each new step. */
export function throwIfCancelled(signal: AbortSignal | undefined, what?: string): void {
  if (signal?.aborted) throw cancelled(what, signal);
}

/** isCancelled tells whether `e` is the error of a cancelled operation. */
export function isCancelled(e: unknown): boolean {
  return isOvmsError(e, "CANCELLED");
}

/** sleep waits `ms`, or rejects with CANCELLED as soon as `signal` fires. */
export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await delay(ms, undefined, signal ? { signal } : undefined);
  } catch (e) {
    if (signal?.aborted) throw cancelled(undefined, signal);
    throw e;
  }
}

/** onAbort calls `fn` once when `signal` fires (at once if it has); the result removes the listener. */
export function onAbort(signal: AbortSignal | undefined, fn: () => void): () => void {
  if (!signal) return () => undefined;
  if (signal.aborted) {
    fn();
    return () => undefined;
  }
  signal.addEventListener("abort", fn, { once: true });
  return () => signal.removeEventListener("abort", fn);
}
