import { sleep as abortableSleep } from "./cancel.js";
import { RegistryError, isNetworkFailure, responseError } from "./registry-error.js";
import { backoff, isTransientStatus, retryAfter, type RetryPolicy } from "./retry-policy.js";
import {
  mayRetry,
  readText,
  type Transport,
  type TransportRequest,
  type TransportResponse,
} from "./transport.js";

/** RetryClock is how RetryTransport waits and draws jitter (tests give a fake one). */
export interface RetryClock {
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  random(): number;
}

const realClock: RetryClock = { sleep: abortableSleep, random: Math.random };

/**
 * RetryTransport is the outermost layer: it returns an answer whose status the request
 * accepts (`ok`), sends the request again after a transient failure — a dropped or refused
 * connection, a 429 or a 5xx — when the request allows it (see TransportRequest.retry),
 * waiting as the RetryPolicy says (or as long as Retry-After asks, capped), and turns any
 * other answer into the RegistryError that describes it, with how many attempts were made.
 */
export class RetryTransport implements Transport {
  constructor(
    private readonly inner: Transport,
    readonly policy: RetryPolicy,
    private readonly clock: RetryClock = realClock,
  ) {}

  async send(req: TransportRequest): Promise<TransportResponse> {
    const retry = mayRetry(req);
    for (let attempt = 1; ; attempt++) {
      let res: TransportResponse;
      try {
        res = await this.inner.send(req);
      } catch (e) {
        const network = e instanceof RegistryError && isNetworkFailure(e.cause ?? e);
        if (retry && network && attempt < this.policy.attempts && !req.signal?.aborted) {
          await this.clock.sleep(backoff(this.policy, attempt, this.clock.random), req.signal);
          continue;
        }
        if (e instanceof RegistryError) e.attempts = attempt;
        throw e;
      }
      const status = res.statusCode;
      if (req.ok.includes(status)) return res;
      const transient = isTransientStatus(status);
      if (transient && retry && attempt < this.policy.attempts) {
        await res.body.dump();
        const wait =
          retryAfter(this.policy, res.headers["retry-after"]) ??
          backoff(this.policy, attempt, this.clock.random);
        await this.clock.sleep(wait, req.signal);
        continue;
      }
      const text = req.method === "HEAD" ? "" : await readText(res);
      const err = responseError(req.method, res.url, status, text, req.context);
      err.attempts = attempt;
      if (transient && attempt > 1) err.message += ` (after ${attempt} attempts)`;
      throw err;
    }
  }
}
