import { test } from "node:test";
import assert from "node:assert/strict";
import { chmod, rm, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import { PrepareCache, prepareArtifact } from "../../src/artifact/prepare.js";
import { build } from "../../src/artifact/build.js";
import { loadArtifactByDescriptor } from "../../src/artifact/artifact.js";
import { tempDir } from "../helpers.js";

test("a PrepareCache hashes a blob once; another cache (or none) holds nothing of it", async (t) => {
  const store = await Store.open(join(await tempDir(t), "store"));
  const blob = await store.putBlob("a kernel, say");
  const path = store.blobPath(blob.digest);
  const mine = new PrepareCache();
  // Whole seconds: utimes can set them back exactly after the rewrite below.
  const when = new Date("2024-01-02T03:04:05Z");
  await utimes(path, when, when);
  assert.equal(await mine.verifyBlob(store, blob.digest, blob.size), path);

  // Same size and mtime, other bytes: only a cache that never saw the blob hashes it again.
  await chmod(path, 0o644);
  await writeFile(path, "a kernel, SAY");
  await utimes(path, when, when);
  assert.equal((await stat(path)).mtimeMs, when.getTime());
  assert.equal(await mine.verifyBlob(store, blob.digest, blob.size), path, "remembered: not hashed again");
  await assert.rejects(new PrepareCache().verifyBlob(store, blob.digest, blob.size), (e: any) => {
    return e.code === "DIGEST_MISMATCH";
  });

  // A changed mtime is another content for every cache.
  await utimes(path, when, new Date(when.getTime() + 5000));
  await assert.rejects(
    mine.verifyBlob(store, blob.digest, blob.size),
    (e: any) => e.code === "DIGEST_MISMATCH",
  );
});

test("a missing blob is ARTIFACT_INCOMPLETE", async (t) => {
  const store = await Store.open(join(await tempDir(t), "store"));
  await assert.rejects(
    new PrepareCache().verifyBlob(store, `sha256:${"0".repeat(64)}`, 1),
    (e: any) => e.code === "ARTIFACT_INCOMPLETE",
  );
});

test("prepareArtifact recalls what it prepared only while its files are unchanged", async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, "vmlinuz"), "a kernel");
  await writeFile(join(dir, "initrd"), "an initrd");
  const store = await Store.open(join(dir, "store"));
  const built = await build(
    store,
    {
      name: "demo/vm",
      version: "1",
      kernel: { path: join(dir, "vmlinuz") },
      initrd: { path: join(dir, "initrd") },
    },
    "demo/vm:1",
  );
  const a = await loadArtifactByDescriptor(store, built.descriptor, "demo/vm:1");
  const cache = new PrepareCache();
  const first = await prepareArtifact(store, a, { cache });
  const again = await prepareArtifact(store, { ...a, reference: "other:name" }, { cache });
  assert.equal(again.disks, first.disks, "recalled (the same object), not prepared anew");
  assert.equal(again.reference, "other:name");

  // The initrd rewritten with other bytes (a new mtime): the recall is refused and the blob hashed.
  const initrd = store.blobPath(built.manifest.initrd!.ref as `sha256:${string}`);
  await chmod(initrd, 0o644);
  await writeFile(initrd, "an INITRD");
  await assert.rejects(prepareArtifact(store, a, { cache }), (e: any) => e.code === "DIGEST_MISMATCH");

  // Put back, then removed: missing, not recalled.
  await writeFile(initrd, "an initrd");
  assert.equal((await prepareArtifact(store, a, { cache })).initrdPath, initrd);
  await rm(initrd);
  await assert.rejects(prepareArtifact(store, a, { cache }), (e: any) => e.code === "ARTIFACT_INCOMPLETE");
});
