import { mkdir, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { MediaType } from "../core/media-types.js";
import type { Digest } from "../core/digest.js";
import type { ImageManifest } from "../core/oci.js";
import { formatSize } from "../core/size.js";
import type { Store } from "../store/store.js";
import {
  DEFAULT_SNAPSHOT_CACHE_BYTES,
  defaultSnapshotCache,
  evictPreloads,
  pruneSnapshotCaches,
  recordCap,
  removePreload,
  type Preload,
} from "../artifact/snapshot-cache.js";
import type { Runtime } from "../runtime/types.js";
import type { Logger } from "./log.js";

/** MAINTENANCE_MS is how often the daemon prunes orphaned caches and keeps its own under the cap. */
export const MAINTENANCE_MS = 5 * 60_000;

/** CacheKeeperOptions are the parts and settings of a CacheKeeper. */
export interface CacheKeeperOptions {
  store: Store;
  runtime: Runtime;
  log: Logger;
  /** pooled lists the manifest digests whose warm pool holds processes. */
  pooled: () => string[];
  /** capBytes caps the store's preloaded snapshots (default DEFAULT_SNAPSHOT_CACHE_BYTES). */
  capBytes?: number;
  /** everyMs is the maintenance period (default MAINTENANCE_MS). */
  everyMs?: number;
}

/**
 * CacheKeeper keeps the store's preloaded RAM snapshots (tmpfs, which is RAM) bounded: under
 * a cap, least recently used first, never a preload that a live instance, a warm-pool process
 * or a start under way needs (artifact/snapshot-cache evictPreloads); and it removes the caches
 * of stores that no longer exist. It runs at daemon start, after each restore and every few
 * minutes. Other live stores' preloads are never touched.
 */
export class CacheKeeper {
  readonly capBytes: number;
  readonly dir: string;
  /** ramsnap digests of starts under way (between resolving the artifact and the runtime's answer). */
  private readonly starting = new Map<string, number>();
  /** How many starts began so far: pins read before the last one began are stale. */
  private begun = 0;
  /** Removals under way, by ramsnap digest: a start of that snapshot waits for its end (begin). */
  private readonly evicting = new Map<string, Promise<void>>();
  /** Pins as last read (pinned), and the count of begun starts they saw. */
  private pins?: { begun: number; digests: Set<string> };
  /** The ramsnap digest of each snapshot artifact, by manifest digest (null: not a snapshot). */
  private readonly ramsnaps = new Map<string, string | null>();
  private timer?: NodeJS.Timeout;
  private tidying?: Promise<void>;

  constructor(private readonly opts: CacheKeeperOptions) {
    this.capBytes = opts.capBytes ?? DEFAULT_SNAPSHOT_CACHE_BYTES;
    this.dir = defaultSnapshotCache(opts.store);
  }

  /** start records the cap for `ovm system df`, prunes and tidies once, then every few minutes. */
  async start(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o755 }).catch(() => undefined);
    if (!existsSync(join(this.dir, "store-path")))
      await writeFile(join(this.dir, "store-path"), resolve(this.opts.store.root)).catch(() => undefined);
    await recordCap(this.dir, this.capBytes).catch(() => undefined);
    await this.maintain("daemon start");
    this.timer = setInterval(() => void this.maintain("periodic"), this.opts.everyMs ?? MAINTENANCE_MS);
    this.timer.unref();
  }

  /** stop ends the periodic maintenance. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.tidying;
  }

  /**
   * begin pins a snapshot a start is about to map, before it prepares it; `end` lets go of it
   * once the runtime answered. Should the preload be on its way out already, the start waits
   * until it is gone, and its prepare makes a new one: it never holds a path being removed.
   */
  async begin(ramsnap: string): Promise<void> {
    this.starting.set(ramsnap, (this.starting.get(ramsnap) ?? 0) + 1);
    this.begun++;
    await this.evicting.get(ramsnap);
  }

  end(ramsnap: string): void {
    const n = (this.starting.get(ramsnap) ?? 1) - 1;
    if (n > 0) this.starting.set(ramsnap, n);
    else this.starting.delete(ramsnap);
  }

  /** maintain prunes the caches of stores that are gone, then keeps this store's under the cap. */
  async maintain(why: string): Promise<void> {
    const freed = await pruneSnapshotCaches().catch(() => 0);
    if (freed) this.opts.log.info("pruned the preloads of stores that are gone", { bytes: freed, why });
    await this.tidy(why);
  }

  /** tidy evicts least recently used preloads over the cap, one tidy at a time. */
  tidy(why: string): Promise<void> {
    this.tidying ??= (async () => {
      try {
        this.pins = undefined; // read afresh in every round: pools fill and empty without a start
        const evicted = await evictPreloads(this.dir, this.capBytes, (p) => this.evict(p));
        for (const p of evicted)
          this.opts.log.info("evicted a preloaded snapshot", {
            digest: p.digest,
            bytes: p.bytes,
            last_used: p.lastUsed.toISOString(),
            cap: formatSize(this.capBytes),
            why,
          });
      } catch (e) {
        this.opts.log.error("keeping the snapshot cache under its cap failed", {
          error: (e as Error).message,
        });
      } finally {
        this.tidying = undefined;
      }
    })();
    return this.tidying;
  }

  /**
   * evict removes preload `p` unless it is pinned at this very moment: pins are read again if a
   * start began since they were, and from the check to the removal's first step nothing else
   * runs (no await between), so a start either pinned it first or waits for its removal (begin).
   */
  private async evict(p: Preload): Promise<boolean> {
    while (this.pins?.begun !== this.begun) {
      const begun = this.begun;
      this.pins = { begun, digests: await this.pinned() };
    }
    if (this.pins.digests.has(p.digest) || this.starting.has(p.digest)) return false;
    const gone = removePreload(p.dir).finally(() => this.evicting.delete(p.digest));
    this.evicting.set(
      p.digest,
      gone.catch(() => undefined),
    );
    await gone;
    return true;
  }

  /** pinned are the ramsnap digests that must stay: live instances, warm pools, starts under way. */
  async pinned(): Promise<Set<string>> {
    const manifests = new Set([
      ...(await this.opts.runtime.list()).map((i) => i.artifact.digest),
      ...this.opts.pooled(),
    ]);
    const out = new Set(this.starting.keys());
    for (const d of manifests) {
      const r = await this.ramsnapOf(d);
      if (r) out.add(r);
    }
    return out;
  }

  /** ramsnapOf reads which ramsnap blob a snapshot artifact carries (once per digest). */
  private async ramsnapOf(manifest: string): Promise<string | null> {
    let r = this.ramsnaps.get(manifest);
    if (r === undefined) {
      const oci = await this.opts.store.readJson<ImageManifest>(manifest as Digest).catch(() => undefined);
      // An artifact gone from the store cannot be told: its preload is left to the cap (safe, see evictPreloads).
      if (!oci) return null;
      r = oci.layers?.find((l) => l.mediaType === MediaType.RamSnapshot)?.digest ?? null;
      this.ramsnaps.set(manifest, r);
    }
    return r;
  }
}
