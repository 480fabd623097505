import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { OvmsError } from "../core/errors.js";
import { isErrorCode } from "../core/error-codes.js";
import type { ContentStore } from "../core/content.js";
import type { Descriptor } from "../core/oci.js";
import { cancelled, onAbort } from "./cancel.js";
import { RegistryError } from "./registry-error.js";
import type { SerializedError, TransferCommand, TransferJob, TransferMessage } from "./transfer-worker.js";

/** workerCount is how many threads a copy of `concurrency` blobs gets: no more than the cores. */
export function workerCount(concurrency: number): number {
  return Math.max(1, Math.min(concurrency, availableParallelism()));
}

/**
 * TransferWorkers is a small pool of worker threads that move large blobs between a registry
 * and the local store. In one thread, sha256 (about 1 GB/s) and the stream machinery of every
 * blob share one core; spread over threads, the blobs of a pull are hashed and written in
 * parallel, which is what lets a pull go at the speed of the network on a multi-core machine.
 * The stores travel as their handoffs (ContentCapabilities.handoff). Threads start on first
 * use and end with `close()`.
 */
export class TransferWorkers {
  private readonly workers: { w: Worker; load: number }[] = [];
  private readonly jobs = new Map<
    number,
    {
      resolve: (how: "transferred" | "mounted") => void;
      reject: (e: unknown) => void;
      progress?: (n: number) => void;
      worker: { load: number };
      size: number;
    }
  >();
  private nextId = 1;

  constructor(private readonly size: number) {}

  /** warm starts every thread of the pool now (they take ~0.1 s to load), before the first job. */
  warm(): void {
    while (this.workers.length < this.size) this.spawn();
  }

  private spawn(): { w: Worker; load: number } {
    const w = new Worker(new URL("./transfer-worker.js", import.meta.url));
    const entry = { w, load: 0 };
    w.on("message", (m: TransferMessage) => this.onMessage(m));
    w.on("error", (e) => this.failAll(entry, e));
    w.on("exit", (code) => {
      if (code !== 0)
        this.failAll(entry, new OvmsError("INTERNAL", `transfer worker exited with status ${code}`));
    });
    this.workers.push(entry);
    return entry;
  }

  /** pick gives a job to an idle thread, a new one while the pool may grow, else the one with the fewest bytes to move. */
  private pick(): { w: Worker; load: number } {
    const idle = this.workers.find((x) => x.load === 0);
    if (idle) return idle;
    if (this.workers.length < this.size) return this.spawn();
    return this.workers.reduce((a, b) => (b.load < a.load ? b : a));
  }

  /**
   * move copies the blob `desc` from `src` to `dst` in a worker; both must declare a handoff.
   * When `signal` fires the worker is told to stop, and the promise settles once it has
   * cleaned up (no temp file left), with CANCELLED.
   */
  async move(
    src: ContentStore,
    dst: ContentStore,
    desc: Descriptor,
    opts: { progress?: (n: number) => void; signal?: AbortSignal } = {},
  ): Promise<"transferred" | "mounted"> {
    const [from, to] = await Promise.all([src.capabilities?.handoff?.(), dst.capabilities?.handoff?.()]);
    if (!from || !to) throw new OvmsError("INTERNAL", "transfer workers: a store without a handoff");
    if (opts.signal?.aborted) throw cancelled(`blob ${desc.digest}`, opts.signal);
    const job: TransferJob = { id: this.nextId++, src: from, dst: to, desc, progress: !!opts.progress };
    const worker = this.pick();
    // Load is counted in bytes: a thread busy with one large blob is busier than one with two small ones.
    worker.load += desc.size + 1;
    const stop = onAbort(opts.signal, () =>
      worker.w.postMessage({ type: "cancel", id: job.id } satisfies TransferCommand),
    );
    try {
      return await new Promise((resolve, reject) => {
        this.jobs.set(job.id, { resolve, reject, progress: opts.progress, worker, size: desc.size + 1 });
        worker.w.postMessage({ type: "run", job } satisfies TransferCommand);
      });
    } finally {
      stop();
    }
  }

  private onMessage(m: TransferMessage): void {
    const job = this.jobs.get(m.id);
    if (!job) return;
    if (m.type === "progress") {
      job.progress?.(m.bytes);
      return;
    }
    this.jobs.delete(m.id);
    job.worker.load -= job.size;
    if (m.type === "done") job.resolve(m.how);
    else job.reject(rebuildError(m.error));
  }

  private failAll(worker: { load: number }, e: unknown): void {
    for (const [id, job] of this.jobs) {
      if (job.worker !== worker) continue;
      this.jobs.delete(id);
      job.reject(e);
    }
    worker.load = 0;
  }

  /** close ends every worker thread. */
  async close(): Promise<void> {
    await Promise.all(this.workers.map((x) => x.w.terminate()));
    this.workers.length = 0;
  }
}

/** rebuildError turns a worker's serialized error back into an OvmsError with the same code, so callers decide on `code` as usual. */
function rebuildError(s: SerializedError): Error {
  if (s.method !== undefined || s.status !== undefined || s.transient !== undefined) {
    const e = new RegistryError(s.code && isErrorCode(s.code) ? s.code : "REGISTRY_ERROR", s.message, {
      method: s.method,
      url: s.url,
      status: s.status,
      transient: s.transient,
    });
    if (s.attempts !== undefined) e.attempts = s.attempts;
    return e;
  }
  if (s.code && isErrorCode(s.code)) return new OvmsError(s.code, s.message, { details: s.details });
  const e = new Error(s.message);
  e.name = s.name;
  return e;
}
