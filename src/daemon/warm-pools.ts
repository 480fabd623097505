import { isDigest } from "../core/digest.js";
import { OvmsError } from "../core/errors.js";
import { normalizeReference } from "../core/reference.js";
import type { Store } from "../store/store.js";
import type { PreparedArtifact } from "../artifact/prepare.js";
import type { Runtime } from "../runtime/types.js";
import type { PoolInfo, PoolRemoveResponse } from "../api/types.generated.js";
import type { Logger } from "./log.js";

/** WarmPoolOptions are the daemon's pool settings (`--warm-pool`, `--warm-pool-for`). */
export interface WarmPoolOptions {
  /** Paused VMM processes to keep per hot snapshot artifact (default 1; 0 turns the pool off). */
  warmPool?: number;
  /** Per-snapshot pool sizes, keyed by reference or manifest digest; they override `warmPool`. */
  warmPools?: Record<string, number>;
}

/**
 * WarmPools is the daemon's side of the runtime's warm pool (rfc §5.7): which snapshot
 * artifacts get one and how big, what each was filled from (to list it by name), and emptying
 * one on request. The runtime owns the processes; this only decides and reports.
 */
export class WarmPools {
  private readonly size: number;
  private readonly sizes: Map<string, number>;
  /** What filled each pool, by manifest digest. */
  private readonly filled = new Map<string, PreparedArtifact>();

  constructor(
    private readonly runtime: Runtime,
    private readonly log: Logger,
    opts: WarmPoolOptions = {},
  ) {
    this.size = opts.warmPool ?? 1;
    this.sizes = new Map(
      Object.entries(opts.warmPools ?? {}).map(([k, n]) => [isDigest(k) ? k : normalizeReference(k), n]),
    );
  }

  /** sizeFor is the pool size of a snapshot: its own setting (by digest, then reference), else the global one. */
  sizeFor(reference: string, digest: string): number {
    let byRef: number | undefined;
    try {
      byRef = this.sizes.get(normalizeReference(reference));
    } catch {
      byRef = undefined; // a path or an untagged import has no reference to match
    }
    return this.sizes.get(digest) ?? byRef ?? this.size;
  }

  /**
   * warm keeps the configured number of paused processes ready for a snapshot once it has
   * been started (it is hot), so the next start only loads device state and continues.
   */
  async warm(prepared: PreparedArtifact): Promise<void> {
    const pool = this.runtime.pool;
    const size = this.sizeFor(prepared.reference, prepared.digest);
    if (!size || !pool || this.filled.has(prepared.digest)) return;
    this.filled.set(prepared.digest, prepared);
    // Let the /start answer go out first: spawning the pool's QEMU blocks the event loop.
    await new Promise((r) => setTimeout(r, 100));
    await pool
      .configure(prepared, size)
      .catch((e: Error) =>
        this.log.info("warm pool not filled", { digest: prepared.digest, error: e.message }),
      );
  }

  /** list is every pool with what filled it, its size, what is ready and the memory each process maps. */
  list(): PoolInfo[] {
    return (this.runtime.pool?.status() ?? []).flatMap((s) => {
      const a = this.filled.get(s.digest);
      if (!a) return [];
      return [
        {
          reference: a.reference,
          digest: a.digest,
          size: s.size,
          ready: s.ready,
          memory_bytes: a.ramSnapshot?.metadata.memoryBytes ?? 0,
        },
      ];
    });
  }

  /** pinned are the manifest digests whose pool holds (or will hold) processes mapping their snapshot. */
  pinned(): string[] {
    return this.list()
      .filter((p) => p.size > 0 || p.ready > 0)
      .map((p) => p.digest);
  }

  /**
   * empty stops the ready processes of one pool, named by reference or manifest digest, and
   * keeps it empty while the daemon runs. NOT_FOUND when there is no pool for it.
   */
  async empty(name: string, store: Store): Promise<PoolRemoveResponse> {
    const digest = await this.digestOf(name, store);
    const a = digest ? this.filled.get(digest) : undefined;
    const pool = this.runtime.pool;
    if (!digest || !a || !pool)
      throw new OvmsError("NOT_FOUND", `no warm pool for ${name} (ovm pool ls lists them)`);
    const ready = pool.status().find((s) => s.digest === digest)?.ready ?? 0;
    this.sizes.set(digest, 0);
    await pool.configure(a, 0);
    this.log.info("warm pool emptied", { reference: a.reference, digest, discarded: ready });
    return { status: "emptied", reference: a.reference, digest: a.digest, discarded: ready };
  }

  /** digestOf finds the pool a name means: a digest, a reference a pool was filled from, or one the store resolves. */
  private async digestOf(name: string, store: Store): Promise<string | undefined> {
    if (isDigest(name)) return name;
    const norm = normalizeReference(name);
    for (const [d, a] of this.filled) {
      try {
        if (normalizeReference(a.reference) === norm) return d;
      } catch {
        // filled from a path
      }
    }
    return (await store.resolve(name).catch(() => undefined))?.digest;
  }
}
