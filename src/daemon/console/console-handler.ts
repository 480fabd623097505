import type { IncomingMessage, ServerResponse } from "node:http";
import { toApiError } from "../errors.js";
import type { Logger } from "../log.js";
import { checkToken } from "./auth.js";
import { latestBenchResults } from "./bench-results.js";
import { SECURITY_HEADERS, isStaticPath, serveStatic } from "./static-files.js";

/** BENCH_PATH is where the console reads the newest benchmark results (token required, like the API). */
export const BENCH_PATH = "/ui-data/bench";

/**
 * consoleHandler is the request handler of the `--http` listener: the web console's page and
 * files (no token: they hold no secret), the newest benchmark results (token), and everything
 * else handed to the runtime API's handler (`api`, which checks the token itself). One port
 * serves the console and the API it calls: there is no second API.
 */
export function consoleHandler(opts: {
  api: (req: IncomingMessage, res: ServerResponse) => Promise<void>;
  token: string;
  log: Logger;
  webRoot?: string;
  benchDir?: string;
}) {
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    try {
      if (isStaticPath(path)) return await serveStatic(req, res, opts.webRoot);
      if (path === BENCH_PATH) {
        checkToken(req, opts.token);
        const text = JSON.stringify(await latestBenchResults(opts.benchDir)) + "\n";
        res.writeHead(200, {
          ...SECURITY_HEADERS,
          "content-type": "application/json",
          "content-length": Buffer.byteLength(text),
          "cache-control": "no-store",
        });
        return void res.end(text);
      }
    } catch (e) {
      const { status, body } = toApiError(e);
      if (status >= 500) opts.log.error(`${req.method} ${path}: ${body.error.message}`);
      if (!res.headersSent) {
        res.writeHead(status, { ...SECURITY_HEADERS, "content-type": "application/json" });
        res.end(JSON.stringify(body) + "\n");
      } else res.destroy();
      return;
    }
    return opts.api(req, res);
  };
}
