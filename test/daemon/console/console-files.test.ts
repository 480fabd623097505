import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { mkdir, stat, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { latestBenchResults } from "../../../src/daemon/console/bench-results.js";
import { consoleHandler } from "../../../src/daemon/console/console-handler.js";
import { consoleToken } from "../../../src/daemon/console/http-token.js";
import { createLogger } from "../../../src/daemon/log.js";
import { serveOptions } from "../../../src/daemon/options.js";
import { tempDir } from "../../helpers.js";

// The --http listener's own parts (the browser test, test/console/, runs them end to end):
// the benchmark document, the token it makes, and what it serves with and without the token.

async function benchDir(t: Parameters<typeof tempDir>[0]): Promise<string> {
  const dir = join(await tempDir(t), "results");
  await mkdir(dir);
  const put = (name: string, body: unknown) =>
    writeFile(join(dir, name), typeof body === "string" ? body : JSON.stringify(body));
  await put("restore-2026-01-01T00-00-00.json", { results: [{ name: "old" }] });
  await put("restore-2026-02-01T00-00-00.json", { results: [{ name: "new" }] });
  await put("pull-2026-01-05T10-00-00.json", { results: [{ name: "ovm pull", mibps: 400 }] });
  await put("push-2026-03-01T00-00-00.json", "{ half-written");
  await put("notes.txt", "not a result");
  return dir;
}

test("latestBenchResults keeps the newest file of each kind, skips broken and foreign files; no folder, no results", async (t) => {
  const dir = await benchDir(t);
  const r = await latestBenchResults(dir);
  assert.equal(r.dir, dir);
  assert.deepEqual(Object.keys(r.latest).sort(), ["pull", "restore"]);
  assert.equal(r.latest.restore.file, "restore-2026-02-01T00-00-00.json");
  assert.deepEqual(r.latest.restore.result, { results: [{ name: "new" }] });
  assert.deepEqual((await latestBenchResults(join(dir, "missing"))).latest, {});
});

test("consoleToken: the given one; else one made once into http-token (0600) and read back after a restart", async (t) => {
  const dir = await tempDir(t);
  assert.deepEqual(await consoleToken(dir, "given"), { token: "given" });
  const made = await consoleToken(dir);
  assert.equal(made.file, join(dir, "http-token"));
  assert.match(made.token, /^[A-Za-z0-9_-]{32}$/);
  assert.equal((await stat(made.file!)).mode & 0o777, 0o600);
  assert.deepEqual(await consoleToken(dir), made);
});

test("the --http handler: page and files without the token, the benchmark document (--bench-results) and the API only with it", async (t) => {
  const web = await tempDir(t);
  await writeFile(join(web, "index.html"), "<!doctype html><title>console</title>");
  const bench = await benchDir(t);
  const opts = serveOptions({ http: "127.0.0.1:0", benchResults: bench });
  assert.equal(opts.http, "127.0.0.1:0");
  assert.equal(opts.benchResults, bench);
  const apiCalls: string[] = [];
  const api = async (req: IncomingMessage, res: ServerResponse) => {
    apiCalls.push(req.url ?? "");
    res.writeHead(418).end();
  };
  const log = createLogger("error");
  const server = createServer(
    consoleHandler({ api, token: "T", log, webRoot: web, benchDir: opts.benchResults }),
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.after(() => server.close());
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const page = await fetch(`${base}/`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<title>console<\/title>/);
  assert.match(page.headers.get("content-security-policy") ?? "", /default-src 'self'/);
  assert.equal((await fetch(`${base}/ui/missing.js`)).status, 404);
  assert.equal((await fetch(`${base}/ui/..%2Findex.html`)).status, 404);
  assert.equal((await fetch(`${base}/`, { method: "POST" })).status, 405);

  const refused = await fetch(`${base}/ui-data/bench`);
  assert.equal(refused.status, 401);
  assert.equal(((await refused.json()) as { error: { code: string } }).error.code, "UNAUTHORIZED");
  assert.equal(
    (await fetch(`${base}/ui-data/bench`, { headers: { authorization: "Bearer t" } })).status,
    401,
  );
  const ok = await fetch(`${base}/ui-data/bench`, { headers: { authorization: "Bearer T" } });
  assert.equal(ok.status, 200);
  const body = (await ok.json()) as { dir: string; latest: Record<string, { file: string }> };
  assert.equal(body.dir, bench);
  assert.equal(body.latest.restore.file, "restore-2026-02-01T00-00-00.json");

  // Everything else is the runtime API's (which checks the token itself): no second API.
  assert.equal((await fetch(`${base}/instances?all=1`)).status, 418);
  assert.deepEqual(apiCalls, ["/instances?all=1"]);
});
