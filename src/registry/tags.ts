import { readAll } from "./manifest-bytes.js";
import type { TransportRequest, TransportResponse } from "./transport.js";

/**
 * parseNextLink reads the `Link: <url>; rel="next"` header a registry sends when a list
 * continues (distribution spec "Listing Tags", RFC 8288), resolved against the request URL.
 */
export function parseNextLink(header: string | string[] | undefined, base: URL): URL | undefined {
  const values = Array.isArray(header) ? header : header ? [header] : [];
  for (const v of values) {
    for (const part of v.split(/,(?=\s*<)/)) {
      const m = /^\s*<([^>]*)>\s*(.*)$/.exec(part);
      if (!m) continue;
      if (/(?:^|;)\s*rel\s*=\s*"?next"?\s*(?:;|$)/i.test(m[2])) return new URL(m[1], base);
    }
  }
  return undefined;
}

/** TagSource is the repository `listTags` reads: its URLs and its requests. */
export interface TagSource {
  /** reference is `registry/name`, for error messages. */
  readonly reference: string;
  url(path: string): URL;
  pullScopes(): string[];
  send(req: TransportRequest): Promise<TransportResponse>;
}

/**
 * listTags lists every tag of a repository, following `Link: <…>; rel="next"` pages
 * (distribution spec "Listing Tags"); `pageSize` asks for pages of `n` tags.
 */
export async function listTags(
  repo: TagSource,
  opts: { pageSize?: number; signal?: AbortSignal } = {},
): Promise<string[]> {
  let url: URL | undefined = repo.url("tags/list");
  if (opts.pageSize) url.searchParams.set("n", String(opts.pageSize));
  const out: string[] = [];
  for (let page = 0; url && page < 100_000; page++) {
    const res = await repo.send({
      method: "GET",
      url,
      scopes: repo.pullScopes(),
      ok: [200],
      context: `tags of ${repo.reference}`,
      signal: opts.signal,
    });
    const body = JSON.parse((await readAll(res.body, 64 << 20)).toString("utf8")) as {
      tags?: string[] | null;
    };
    out.push(...(body.tags ?? []));
    url = parseNextLink(res.headers.link, url);
  }
  return out;
}
