import { test } from "node:test";
import assert from "node:assert/strict";
import { request, type IncomingMessage, type ServerResponse } from "node:http";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import { execFile } from "node:child_process";
import { OVM, ovm, type RunResult } from "../helpers.js";
import { setup, type Setup } from "../registry/proxied-artifact.js";

// Registries that lie: the real registry behind the fault proxy, which answers chosen
// requests itself. Each pull fails with a clear error in bounded time, and the store keeps no
// name, no blob of what was refused and no temp file.

const env = (s: Setup) => ({ DOCKER_CONFIG: join(s.dir, "docker") });

/** upstream fetches what the real registry answers to `req`, whole. */
function upstream(
  req: IncomingMessage,
  port: number,
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const up = request(
      { host: "127.0.0.1", port, method: req.method, path: req.url, headers: req.headers },
      (ur) => {
        const chunks: Buffer[] = [];
        ur.on("data", (c: Buffer) => chunks.push(c));
        ur.on("end", () =>
          resolve({ status: ur.statusCode ?? 502, headers: ur.headers, body: Buffer.concat(chunks) }),
        );
      },
    );
    up.on("error", reject);
    up.end();
  });
}

/** endless sends a 200 with a body that never ends (up to 512 MiB, so the loop is bounded), until the client goes. */
function endless(contentType: string) {
  return (req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    res.writeHead(200, { "content-type": contentType, "docker-content-digest": "sha256:" + "0".repeat(64) });
    const chunk = Buffer.alloc(64 << 10, 0x7b);
    let sent = 0;
    const pump = () => {
      while (!res.destroyed && sent < 512 << 20) {
        sent += chunk.length;
        if (!res.write(chunk)) return void res.once("drain", pump);
      }
      res.end();
    };
    res.on("close", () => (sent = Infinity));
    pump();
  };
}

/** pull runs `ovm pull` through the proxy; one that has not ended after 90 s is killed and fails the test as a hang. */
async function pull(s: Setup, dst: string): Promise<RunResult & { ms: number }> {
  const t0 = Date.now();
  const r = await new Promise<RunResult>((resolve) =>
    execFile(
      process.execPath,
      [OVM, "--json", "--store", dst, "pull", s.ref],
      { env: { ...process.env, ...env(s) }, timeout: 90_000, killSignal: "SIGKILL" },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout, stderr }),
    ),
  );
  assert.notEqual(r.code, -1, `ovm pull hung (killed after ${Date.now() - t0} ms): ${r.stderr}`);
  return { ...r, ms: Date.now() - t0 };
}

async function assertNothingKept(dst: string, what: string): Promise<void> {
  const store = await Store.open(dst);
  assert.deepEqual(
    (await store.entries()).filter((e) => e.reference),
    [],
    `${what}: no name`,
  );
  assert.deepEqual(await readdir(join(dst, ".ovms", "ingest")), [], `${what}: no temp file`);
}

test(
  "a Content-Length shorter than the content, on a blob and on the manifest: refused, nothing kept",
  { timeout: 300_000 },
  async (t) => {
    const s = await setup(t, 1);
    const faults: [string, (m: string, p: string) => boolean, number][] = [
      ["blob, length - 1000", (m, p) => m === "GET" && p.endsWith(`/blobs/${s.base}`), -1000],
      ["manifest, length - 10", (m, p) => m === "GET" && p.includes("/manifests/1"), -10],
    ];
    for (const [what, match, delta] of faults) {
      s.proxy.reset();
      s.proxy.answer(match, (req, res, port) => {
        void upstream(req, port).then((u) => {
          res.writeHead(u.status, { ...u.headers, "content-length": String(u.body.length + delta) });
          res.end(delta > 0 ? u.body : u.body.subarray(0, u.body.length + delta));
          // A longer promise than the body: the connection closes where the body stops.
          if (delta > 0) setImmediate(() => res.socket?.destroy());
        });
      });
      const dst = join(s.dir, `dst-${what.replace(/\W+/g, "-")}`);
      const r = await pull(s, dst);
      assert.equal(r.code, 1, `${what}: ${r.stderr}`);
      const err = JSON.parse(r.stderr).error;
      assert.ok(
        [
          "DIGEST_MISMATCH",
          "CONNECTION_LOST",
          "MANIFEST_INVALID",
          "REGISTRY_ERROR",
          "MANIFEST_UNKNOWN",
        ].includes(err.code),
        `${what}: ${r.stderr}`,
      );
      assert.ok(err.message.length > 20, what);
      await assertNothingKept(dst, what);
      if (what.startsWith("blob"))
        assert.equal(await (await Store.open(dst)).exists({ digest: s.base as `sha256:${string}` }), false);
    }
  },
);

test(
  "an endless blob body and an endless or oversized manifest: the pull stops at the declared size or the manifest limit",
  { timeout: 300_000 },
  async (t) => {
    const s = await setup(t, 1);
    s.proxy.answer(
      (m, p) => m === "GET" && p.endsWith(`/blobs/${s.base}`),
      endless("application/octet-stream"),
    );
    let dst = join(s.dir, "dst-blob");
    let r = await pull(s, dst);
    assert.equal(r.code, 1, r.stderr);
    assert.match(JSON.parse(r.stderr).error.message, new RegExp(`${s.base}`));
    await assertNothingKept(dst, "endless blob");

    s.proxy.reset();
    s.proxy.answer(
      (m, p) => m === "GET" && p.includes("/manifests/1"),
      endless("application/vnd.oci.image.manifest.v1+json"),
    );
    dst = join(s.dir, "dst-manifest");
    r = await pull(s, dst);
    assert.equal(r.code, 1, r.stderr);
    assert.match(JSON.parse(r.stderr).error.message, /larger than 4194304 bytes/);
    await assertNothingKept(dst, "endless manifest");

    s.proxy.reset();
    const big = Buffer.from(JSON.stringify({ schemaVersion: 2, pad: "x".repeat(5 << 20) }));
    s.proxy.answer(
      (m, p) => p.includes("/manifests/1") && (m === "GET" || m === "HEAD"),
      (req, res) => {
        req.resume();
        res.writeHead(200, {
          "content-type": "application/vnd.oci.image.manifest.v1+json",
          "content-length": big.length,
        });
        res.end(req.method === "HEAD" ? undefined : big);
      },
    );
    dst = join(s.dir, "dst-big");
    r = await pull(s, dst);
    assert.equal(r.code, 1, r.stderr);
    assert.match(JSON.parse(r.stderr).error.message, /larger than 4194304 bytes/);
    await assertNothingKept(dst, "oversized manifest");
  },
);

test(
  "a redirect loop on a blob and on the manifest ends with an error after 10 hops",
  { timeout: 300_000 },
  async (t) => {
    const s = await setup(t, 1);
    for (const [what, match] of [
      ["blob", (m: string, p: string) => m === "GET" && p.endsWith(`/blobs/${s.base}`)],
      ["manifest", (m: string, p: string) => m === "GET" && p.includes("/manifests/1")],
    ] as const) {
      s.proxy.reset();
      s.proxy.answer(match, (req, res) => {
        req.resume();
        res.writeHead(307, { location: req.url!, "content-length": "0" });
        res.end();
      });
      const dst = join(s.dir, `dst-${what}`);
      const r = await pull(s, dst);
      assert.equal(r.code, 1, `${what}: ${r.stderr}`);
      assert.match(JSON.parse(r.stderr).error.message, /redirect/i, what);
      const hops = s.proxy.requests.filter((q) => match(q.method, q.path)).length;
      assert.ok(hops >= 10 && hops <= 40, `${what}: ${hops} requests, bounded`);
      await assertNothingKept(dst, `${what} redirect loop`);
    }
  },
);

test("references with path traversal are refused before anything is asked of a registry or written", async (t) => {
  const s = await setup(t, 1);
  for (const ref of [
    `${s.proxy.host}/../../etc/vm:1`,
    `${s.proxy.host}/test/../vm:1`,
    `${s.proxy.host}/test/vm:../../x`,
    `${s.proxy.host}/%2e%2e/vm:1`,
  ]) {
    s.proxy.reset();
    const dst = join(s.dir, "dst-traversal");
    const r = await ovm(["--json", "--store", dst, "pull", ref], env(s));
    assert.equal(r.code, 2, `${ref}: ${r.stderr}`);
    assert.equal(JSON.parse(r.stderr).error.code, "INVALID_REFERENCE");
    assert.equal(s.proxy.requests.length, 0, `${ref}: no request reached the registry`);
  }
});
