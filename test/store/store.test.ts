import { test } from "node:test";
import assert from "node:assert/strict";
import { readdir, readFile, writeFile, chmod } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { Store } from "../../src/store/store.js";
import { sha256 } from "../../src/core/digest.js";
import { MediaType } from "../../src/core/media-types.js";
import type { ImageManifest } from "../../src/core/oci.js";
import { ROOT, exec, spawn, tempDir } from "../helpers.js";

async function smallArtifact(
  store: Store,
  payload: string,
  subject?: { digest: `sha256:${string}`; size: number; mediaType: string },
) {
  const layer = await store.putBlob(payload);
  const config = await store.putBlob(JSON.stringify({ payload }));
  const m: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType: "application/vnd.example+json",
    config: { mediaType: "application/vnd.example+json", ...config },
    layers: [{ mediaType: "application/octet-stream", ...layer }],
  };
  if (subject) m.subject = subject;
  return { desc: await store.putManifest(m), layer, config };
}

test("a new store is a valid OCI image layout", async (t) => {
  const dir = await tempDir(t);
  const store = await Store.open(join(dir, "s"));
  assert.deepEqual(JSON.parse(await readFile(join(store.root, "oci-layout"), "utf8")), {
    imageLayoutVersion: "1.0.0",
  });
  const { desc } = await smallArtifact(store, "hello");
  await store.tag(desc, "example/a:1");
  await exec("oci-image-tool", ["validate", "--type", "imageIndex", join(store.root, "index.json")]);
  await exec("oci-image-tool", ["validate", "--type", "manifest", store.blobPath(desc.digest)]);
});

test("ingest: success, then a bad digest leaves nothing under blobs/ or ingest/", async (t) => {
  const store = await Store.open(join(await tempDir(t), "s"));
  const ok = await store.ingest(Readable.from([Buffer.from("abc")]), { digest: sha256("abc"), size: 3 });
  assert.equal(ok.digest, sha256("abc"));
  assert.equal((await readFile(store.blobPath(ok.digest))).toString(), "abc");
  await assert.rejects(
    store.ingest(Readable.from([Buffer.from("abd")]), { digest: sha256("xyz") }),
    /digest mismatch after 3 bytes/,
  );
  assert.deepEqual((await readdir(join(store.root, "blobs/sha256"))).sort(), [ok.digest.slice(7)]);
  assert.deepEqual(await readdir(join(store.workDir, "ingest")), []);
  assert.equal(await store.blobSize(sha256("abd")), undefined);
});

test("ingest: a stream that dies half-way leaves no partial blob", async (t) => {
  const store = await Store.open(join(await tempDir(t), "s"));
  const dying = new Readable({
    read() {
      this.push(Buffer.alloc(1024, 1));
      this.destroy(new Error("connection reset"));
    },
  });
  await assert.rejects(store.ingest(dying), /connection reset/);
  assert.deepEqual(await readdir(join(store.root, "blobs/sha256")), []);
  assert.deepEqual(await readdir(join(store.workDir, "ingest")), []);
});

test("reads are verified: a blob corrupted on disk is refused", async (t) => {
  const store = await Store.open(join(await tempDir(t), "s"));
  const { digest } = await store.putBlob("precious");
  const p = store.blobPath(digest);
  await chmod(p, 0o644);
  await writeFile(p, "precioUs");
  await assert.rejects(
    store.readBlob(digest),
    (e: any) => e.code === "STORE_CORRUPT" && e.message.includes(digest),
  );
  const s = await store.fetch({ digest, size: 8 });
  await assert.rejects(async () => {
    for await (const _ of s) void _;
  }, /digest mismatch/);
});

test("tag, resolve, untag; not found names the reference", async (t) => {
  const store = await Store.open(join(await tempDir(t), "s"));
  const { desc } = await smallArtifact(store, "one");
  await store.tag(desc, "example/a:1");
  await store.tag(desc, "127.0.0.1:5000/x/y:2");
  assert.equal((await store.resolve("example/a:1")).digest, desc.digest);
  assert.equal((await store.resolve("docker.io/example/a:1")).digest, desc.digest);
  assert.equal((await store.resolve(`example/a@${desc.digest}`)).digest, desc.digest);
  const names = (await store.entries()).map((e) => e.reference).sort();
  assert.deepEqual(names, ["127.0.0.1:5000/x/y:2", "docker.io/example/a:1"]);
  await store.untag("example/a:1");
  await assert.rejects(
    store.resolve("example/a:1"),
    (e: any) => e.code === "NOT_FOUND" && /example\/a:1/.test(e.message),
  );
  await assert.rejects(store.untag("nope:1"), /not in the store/);
});

test("concurrent: two processes tagging at once lose nothing", async (t) => {
  const store = await Store.open(join(await tempDir(t), "s"));
  const { desc } = await smallArtifact(store, "shared");
  const worker = (prefix: string) =>
    new Promise<void>((resolve, reject) => {
      const code = `
        const { Store } = await import(${JSON.stringify(join(ROOT, "dist/src/store/store.js"))});
        const s = await Store.open(${JSON.stringify(store.root)});
        const d = ${JSON.stringify(desc)};
        for (let i = 0; i < 40; i++) await s.tag(d, "example/${prefix}:" + i);`;
      const p = spawn(process.execPath, ["--input-type=module", "-e", code], {
        stdio: ["ignore", "inherit", "inherit"],
      });
      p.on("exit", (c) => (c === 0 ? resolve() : reject(new Error(`worker ${prefix} exited ${c}`))));
    });
  await Promise.all([worker("a"), worker("b")]);
  const names = (await store.entries()).map((e) => e.reference);
  assert.equal(names.length, 80, `want 80 names, got ${names.length}`);
  assert.equal(new Set(names).size, 80);
});

test("referrers and gc: unreachable blobs go, referrers stay with their subject", async (t) => {
  const store = await Store.open(join(await tempDir(t), "s"));
  const a = await smallArtifact(store, "artifact A");
  await store.tag(a.desc, "example/a:1");
  const sig = await smallArtifact(store, "signature of A", a.desc);
  await store.addUntagged(sig.desc);
  const b = await smallArtifact(store, "artifact B");
  await store.tag(b.desc, "example/b:1");
  const orphan = await store.putBlob("nobody points at me");

  const refs = await store.referrers(a.desc);
  assert.deepEqual(
    refs.map((r) => r.digest),
    [sig.desc.digest],
  );
  assert.deepEqual(await store.referrers(a.desc, "application/other"), []);

  let r = await store.gc();
  assert.equal(r.blobsRemoved, 1);
  assert.equal(r.bytesFreed, "nobody points at me".length);
  assert.equal(await store.blobSize(orphan.digest), undefined);
  assert.ok(await store.exists(sig.layer), "a referrer of a named artifact is kept");

  await store.untag("example/a:1");
  r = await store.gc();
  assert.equal(r.manifestsDropped, 1, "the signature goes with its subject");
  for (const d of [a.desc, a.layer, sig.desc, sig.layer]) assert.equal(await store.exists(d), false);
  assert.ok(await store.exists(b.layer));
  assert.ok(await store.exists(b.config));
});
