import { OvmsError } from "../core/errors.js";
import type { Descriptor } from "../core/oci.js";
import { cancelled, sleep } from "./cancel.js";
import type { FastGetTarget } from "./fast-get.js";
import { RegistryError, isNetworkFailure, networkError, redactUrl } from "./registry-error.js";
import { backoff, type RetryPolicy } from "./retry-policy.js";
import type { Transport, TransportRequest } from "./transport.js";

/**
 * FastGet sends a GET straight into a target over plain HTTP (fast-get.ts), with the
 * Authorization the registry wants; it resolves false, before any byte, when it declines.
 */
export type FastGet = (req: TransportRequest, target: FastGetTarget) => Promise<boolean>;

/** SyncWriter takes a download synchronously, in order (Store.openIngest's BlobWriter). */
export interface SyncWriter {
  /** bytes is how many bytes it holds: where a resumed download goes on. */
  bytes: number;
  write(chunk: Uint8Array): void;
}

/** FetchIntoOptions tune fetchInto. */
export interface FetchIntoOptions {
  onBytes?(n: number): void;
  /** maxResumes bounds how many times a dropped download is picked up again (default 5). */
  maxResumes?: number;
  signal?: AbortSignal;
}

/** BlobSource is where fetchInto reads a blob: the registry's transport and fast path, and its URL. */
export interface BlobSource {
  transport: Transport;
  fastGet?: FastGet;
  retry: RetryPolicy;
  url: URL;
  scopes: string[];
}

/**
 * getInto sends a GET and hands its body to `target` chunk by chunk, synchronously: through
 * the fast path when there is one and it takes the request, otherwise through the transport.
 * A status `target` does not accept is an error like any other.
 */
export async function getInto(
  transport: Transport,
  fastGet: FastGet | undefined,
  req: TransportRequest,
  target: FastGetTarget,
): Promise<void> {
  const url = req.url;
  try {
    if (fastGet && (await fastGet(req, target))) return;
  } catch (e) {
    if (isNetworkFailure(e) && !(e instanceof RegistryError)) throw networkError(req.method, url, e, true);
    throw e;
  }
  const res = await transport.send(req);
  const flat: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers))
    if (v !== undefined) flat[k] = Array.isArray(v) ? v.join(", ") : v;
  if (!target.accept(res.statusCode, flat)) {
    await res.body.dump();
    throw new RegistryError(
      "REGISTRY_ERROR",
      `${req.method} "${redactUrl(url)}": unexpected ${res.statusCode} answer`,
      { method: req.method, url: redactUrl(url), status: res.statusCode },
    );
  }
  try {
    for await (const c of res.body) target.data(c as Buffer);
  } catch (e) {
    if (req.signal?.aborted) throw cancelled(req.context, req.signal);
    if (isNetworkFailure(e)) throw networkError(req.method, url, e, true);
    throw e;
  }
}

/**
 * fetchInto downloads a blob into a synchronous writer and resumes with
 * `Range: bytes=<writer.bytes>-` after a dropped connection, so the writer's running hash
 * covers the parts as one. The writer verifies; nothing is hashed here.
 */
export async function fetchInto(
  src: BlobSource,
  desc: Descriptor,
  writer: SyncWriter,
  opts: FetchIntoOptions = {},
): Promise<void> {
  const what = `blob ${desc.digest}`;
  const maxResumes = opts.maxResumes ?? 5;
  for (let resumes = 0; ;) {
    const offset = writer.bytes;
    const target = rangeTarget(what, desc.size, writer, opts.onBytes);
    try {
      await getInto(
        src.transport,
        src.fastGet,
        {
          method: "GET",
          url: src.url,
          scopes: src.scopes,
          headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
          ok: [200, 206],
          context: what,
          signal: opts.signal,
        },
        target,
      );
      if (writer.bytes >= desc.size) return;
      throw new RegistryError(
        "CONNECTION_LOST",
        `${what}: the body ended after ${writer.bytes} of ${desc.size} bytes`,
      );
    } catch (e) {
      // A request the transport already retried is not resumed again on top.
      const retried = e instanceof RegistryError && e.attempts > 1;
      if (isNetworkFailure(e) && !retried && resumes < maxResumes && !opts.signal?.aborted) {
        resumes++;
        await sleep(backoff(src.retry, resumes), opts.signal);
        continue;
      }
      throw e;
    }
  }
}

/**
 * rangeTarget accepts the answer to a GET from `writer.bytes`: a 206 from exactly there, or a
 * 200 whose first bytes (what the writer has) are skipped, and refuses bytes beyond the size.
 */
function rangeTarget(
  what: string,
  size: number,
  writer: SyncWriter,
  onBytes?: (n: number) => void,
): FastGetTarget {
  const offset = writer.bytes;
  let skip = 0;
  return {
    accept: (status, headers) => {
      if (offset === 0) return status === 200;
      if (status === 206) {
        const start = /^bytes (\d+)-/.exec(headers["content-range"] ?? "")?.[1];
        if (Number(start) !== offset) {
          throw new RegistryError(
            "REGISTRY_ERROR",
            `${what}: asked to resume at byte ${offset}, the registry answered Content-Range "${headers["content-range"] ?? ""}"`,
          );
        }
        return true;
      }
      // A registry that ignores Range sends it all again: skip what the writer has.
      skip = offset;
      return status === 200;
    },
    data: (view) => {
      let v = view;
      if (skip > 0) {
        const n = Math.min(skip, v.length);
        skip -= n;
        v = v.subarray(n);
        if (!v.length) return;
      }
      if (writer.bytes + v.length > size) {
        throw new OvmsError(
          "DIGEST_MISMATCH",
          `${what}: the registry sent more than the declared ${size} bytes`,
        );
      }
      writer.write(v);
      onBytes?.(v.length);
    },
  };
}
