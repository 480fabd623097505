import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import { defaultSnapshotCache, pruneSnapshotCaches } from "../../src/artifact/prepare.js";
import { tempDir } from "../helpers.js";

test("pruneSnapshotCaches frees preloads of removed blobs and of removed stores, and keeps the rest", async (t) => {
  const dir = await tempDir(t);
  const live = await Store.open(join(dir, "live"));
  const gone = await Store.open(join(dir, "gone"));
  const kept = await live.putBlob("a ramsnap that is still here");
  const seed = async (s: Store, hex: string) => {
    const cache = defaultSnapshotCache(s);
    await mkdir(join(cache, hex), { recursive: true });
    await writeFile(join(cache, "store-path"), s.root);
    await writeFile(join(cache, hex, "memory"), Buffer.alloc(1 << 16, 1));
    t.after(() => rm(cache, { recursive: true, force: true }));
    return join(cache, hex);
  };
  const keep = await seed(live, kept.digest.slice(7));
  const stale = await seed(live, "f".repeat(64));
  const orphan = await seed(gone, "e".repeat(64));
  assert.notEqual(defaultSnapshotCache(live), defaultSnapshotCache(gone), "each store has its own cache");
  await rm(gone.root, { recursive: true });
  const freed = await pruneSnapshotCaches(live);
  assert.ok(freed >= 2 * (1 << 16), `freed ${freed} bytes`);
  assert.ok(existsSync(keep), "a preload whose blob is in the store stays");
  assert.ok(!existsSync(stale), "a preload whose blob is gone goes");
  assert.ok(!existsSync(orphan), "the cache of a removed store goes");
});
