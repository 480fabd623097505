import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import type { SnapshotCapture } from "../types.js";
import { checkSnapshottable, type Migration } from "./migration.js";
import type { InstanceRecords } from "./records.js";
import { toCapture } from "./record-views.js";
import type { Supervisor } from "./supervisor.js";
import { trace } from "./trace.js";

/** SnapshotContext is what taking a snapshot needs of the runtime. */
export interface SnapshotContext {
  runtimeName: string;
  records: InstanceRecords;
  procs: Supervisor;
  migration: Migration;
  version(): Promise<string>;
  /** grant lets the QEMU user reach paths (the migration socket). */
  grant(paths: string[]): Promise<void>;
  stop(id: string): Promise<unknown>;
}

/**
 * takeSnapshot pauses an instance, captures its device state (and, for a restored clone, its
 * memory out of the migration stream into a file of its tmpfs folder, since its RAM is a
 * private mapping of the parent's preload), hands everything to `sink` while the guest is still
 * paused, then resumes it, or stops it when asked (rfc §5.8).
 */
export async function takeSnapshot<R>(
  ctx: SnapshotContext,
  ref: string,
  opts: { stop?: boolean },
  sink: (c: SnapshotCapture) => Promise<R>,
): Promise<R> {
  const rec = ctx.records.find(ref);
  const live = ctx.procs.get(rec.instance_id);
  checkSnapshottable(rec, live);
  live.snapshotting = true;
  const qmp = live.qmp;
  const wasRunning = rec.state === "running";
  const overlay = join(ctx.records.dir(rec.instance_id), "overlay.qcow2");
  // A clone's RAM, and any RAM captured without x-ignore-shared (ivshmem), comes out of the stream.
  const ignoreShared = !rec.devices.length;
  const cloneMemory = rec.restored_from || !ignoreShared ? join(rec.shm_dir, "snapshot-memory") : undefined;
  trace("snapshot: begin");
  try {
    const deviceState = await ctx.migration.capture(
      qmp,
      rec.shm_dir,
      (paths) => ctx.grant(paths),
      cloneMemory ? { memoryBytes: rec.memory_bytes, memoryFile: cloneMemory, ignoreShared } : undefined,
    );
    const version = await ctx.version();
    const c = toCapture(
      rec,
      { name: ctx.runtimeName, version },
      deviceState,
      existsSync(overlay) ? overlay : undefined,
    );
    if (cloneMemory) c.memoryFile = cloneMemory;
    trace("snapshot: captured");
    const r = await sink(c);
    trace("snapshot: packed");
    return r;
  } finally {
    live.snapshotting = false;
    if (cloneMemory) await rm(cloneMemory, { force: true });
    if (opts.stop) await ctx.stop(rec.instance_id).catch(() => undefined);
    else if (wasRunning) await qmp.execute("cont").catch(() => undefined);
  }
}
