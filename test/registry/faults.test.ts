import { test } from "node:test";
import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import { RegistryClient } from "../../src/registry/client.js";
import { ovm, ovmJson } from "../helpers.js";
import { setup, type Setup } from "./proxied-artifact.js";

const env = (s: Setup) => ({ DOCKER_CONFIG: join(s.dir, "docker") });

test("a flipped byte in a blob: the pull fails with a digest error naming the blob, and the store keeps no trace of it", async (t) => {
  const s = await setup(t);
  s.proxy.flipByte(s.base);
  const dst = join(s.dir, "dst");
  const r = await ovm(["--store", dst, "pull", s.ref], env(s));
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    new RegExp(
      `blob ${s.base}: digest mismatch after \\d+ bytes \\(got sha256:[a-f0-9]{64}, want ${s.base}\\)`,
    ),
  );
  const store = await Store.open(dst);
  assert.equal(
    await store.exists({ digest: s.base as `sha256:${string}` }),
    false,
    "the corrupt blob is not in the store",
  );
  assert.equal(await store.exists({ digest: s.digest as `sha256:${string}` }), false, "nor the manifest");
  assert.deepEqual(await store.entries(), [], "nor a name");
  assert.deepEqual(await readdir(join(dst, ".ovms", "ingest")), [], "nor a temp file");
  const json = await ovm(["--json", "--store", dst, "pull", s.ref], env(s));
  assert.equal(JSON.parse(json.stderr).error.code, "DIGEST_MISMATCH");
});

test("a connection cut in the middle of a blob: the pull resumes with Range and succeeds", async (t) => {
  const s = await setup(t);
  s.proxy.cutOnce(s.base, 2 << 20);
  const dst = join(s.dir, "dst");
  const pulled = await ovmJson(["--store", dst, "pull", s.ref], env(s));
  assert.equal(pulled.digest, s.digest);
  const gets = s.proxy.requests.filter((q) => q.method === "GET" && q.path.endsWith(`/blobs/${s.base}`));
  assert.equal(gets.length, 2, JSON.stringify(gets));
  assert.equal(gets[0].range, undefined);
  const from = Number(/^bytes=(\d+)-$/.exec(gets[1].range ?? "")?.[1]);
  assert.ok(from > 0 && from <= 2 << 20, `resumed from byte ${gets[1].range}`);
  assert.equal(gets[1].status, 206);
  const store = await Store.open(dst);
  assert.equal(
    (await store.readBlob(s.base as `sha256:${string}`)).length,
    s.manifest.layers.find((l) => l.digest === s.base)!.size,
  );
  const info = await ovmJson(["--store", dst, "inspect", s.ref], env(s));
  assert.equal(info.digest, s.digest);
});

test("429 and 503 a few times are retried (Retry-After honoured); when they persist the error says so", async (t) => {
  // 5 MiB: the base layer is fetched by a transfer worker, whose fast path hands a 503 to the general one.
  const s = await setup(t, 5);
  s.proxy.fail((m, p) => m === "GET" && p.includes("/manifests/"), 429, 2, { "retry-after": "0" });
  s.proxy.fail((m, p) => m === "GET" && p.endsWith(`/blobs/${s.base}`), 503, 2);
  const pulled = await ovmJson(["--store", join(s.dir, "dst"), "pull", s.ref], env(s));
  assert.equal(pulled.digest, s.digest);
  assert.deepEqual(
    s.proxy.requests
      .filter((q) => q.path.includes("/manifests/"))
      .map((q) => q.status)
      .slice(0, 3),
    [429, 429, 200],
  );
  assert.deepEqual(
    s.proxy.requests.filter((q) => q.path.endsWith(`/blobs/${s.base}`)).map((q) => q.status),
    [503, 503, 200],
  );

  s.proxy.reset();
  s.proxy.fail(() => true, 503, 1000);
  const started = Date.now();
  const r = await ovm(["--store", join(s.dir, "dst2"), "pull", s.ref], env(s));
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /GET "http:\/\/127\.0\.0\.1:\d+\/v2\/test\/vm\/manifests\/1": 503 UNAVAILABLE: service unavailable .*\(after 5 attempts\)/,
  );
  assert.equal(s.proxy.requests.length, 5);
  assert.ok(Date.now() - started < 15_000);

  s.proxy.reset();
  s.proxy.fail(() => true, 429, 1000, { "retry-after": "0" });
  const r2 = await ovm(["--store", join(s.dir, "dst3"), "pull", s.ref], env(s));
  assert.equal(r2.code, 1);
  assert.match(
    r2.stderr,
    /429 TOOMANYREQUESTS: slow down \(the registry is rate limiting requests\) \(after 5 attempts\)/,
  );
});

test("uploads: chunked PATCH above --chunk-size; a failed chunk starts the blob over from a new session, never re-sent into the old one", async (t) => {
  const s = await setup(t, 3);
  const target = `${s.proxy.host}/pushed/vm:1`;
  await s.src.tag(await s.src.resolve(`${s.reg.host}/test/vm:1`), target);
  // The second PATCH of the base layer fails once.
  let patches = 0;
  s.proxy.fail((m) => m === "PATCH" && ++patches === 2, 503, 1);
  const pushed = await ovmJson(["--store", s.src.root, "push", "--chunk-size", "1M", target], env(s));
  assert.equal(pushed.digest, s.digest);
  const patchLog = s.proxy.requests.filter((q) => q.method === "PATCH");
  assert.ok(patchLog.length >= 5, `chunks sent: ${patchLog.length}`);
  assert.equal(patchLog.filter((q) => q.status === 503).length, 1);
  const posts = s.proxy.requests.filter((q) => q.method === "POST").length;
  assert.equal(posts, 5, "one session per blob (config, kernel, base, diff) plus one to start the base over");
  assert.ok(
    s.proxy.requests.some((q) => q.method === "DELETE"),
    "the broken session was cancelled",
  );

  const back = await ovmJson(["--store", join(s.dir, "back"), "pull", target], env(s));
  assert.equal(back.digest, s.digest);
});

test("tags list: all pages followed through Link headers", async (t) => {
  const s = await setup(t, 1);
  const client = new RegistryClient({ credentials: async () => undefined });
  t.after(() => client.close());
  const repo = client.repository(`${s.reg.host}/test/vm`, { push: true });
  const desc = await repo.resolve("1");
  const want = ["1"];
  for (let i = 0; i < 7; i++) {
    await repo.tag(desc, `v${i}`);
    want.push(`v${i}`);
  }
  const all = await ovmJson(["tags", `${s.reg.host}/test/vm`]);
  assert.deepEqual(all.tags.sort(), want);
  const paged = await ovmJson(["tags", "--page-size", "3", `${s.proxy.host}/test/vm`]);
  assert.deepEqual(paged.tags, want);
  const pages = s.proxy.requests.filter((q) => q.path.includes("/tags/list"));
  assert.deepEqual(
    pages.map((q) => q.path),
    ["/v2/test/vm/tags/list?n=3", "/v2/test/vm/tags/list?n=3&last=v1", "/v2/test/vm/tags/list?n=3&last=v4"],
  );
});
