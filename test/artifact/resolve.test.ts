import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import { build } from "../../src/artifact/build.js";
import { resolveReference } from "../../src/artifact/resolve.js";
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
