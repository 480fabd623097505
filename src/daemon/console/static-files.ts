import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * WEB_ROOT is the built web console (`npm run build:console` writes it to dist/web/): four
 * levels up from dist/src/daemon/console/ is dist/.
 */
export const WEB_ROOT = fileURLToPath(new URL("../../../web/", import.meta.url));

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".json": "application/json",
  ".map": "application/json",
};

/**
 * SECURITY_HEADERS keep the console to itself: scripts, styles and connections from its own
 * origin only (xterm.js sets some styles inline), no framing (clickjacking), no referrer.
 */
export const SECURITY_HEADERS: Record<string, string> = {
  "content-security-policy":
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
};

/** isStaticPath tells whether a path is the console's page (`/`) or one of its files (`/ui/…`). */
export function isStaticPath(path: string): boolean {
  return path === "/" || path === "/index.html" || path.startsWith("/ui/");
}

/**
 * serveStatic answers GET/HEAD for the console's files from `root`: `/` is index.html, and
 * `/ui/NAME` a file of the flat build folder (a name of letters, digits, `.`, `-`, `_` only, so
 * no path can leave it). The files hold no secret: they are served without the token, which
 * the page asks for before it calls the API.
 */
export async function serveStatic(req: IncomingMessage, res: ServerResponse, root = WEB_ROOT): Promise<void> {
  const path = new URL(req.url ?? "/", "http://localhost").pathname;
  const name = path === "/" || path === "/index.html" ? "index.html" : path.slice("/ui/".length);
  if (req.method !== "GET" && req.method !== "HEAD")
    return plain(res, 405, "method not allowed", { allow: "GET, HEAD" });
  if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(name)) return plain(res, 404, `${path}: no such file`);
  let body: Buffer;
  try {
    body = await readFile(join(root, name));
  } catch {
    return plain(
      res,
      404,
      name === "index.html"
        ? `the web console is not built (${root}): run npm run build`
        : `${path}: no such file`,
    );
  }
  res.writeHead(200, {
    ...SECURITY_HEADERS,
    "content-type": TYPES[extname(name)] ?? "application/octet-stream",
    "content-length": body.length,
    "cache-control": "no-cache",
  });
  res.end(req.method === "HEAD" ? undefined : body);
}

function plain(
  res: ServerResponse,
  status: number,
  text: string,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { ...SECURITY_HEADERS, ...headers, "content-type": "text/plain; charset=utf-8" });
  res.end(text + "\n");
}
