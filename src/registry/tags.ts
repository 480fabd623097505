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
