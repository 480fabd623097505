import type { PreparedArtifact } from "../../artifact/prepare.js";
import { RuntimeError } from "../runtime-error.js";
import type { WarmPool } from "../types.js";

/** PoolProcesses is how the warm pool has processes made and unmade (by the runtime). */
export interface PoolProcesses {
  /** launch starts one QEMU paused at `-incoming defer` for a snapshot; resolves with its id. */
  launch(a: PreparedArtifact): Promise<string>;
  /** usable tells whether a ready process can still be handed out (it may have died). */
  usable(id: string): boolean;
  /** discard stops a ready process and removes it. */
  discard(id: string): Promise<void>;
  /** restored tells whether a ready process has its device state loaded already (a start is a `cont`). */
  restored?(id: string): boolean;
}

/** Pool is the warm pool of one snapshot artifact. */
interface Pool {
  artifact: PreparedArtifact;
  size: number;
  ready: string[];
  filling: number;
}

/**
 * QemuWarmPool keeps paused QEMU processes ready per snapshot artifact, their device state
 * loaded already, so a start only assigns identity and continues. Pools refill in the background and never hold more guest memory
 * than `memoryCapBytes` across all snapshots; a pool that cannot fill is only a slower start.
 */
export class QemuWarmPool implements WarmPool {
  /** memoryCapBytes caps the guest memory all warm pools together may hold. */
  memoryCapBytes = 2 * 1024 ** 3;
  private readonly pools = new Map<string, Pool>();
  /** Launches under way: close waits for them, or what they start would outlive the pool. */
  private readonly launching = new Set<Promise<unknown>>();
  private closed = false;

  constructor(private readonly procs: PoolProcesses) {}

  /** configure keeps `size` ready processes for a snapshot artifact (0 empties its pool). */
  async configure(a: PreparedArtifact, size: number): Promise<void> {
    if (!a.ramSnapshot)
      throw new RuntimeError(
        "INVALID_ARGUMENT",
        `${a.reference} has no RAM snapshot: a warm pool only serves restores`,
      );
    const p = this.pools.get(a.digest) ?? { artifact: a, size: 0, ready: [], filling: 0 };
    p.size = size;
    p.artifact = a;
    this.pools.set(a.digest, p);
    while (p.ready.length > size) await this.procs.discard(p.ready.pop()!);
    await this.fill(a);
  }

  /** status tells how many ready processes each pooled snapshot has, and how many of them are restored already. */
  status(): { digest: string; size: number; ready: number; restored: number }[] {
    return [...this.pools.entries()].map(([digest, p]) => ({
      digest,
      size: p.size,
      ready: p.ready.length,
      restored: p.ready.filter((id) => this.procs.restored?.(id)).length,
    }));
  }

  /** hasReady tells, without I/O, whether a start of `a` would find a process ready now. */
  hasReady(a: PreparedArtifact): boolean {
    return (this.pools.get(a.digest)?.ready.length ?? 0) > 0;
  }

  /**
   * take hands out a ready process for a snapshot artifact, or undefined when there is none.
   * It is on the hot path of a restore: no I/O, no await.
   */
  take(a: PreparedArtifact): string | undefined {
    const p = this.pools.get(a.digest);
    for (;;) {
      const id = p?.ready.shift();
      if (id === undefined) return undefined;
      if (this.procs.usable(id)) return id;
    }
  }

  /**
   * refillWhen says when a pool refills after handing a clone out: `after-first-output` (the
   * default) waits until that clone has written to its console, at most `refillWaitMs`, so that
   * starting the next QEMU does not take the two cores from the guest that was just resumed
   * (under TCG it translates its code again first); `at-once` refills right after the answer.
   */
  refillWhen: "after-first-output" | "at-once" = "after-first-output";
  refillWaitMs = 1000;

  /**
   * refillSoon refills a pool once the caller has answered (spawning QEMU blocks the event loop
   * for a few ms) and, by default, once `firstOutput` resolves: see refillWhen.
   */
  refillSoon(a: PreparedArtifact, firstOutput?: Promise<void>): void {
    const answered = new Promise((r) => setTimeout(r, 50).unref());
    const spoke =
      firstOutput && this.refillWhen === "after-first-output"
        ? Promise.race([firstOutput, new Promise((r) => setTimeout(r, this.refillWaitMs).unref())])
        : undefined;
    void Promise.all([answered, spoke]).then(() => this.fill(a));
  }

  /** fill starts processes until the pool has its size, within the memory cap. */
  async fill(a: PreparedArtifact): Promise<void> {
    const p = this.pools.get(a.digest);
    if (!p) return;
    while (!this.closed && p.ready.length + p.filling < p.size) {
      const mem = a.ramSnapshot!.metadata.memoryBytes;
      if (this.pooledBytes() + mem > this.memoryCapBytes) return;
      p.filling++;
      // The launch and its entry in `ready` are one step, so close never misses what it made.
      const launch = this.procs.launch(a).then((id) => void p.ready.push(id));
      this.launching.add(launch);
      try {
        await launch;
      } catch {
        return; // a pool that cannot fill is only a slower start, never an error
      } finally {
        p.filling--;
        this.launching.delete(launch);
      }
    }
  }

  /**
   * close discards every ready process and forgets the pools (daemon shutdown), once the
   * launches under way have ended: a process a refill is still starting is discarded too.
   */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.launching]);
    for (const p of this.pools.values()) for (const id of p.ready.splice(0)) await this.procs.discard(id);
    this.pools.clear();
  }

  private pooledBytes(): number {
    let n = 0;
    for (const p of this.pools.values())
      n += (p.ready.length + p.filling) * (p.artifact.ramSnapshot?.metadata.memoryBytes ?? 0);
    return n;
  }
}
