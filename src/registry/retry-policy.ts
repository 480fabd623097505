/**
 * The one retry policy of registry traffic: how many times, how long between, and which
 * answers are worth another try. Every delay OVMS waits before trying a registry again (a
 * request, a resumed download, a blob copy started over) comes from `backoff` here.
 */

/** RetryPolicy bounds how a request that failed transiently is tried again. */
export interface RetryPolicy {
  /** attempts is the most times one request is sent (default 5). */
  attempts: number;
  /** baseMs is the first backoff delay, doubled at each attempt (default 200 ms). */
  baseMs: number;
  /** maxMs caps one delay, Retry-After included (default 10 s). */
  maxMs: number;
}

/** DEFAULT_RETRY_POLICY is what a client uses unless told otherwise. */
export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = { attempts: 5, baseMs: 200, maxMs: 10_000 };

/** retryPolicy fills what `partial` leaves out from the defaults. */
export function retryPolicy(partial: Partial<RetryPolicy> = {}): RetryPolicy {
  return { ...DEFAULT_RETRY_POLICY, ...partial };
}

/**
 * backoff is the delay before try `attempt + 1`: exponential from `baseMs`, capped at
 * `maxMs`, with ±25% jitter so that clients failed by the same outage do not come back in step.
 */
export function backoff(policy: RetryPolicy, attempt: number, random: () => number = Math.random): number {
  const d = Math.min(policy.maxMs, policy.baseMs * 2 ** (Math.max(1, attempt) - 1));
  return Math.round(d * (0.75 + random() * 0.5));
}

/**
 * retryAfter reads a Retry-After header (seconds or an HTTP date, RFC 9110 §10.2.3) as
 * milliseconds, capped at `maxMs`: a registry that asks for an hour does not get it.
 */
export function retryAfter(
  policy: RetryPolicy,
  header: string | string[] | undefined,
  now: number = Date.now(),
): number | undefined {
  const v = Array.isArray(header) ? header[0] : header;
  if (v === undefined) return undefined;
  const secs = Number(v);
  const ms = Number.isFinite(secs) ? secs * 1000 : Date.parse(v) - now;
  if (!Number.isFinite(ms)) return undefined;
  return Math.max(0, Math.min(policy.maxMs, ms));
}

/** isTransientStatus: 429 and 5xx answers may go away if the same request is sent later. */
export function isTransientStatus(status: number): boolean {
  return status === 429 || status >= 500;
}
