import { test } from "node:test";
import assert from "node:assert/strict";
import { chmod, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import { build } from "../../src/artifact/build.js";
import { ArtifactMemo, resolveReference } from "../../src/artifact/resolve.js";
import { tempDir } from "../helpers.js";

async function storeWithDemo(t: Parameters<typeof tempDir>[0]) {
  const dir = await tempDir(t);
  await writeFile(join(dir, "vmlinuz"), "a kernel");
  const store = await Store.open(join(dir, "s"));
  const r = await build(
    store,
    { name: "demo/vm", version: "1", kernel: { path: join(dir, "vmlinuz") } },
    "demo/vm:1",
  );
  return { store, r };
}

test("resolveReference finds what the store has by tag or digest, without fetching", async (t) => {
  const { store, r } = await storeWithDemo(t);
  const never = async () => assert.fail("nothing is fetched");
  for (const ref of [
    "demo/vm:1",
    "docker.io/demo/vm:1",
    r.descriptor.digest,
    `demo/vm@${r.descriptor.digest}`,
  ]) {
    const a = await resolveReference(store, ref, never);
    assert.equal(a.descriptor.digest, r.descriptor.digest, ref);
    assert.equal(a.reference, ref);
  }
});

test("resolveReference fetches what is missing, once, and says when that did not bring it", async (t) => {
  const { store, r } = await storeWithDemo(t);
  const asked: string[] = [];
  const a = await resolveReference(store, "example.com/demo/vm:2", async (s, ref) => {
    asked.push(ref);
    await s.tag(r.descriptor, ref);
  });
  assert.deepEqual(asked, ["example.com/demo/vm:2"]);
  assert.equal(a.descriptor.digest, r.descriptor.digest);
  await assert.rejects(
    resolveReference(store, "example.com/demo/vm:3", async () => {}),
    { code: "ARTIFACT_NOT_FOUND", message: /not in the store after the pull/ },
  );
  await assert.rejects(
    resolveReference(store, "example.com/demo/vm:4", async () => {
      throw Object.assign(new Error("registry down"), { code: "X" });
    }),
    /registry down/,
  );
});

test("resolveReference: a bare digest is never pulled, a malformed reference is refused first", async (t) => {
  const { store } = await storeWithDemo(t);
  const never = async () => assert.fail("nothing is fetched");
  await assert.rejects(resolveReference(store, `sha256:${"ab".repeat(32)}`, never), {
    code: "ARTIFACT_NOT_FOUND",
    message: /a bare digest cannot be pulled/,
  });
  await assert.rejects(resolveReference(store, "Demo/VM::1", never), { code: "INVALID_REFERENCE" });
});

test("an ArtifactMemo answers again only while the index and the blobs are what it read", async (t) => {
  const { store, r } = await storeWithDemo(t);
  const never = async () => assert.fail("nothing is fetched");
  const memo = new ArtifactMemo();
  const first = await resolveReference(store, "demo/vm:1", never, memo);
  const again = await resolveReference(store, "docker.io/demo/vm:1", never, memo);
  assert.equal(again.oci, first.oci, "the second answer is the remembered manifest");
  assert.equal(again.reference, "docker.io/demo/vm:1", "under the name asked this time");

  // The tag moves to another manifest: the index changed, the memo follows it.
  const dir = await tempDir(t);
  await writeFile(join(dir, "vmlinuz"), "another kernel");
  const two = await build(
    store,
    { name: "demo/vm", version: "2", kernel: { path: join(dir, "vmlinuz") } },
    "demo/vm:1",
  );
  const moved = await resolveReference(store, "demo/vm:1", never, memo);
  assert.equal(moved.descriptor.digest, two.descriptor.digest);
  assert.notEqual(moved.descriptor.digest, r.descriptor.digest);

  // A manifest blob that is no longer the file read (rewritten in place): read and checked again.
  const path = store.blobPath(two.descriptor.digest);
  await chmod(path, 0o644);
  await writeFile(path, (await readFile(path, "utf8")).replace("demo/vm", "demo/XX"));
  await assert.rejects(
    resolveReference(store, "demo/vm:1", never, memo),
    (e: any) => e.code === "STORE_CORRUPT",
  );
});
