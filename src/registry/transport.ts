import type { Readable } from "node:stream";

/**
 * The registry transport: one request in, one response out. The client stacks layers that
 * each add one concern and wrap the next (see client.ts):
 *
 *   RetryTransport → RedirectTransport → AuthTransport → SchemeFallback → UndiciTransport
 *
 * so each is small and unit-testable with a fake inner transport.
 */

/** Method is an HTTP method the distribution spec uses. */
export type Method = "GET" | "HEAD" | "PUT" | "POST" | "PATCH" | "DELETE";

/** TransportRequest describes one registry request. */
export interface TransportRequest {
  method: Method;
  url: URL;
  /** scopes the request needs in a bearer token, e.g. `repository:demo/vm:pull`. */
  scopes: string[];
  headers?: Record<string, string>;
  body?: Buffer | string | Readable | null;
  /** ok lists the statuses returned to the caller; any other throws a RegistryError. */
  ok: number[];
  /**
   * retry allows sending the request again after a 5xx, a 429 or a dropped connection. Only
   * for requests whose repetition cannot apply twice: reads, PUT of a manifest (same bytes,
   * same name), DELETE, POST opening an upload session. Never for PATCH or a streamed body.
   * Default: GET and HEAD only.
   */
  retry?: boolean;
  /** context is prefixed to error messages, e.g. `blob sha256:…`. */
  context?: string;
  highWaterMark?: number;
  /** signal cancels the request, its body included. */
  signal?: AbortSignal;
}

/** SendOptions is the name TransportRequest had when the client was one `send` loop. */
export type SendOptions = TransportRequest;

/** ResponseBody is a response body stream that can also be drained or read as text (undici's). */
export type ResponseBody = Readable & { dump(): Promise<void>; text(): Promise<string> };

/** TransportResponse is one registry answer. */
export interface TransportResponse {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: ResponseBody;
  /** url is where the answer came from: the request's, after redirects and scheme fallback. */
  url: URL;
}

/** Transport sends one request and returns its response (which statuses throw is up to the layers). */
export interface Transport {
  send(req: TransportRequest): Promise<TransportResponse>;
}

/** isReplayable tells whether a request's body can be sent again (nothing, or bytes in memory). */
export function isReplayable(req: Pick<TransportRequest, "body">): boolean {
  return (
    req.body === undefined || req.body === null || typeof req.body === "string" || Buffer.isBuffer(req.body)
  );
}

/** mayRetry tells whether a request may be sent again after a transient failure. */
export function mayRetry(req: TransportRequest): boolean {
  return (req.retry ?? (req.method === "GET" || req.method === "HEAD")) && isReplayable(req);
}

/** readText reads a (small) error body, at most 64 KiB of it. */
export async function readText(res: Pick<TransportResponse, "body">, limit = 64 << 10): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of res.body) {
      const b = c as Buffer;
      if (n < limit) chunks.push(b.subarray(0, limit - n));
      n += b.length;
    }
  } catch {
    // A broken error body still leaves the status to report.
  }
  return Buffer.concat(chunks).toString("utf8");
}
