import { readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Digest } from "../core/digest.js";
import { Annotation } from "../core/media-types.js";
import type { ImageIndex, ImageManifest } from "../core/oci.js";

/** GcResult reports what `gc` removed. */
export interface GcResult {
  blobsRemoved: number;
  bytesFreed: number;
  manifestsDropped: number;
}

/** GcTarget is what garbage collection needs of a store (the Store, without a cycle of imports). */
export interface GcTarget {
  readonly root: string;
  readonly ingestDir: string;
  readJson<T>(digest: Digest): Promise<T>;
  updateIndex(fn: (index: ImageIndex) => void | Promise<void>): Promise<void>;
}

/**
 * collectGarbage removes every blob of `store` that no named manifest reaches: named
 * manifests are roots, untagged entries are kept only while their subject is kept (a signature
 * of a removed artifact goes with it), and a manifest keeps its config, layers and child
 * manifests. Ingest files older than an hour belong to writers that died and go too. It runs
 * under the index lock, so no tag lands between marking and sweeping.
 */
export async function collectGarbage(store: GcTarget): Promise<GcResult> {
  const result: GcResult = { blobsRemoved: 0, bytesFreed: 0, manifestsDropped: 0 };
  await store.updateIndex(async (index) => {
    const manifests = new Map<string, ImageManifest | ImageIndex>();
    for (const d of index.manifests) {
      try {
        manifests.set(d.digest, await store.readJson(d.digest));
      } catch {
        // A manifest that is gone or corrupt keeps nothing alive; its entry is dropped below.
      }
    }
    const live = new Set<string>();
    for (const d of index.manifests) {
      const m = manifests.get(d.digest);
      if (m && (d.annotations?.[Annotation.RefName] || !m.subject)) live.add(d.digest);
    }
    // Referrers of live manifests are live, transitively (a signature of a snapshot …).
    for (let grew = true; grew;) {
      grew = false;
      for (const d of index.manifests) {
        const m = manifests.get(d.digest);
        if (m && !live.has(d.digest) && m.subject && live.has(m.subject.digest)) {
          live.add(d.digest);
          grew = true;
        }
      }
    }
    const before = index.manifests.length;
    index.manifests = index.manifests.filter((d) => live.has(d.digest));
    result.manifestsDropped = before - index.manifests.length;

    const reachable = new Set<string>();
    const visit = async (digest: Digest): Promise<void> => {
      if (reachable.has(digest)) return;
      reachable.add(digest);
      const m =
        manifests.get(digest) ??
        (await store.readJson<ImageManifest | ImageIndex>(digest).catch(() => undefined));
      if (!m) return;
      if ("config" in m && m.config) reachable.add(m.config.digest);
      if ("layers" in m) for (const l of m.layers ?? []) reachable.add(l.digest);
      if ("manifests" in m) for (const c of m.manifests ?? []) await visit(c.digest);
    };
    for (const d of live) await visit(d as Digest);

    const dir = join(store.root, "blobs", "sha256");
    for (const hex of await readdir(dir)) {
      if (reachable.has(`sha256:${hex}`)) continue;
      const p = join(dir, hex);
      const st = await stat(p);
      await rm(p, { force: true });
      result.blobsRemoved++;
      result.bytesFreed += st.size;
    }
    // Ingest files older than an hour belong to writers that died.
    for (const f of await readdir(store.ingestDir)) {
      const p = join(store.ingestDir, f);
      const st = await stat(p).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs > 3600_000) {
        await rm(p, { force: true });
        result.bytesFreed += st.size;
      }
    }
  });
  return result;
}
