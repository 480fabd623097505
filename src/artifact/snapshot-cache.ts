import { existsSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { readdir, readFile, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { sha256, type Digest } from "../core/digest.js";
import type { Store } from "../store/store.js";

/** SNAPSHOT_CACHE_ROOT holds preloaded snapshots on tmpfs, one folder per store. */
export const SNAPSHOT_CACHE_ROOT = "/dev/shm/ovms-snapshots";

/** DEFAULT_SNAPSHOT_CACHE_BYTES caps a store's preloaded snapshots unless ovmd is told otherwise (`--snapshot-cache`). */
export const DEFAULT_SNAPSHOT_CACHE_BYTES = 2 * 1024 ** 3;

/** USED_FILE is touched in a preload's folder each time a start uses it: its mtime is "last used". */
export const USED_FILE = "last-used";

/** CAP_FILE records, in a store's cache folder, the cap its daemon keeps it under (for `ovm system df`). */
const CAP_FILE = "cap-bytes";

/**
 * defaultSnapshotCache is where a store's preloaded snapshot memory lives: a folder of its
 * own on tmpfs (named after the store's path, which it records so `pruneSnapshotCaches` can
 * drop it once the store is gone), or inside the store when there is no tmpfs.
 */
export function defaultSnapshotCache(store: Store): string {
  if (!existsSync("/dev/shm")) return join(store.workDir, "snapshots");
  return join(SNAPSHOT_CACHE_ROOT, sha256(resolve(store.root)).slice(7, 23));
}

/** Preload is one preloaded RAM snapshot in a store's cache. */
export interface Preload {
  /** digest of the ramsnap blob it was decompressed from. */
  digest: Digest;
  dir: string;
  /** bytes it takes on tmpfs (allocated blocks: the memory file is sparse). */
  bytes: number;
  /** lastUsed is when a start last used it (or when it was made). */
  lastUsed: Date;
}

/** markUsed records that a start uses a preload now (fire and forget: never on a restore's critical path). */
export function markUsed(dir: string): void {
  const now = new Date();
  void utimes(join(dir, USED_FILE), now, now).catch(() => undefined);
}

/** listPreloads lists the complete preloads of a cache folder, least recently used first. */
export async function listPreloads(cacheDir: string): Promise<Preload[]> {
  const out: Preload[] = [];
  for (const hex of await readdir(cacheDir).catch(() => [] as string[])) {
    if (!/^[a-f0-9]{64}$/.test(hex)) continue; // temp folders of preloads under way, store-path, the cap
    const dir = join(cacheDir, hex);
    const used =
      (await stat(join(dir, USED_FILE)).catch(() => undefined)) ??
      (await stat(join(dir, "complete")).catch(() => undefined));
    if (!used) continue;
    out.push({ digest: `sha256:${hex}`, dir, bytes: await du(dir), lastUsed: used.mtime });
  }
  return out.sort((a, b) => a.lastUsed.getTime() - b.lastUsed.getTime());
}

/**
 * evictPreloads keeps a cache folder under `capBytes`: least recently used preloads go first,
 * each through `evict`, which removes it (removePreload) and says so, or keeps it and says
 * that (a pinned one: a ramsnap digest that an instance, a warm-pool process or a start under
 * way maps or is about to). Returns what was removed. `pinnedBy` makes an `evict` for a fixed set.
 *
 * Removing a preload that a running restored instance maps would be safe on Linux (the
 * instance's copy-on-write mapping keeps the file's pages until it unmaps them; the name is
 * all that goes, as test/daemon/snapshot-cache.test.ts checks), but a warm-pool refill or the
 * next restore needs the file, and re-preloading costs seconds: so pinned ones stay, even over
 * the cap.
 */
export async function evictPreloads(
  cacheDir: string,
  capBytes: number,
  evict: (p: Preload) => Promise<boolean>,
): Promise<Preload[]> {
  const all = await listPreloads(cacheDir);
  let total = all.reduce((n, p) => n + p.bytes, 0);
  const evicted: Preload[] = [];
  for (const p of all) {
    if (total <= capBytes) break;
    if (!(await evict(p))) continue;
    total -= p.bytes;
    evicted.push(p);
  }
  return evicted;
}

/** pinnedBy evicts every preload but those whose digest is in `pinned`. */
export function pinnedBy(pinned: ReadonlySet<string>): (p: Preload) => Promise<boolean> {
  return async (p) => {
    if (pinned.has(p.digest)) return false;
    await removePreload(p.dir);
    return true;
  };
}

/**
 * removePreload takes a preload out of its cache: first renamed aside, in one step, so that
 * from then on a start finds no preload (its prepare makes a new one) rather than one losing
 * its files under it; then removed.
 */
export async function removePreload(dir: string): Promise<void> {
  const aside = join(dirname(dir), `.evicted-${basename(dir)}-${randomUUID().slice(0, 8)}`);
  try {
    await rename(dir, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw e;
  }
  await rm(aside, { recursive: true, force: true });
}

/** recordCap writes the cap a daemon keeps a cache folder under, for `ovm system df`. */
export async function recordCap(cacheDir: string, capBytes: number): Promise<void> {
  if (existsSync(cacheDir)) await writeFile(join(cacheDir, CAP_FILE), `${capBytes}\n`);
}

/** recordedCap reads the cap a daemon recorded for a cache folder, if one did. */
export async function recordedCap(cacheDir: string): Promise<number | undefined> {
  const text = (await readFile(join(cacheDir, CAP_FILE), "utf8").catch(() => "")).trim();
  const n = Number(text);
  return text && Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/**
 * pruneSnapshotCaches frees tmpfs: it removes the caches of stores that no longer exist and,
 * for `store`, the preloads whose ramsnap blob is no longer in it. Another live store's
 * preloads are never touched. Returns the bytes freed.
 */
export async function pruneSnapshotCaches(store?: Store): Promise<number> {
  let freed = 0;
  const entries = await readdir(SNAPSHOT_CACHE_ROOT).catch(() => [] as string[]);
  for (const e of entries) {
    const dir = join(SNAPSHOT_CACHE_ROOT, e);
    const owner = await readFile(join(dir, "store-path"), "utf8").catch(() => undefined);
    if (owner === undefined || !existsSync(join(owner, "oci-layout"))) {
      freed += await du(dir);
      await rm(dir, { recursive: true, force: true });
      continue;
    }
    if (store && resolve(owner) === resolve(store.root)) {
      for (const hex of await readdir(dir)) {
        if (!/^[a-f0-9]{64}$/.test(hex) || existsSync(store.blobPath(`sha256:${hex}`))) continue;
        freed += await du(join(dir, hex));
        await rm(join(dir, hex), { recursive: true, force: true });
      }
    }
  }
  return freed;
}

/** du is the space a file or folder takes (allocated blocks), like `du -s`. */
export async function du(path: string): Promise<number> {
  const st = await stat(path).catch(() => undefined);
  if (!st) return 0;
  if (!st.isDirectory()) return st.blocks * 512;
  let n = 0;
  for (const f of await readdir(path)) n += await du(join(path, f));
  return n;
}
