import { RegistryError, redactUrl } from "./registry-error.js";
import type { Transport, TransportRequest, TransportResponse } from "./transport.js";

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** MAX_REDIRECTS bounds a chain of redirects (a loop is an error, not a hang). */
const MAX_REDIRECTS = 10;

/**
 * RedirectTransport follows the redirects of reads (GET, HEAD): registries send blob
 * downloads to a storage backend or a CDN. Each hop goes through the layers below again, so
 * the auth layer decides per hop whether credentials may go there (only to the registry).
 * Writes are never redirected: their answer is returned as it is.
 */
export class RedirectTransport implements Transport {
  constructor(private readonly inner: Transport) {}

  async send(req: TransportRequest): Promise<TransportResponse> {
    const read = req.method === "GET" || req.method === "HEAD";
    let hop = req;
    for (let redirects = 0; ; redirects++) {
      const res = await this.inner.send(hop);
      const location = res.headers.location;
      if (!read || !REDIRECTS.has(res.statusCode) || !location || req.ok.includes(res.statusCode)) return res;
      await res.body.dump();
      if (redirects >= MAX_REDIRECTS)
        throw new RegistryError(
          "REGISTRY_ERROR",
          `${req.method} "${redactUrl(req.url)}": too many redirects`,
        );
      hop = { ...hop, url: new URL(String(location), res.url) };
    }
  }
}
