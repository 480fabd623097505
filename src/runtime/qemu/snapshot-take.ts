import { existsSync } from "node:fs";
import { copyFile, rm, stat, statfs } from "node:fs/promises";
import { join } from "node:path";
import type { SnapshotCapture, SnapshotOptions, SnapshotReport } from "../types.js";
import { backgroundRefusal, populate, unallocated } from "./background.js";
import { checkSnapshottable, type Migration } from "./migration.js";
import { precopySound } from "./precopy.js";
import type { QmpClient, QmpEvent } from "./qmp-client.js";
import type { InstanceRecord, InstanceRecords } from "./records.js";
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
  /** Whether this runtime's QEMUs may use userfaultfd, which background snapshots need (background.ts). */
  userfaultfd: boolean;
}

/**
 * takeSnapshot pauses an instance and captures its device state (and, for a restored clone, its
 * memory out of the migration stream, since its RAM is a private mapping of the parent's
 * preload). Then, unless it is to stop, it copies what the running guest would change — the
 * shared memory file into the same tmpfs, the overlay beside it — resumes the guest and hands
 * the copies to `sink`, so the guest is paused for the capture and the copies only, not for the
 * packing (rfc §5.8). A `background` capture pauses it for the overlay copy and the device state
 * only: QEMU resumes it and writes its memory, as of the pause, while it runs (background.ts).
 * Without room for the copies (or with `stop`) `sink` runs while the guest is paused, as before.
 * `opts.report` says which, and for how long the guest was paused.
 */
export async function takeSnapshot<R>(
  ctx: SnapshotContext,
  ref: string,
  opts: SnapshotOptions,
  sink: (c: SnapshotCapture) => Promise<R>,
): Promise<R> {
  const rec = ctx.records.find(ref);
  const live = ctx.procs.get(rec.instance_id);
  checkSnapshottable(rec, live);
  live.snapshotting = true;
  const qmp = live.qmp;
  const wasRunning = rec.state === "running";
  const report: SnapshotReport = opts.report ?? {};
  const t0 = performance.now();
  const dir = ctx.records.dir(rec.instance_id);
  const overlay = join(dir, "overlay.qcow2");
  // A clone's RAM, and any RAM captured without x-ignore-shared (ivshmem), comes out of the stream.
  const ignoreShared = !rec.devices.length;
  const fromStream = Boolean(rec.restored_from) || !ignoreShared;
  const memoryCopy = join(rec.shm_dir, "snapshot-memory");
  const overlayCopy = join(dir, "snapshot-overlay.qcow2");
  const temps: string[] = [];
  const stopped = stamp(qmp, "STOP");
  let resumed = false;
  trace("snapshot: begin");
  try {
    const hasOverlay = existsSync(overlay);
    const method =
      wasRunning && !opts.stop
        ? await choose(rec, fromStream, hasOverlay ? overlay : "", await want(ctx, rec, opts, report), report)
        : "paused";
    let overlayFile = hasOverlay ? overlay : undefined;
    let captured: Awaited<ReturnType<Migration["capture"]>>;
    if (method === "background") {
      // Populated page tables keep QEMU's own pass over them out of the pause (background.ts).
      const files = [rec.ram_file, ...rec.devices.map((d) => d.path)];
      if (rec.pid) await populate(rec.pid, files).catch(() => 0);
      report.prepareMs = ms(performance.now() - t0);
      const resumedAt = stamp(qmp, "RESUME");
      try {
        captured = await ctx.migration.capture(qmp, rec.shm_dir, (paths) => ctx.grant(paths), {
          ignoreShared: false,
          background: true,
          beforeMigrate: async () => {
            await qmp.execute("stop");
            await opts.whilePaused?.();
            // The disk as of the pause: copied before QEMU resumes the guest (the stop flushed it).
            const t1 = performance.now();
            if (overlayFile) {
              temps.push(overlayCopy);
              await copyFile(overlayFile, overlayCopy);
              overlayFile = overlayCopy;
            }
            report.copyMs = ms(performance.now() - t1);
          },
        });
        report.captureMs = ms(performance.now() - t0);
        // QEMU resumed the guest once its device state was saved; one it left paused resumes now.
        const st = await qmp.execute<{ running: boolean }>("query-status");
        report.pauseMs = st.running ? await pausedFor(stopped, resumedAt) : await resume(qmp, stopped);
        resumed = true;
      } finally {
        resumedAt.cancel();
      }
    } else {
      captured = await ctx.migration.capture(
        qmp,
        rec.shm_dir,
        (paths) => ctx.grant(paths),
        method === "live"
          ? { ignoreShared: fromStream && ignoreShared, live: LIVE }
          : fromStream
            ? { ignoreShared }
            : undefined,
      );
      report.captureMs = ms(performance.now() - t0);
      await opts.whilePaused?.();
    }
    if ("streamFile" in captured) temps.push(captured.streamFile, memoryCopy);
    if ("forcedStop" in captured)
      report.fallback = `the guest's memory changed faster than it was saved: stopped ${LIVE.convergeMs} ms after the first pass`;
    let memoryFile = "streamFile" in captured ? memoryCopy : rec.ram_file;
    if (method === "live" || method === "copy") {
      const t1 = performance.now();
      // Consistent copies: the migration flushed and inactivated the disk, and the vCPUs are stopped.
      temps.push(overlayCopy, memoryCopy);
      const copies: Promise<void>[] = [];
      if (overlayFile)
        copies.push(copyFile(overlayFile, overlayCopy).then(() => void (overlayFile = overlayCopy)));
      if (!("streamFile" in captured))
        copies.push(copyFile(rec.ram_file, memoryCopy).then(() => void (memoryFile = memoryCopy)));
      await Promise.all(copies);
      report.copyMs = ms(performance.now() - t1);
      trace("snapshot: copied");
      report.pauseMs = await resume(qmp, stopped);
      resumed = true;
    }
    report.mode = method;
    const deviceState =
      "streamFile" in captured
        ? await ctx.migration.splitCaptured(captured, {
            memoryBytes: rec.memory_bytes,
            memoryFile: memoryCopy,
            ignoreShared:
              method === "background" ? false : method === "live" ? fromStream && ignoreShared : ignoreShared,
            restoreIgnoreShared: ignoreShared,
          })
        : captured.deviceState;
    const version = await ctx.version();
    const c = toCapture(rec, { name: ctx.runtimeName, version }, deviceState, overlayFile);
    c.memoryFile = memoryFile;
    trace("snapshot: captured");
    const r = await sink(c);
    trace("snapshot: packed");
    report.totalMs = ms(performance.now() - t0);
    return r;
  } finally {
    live.snapshotting = false;
    for (const f of temps) await rm(f, { force: true });
    if (opts.stop) {
      report.pauseMs ??= ms(performance.now() - t0);
      await ctx.stop(rec.instance_id).catch(() => undefined);
    } else if (wasRunning && !resumed) report.pauseMs = await resume(qmp, stopped).catch(() => undefined);
    stopped.cancel();
  }
}

/** ms rounds a duration to tenths of a millisecond. */
const ms = (x: number) => Math.round(x * 10) / 10;

/** stamp keeps the timestamp (ms since the epoch) of QEMU's next `event`, until cancelled. */
function stamp(qmp: QmpClient, event: string): { at: Promise<number | undefined>; cancel(): void } {
  let done: (v: number | undefined) => void = () => undefined;
  const at = new Promise<number | undefined>((resolve) => (done = resolve));
  const onEvent = (e: QmpEvent) => {
    if (e.event !== event) return;
    qmp.off("event", onEvent);
    done(e.timestamp ? e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000 : Date.now());
  };
  qmp.on("event", onEvent);
  return {
    at,
    cancel: () => {
      qmp.off("event", onEvent);
      done(undefined);
    },
  };
}

/** pausedFor is how long the guest was stopped, from QEMU's STOP to its RESUME as QEMU stamped them. */
async function pausedFor(
  stopped: { at: Promise<number | undefined> },
  resumedAt: { at: Promise<number | undefined>; cancel(): void },
): Promise<number | undefined> {
  // The RESUME event has come (before cont's reply, or the migration's end); a QEMU that sent
  // none leaves this undefined.
  setTimeout(() => resumedAt.cancel(), 2000).unref();
  const [a, b] = await Promise.all([stopped.at, resumedAt.at]);
  return a !== undefined && b !== undefined ? ms(b - a) : undefined;
}

/** resume continues the guest and returns how long it was stopped, STOP to RESUME as QEMU stamped them. */
async function resume(
  qmp: QmpClient,
  stopped: { at: Promise<number | undefined> },
): Promise<number | undefined> {
  const resumed = stamp(qmp, "RESUME");
  try {
    await qmp.execute("cont");
  } catch (e) {
    resumed.cancel();
    throw e;
  }
  // RESUME comes before cont's reply.
  return pausedFor(stopped, resumed);
}

/** Method is how a running guest that is to resume is snapshotted (SnapshotOptions.method). */
type Method = "background" | "live" | "copy" | "paused";

/**
 * defaultMethod is how a running guest that is to resume is snapshotted unless told otherwise:
 * `background` where QEMU may use userfaultfd, else `live` where QEMU's precopy is sound for its
 * RAM blocks (precopy.ts), else `copy` (rfc §5.8).
 */
export function defaultMethod(
  accel: string,
  qemuVersion: string,
  ramBlocks: number[],
  userfaultfd = false,
): "background" | "live" | "copy" {
  if (userfaultfd) return "background";
  return precopySound(accel, qemuVersion, ramBlocks) ? "live" : "copy";
}

/**
 * want is the method asked for (or the default), with `background` traded for the next best
 * where this guest cannot have it: its memory is not on tmpfs, or its QEMU refuses the
 * capability (no userfaultfd: a QEMU launched without CAP_SYS_PTRACE, or a kernel without
 * write-protection of shared memory). `report.fallback` says why.
 */
async function want(
  ctx: SnapshotContext,
  rec: InstanceRecord,
  opts: SnapshotOptions,
  report: SnapshotReport,
): Promise<Method> {
  const version = await ctx.version();
  const blocks = [rec.memory_bytes, ...rec.devices.map((d) => d.size)];
  const asked = opts.method ?? defaultMethod(rec.accel, version, blocks, ctx.userfaultfd);
  if (asked !== "background") return asked;
  let why = await backgroundRefusal([rec.ram_file, ...rec.devices.map((d) => d.path)]);
  if (!why)
    why = await ctx.procs
      .get(rec.instance_id)
      ?.qmp?.execute("migrate-set-capabilities", {
        capabilities: [{ capability: "background-snapshot", state: true }],
      })
      .then(
        () => undefined,
        (e: Error) =>
          `QEMU refused background-snapshot (${e.message}): it needs userfaultfd (vm.unprivileged_userfaultfd = 1, or CAP_SYS_PTRACE, which ovmd gives a QEMU confined in namespaces)`,
      );
  if (!why) return "background";
  const next = precopySound(rec.accel, version, blocks) ? "live" : "copy";
  report.fallback = `background: ${why}; ${next} instead`;
  trace(`snapshot: ${report.fallback}`);
  return next;
}

/** LIVE is how a live capture runs: QEMU aims at a 20 ms stop; stopped by force 10 s after the first pass. */
const LIVE = { downtimeMs: 20, convergeMs: 10_000 };

/**
 * choose picks how a running guest is snapshotted: `want` (see want), or the next one down
 * (background → live → copy → paused) when the host has no room for what it writes beside
 * the guest, which `report.fallback` then says. A background capture writes the guest's RAM twice
 * on its tmpfs (the stream and the memory split out of it) and fills in the memory file's holes; a live capture writes the guest's RAM twice on
 * its tmpfs (the migration stream and the memory split out of it); a copy writes its memory once
 * (a clone's comes out of the stream in any case); both copy the overlay beside it on disk.
 */
async function choose(
  rec: InstanceRecord,
  fromStream: boolean,
  overlay: string,
  want: Method,
  report: SnapshotReport,
): Promise<Method> {
  const free = async (p: string) => {
    const fs = await statfs(p).catch(() => undefined);
    return fs ? fs.bavail * fs.bsize : Infinity;
  };
  const margin = 64 << 20;
  const ram = fromStream ? rec.memory_bytes : (await stat(rec.ram_file)).blocks * 512;
  // A background capture fills in the memory file's holes as well (populate) and keeps a stream and its split.
  const holes = want === "background" ? await unallocated([rec.ram_file]) : 0;
  const shmFree = await free(rec.shm_dir);
  const overlayNeed = overlay ? (await stat(overlay)).blocks * 512 + margin : 0;
  const overlayFree = overlay ? await free(overlay) : Infinity;
  const why: string[] = [];
  const order = ["background", "live", "copy", "paused"] as const;
  for (const m of order.slice(order.indexOf(want))) {
    if (m === "paused") break;
    const need = (m === "background" ? 2 * rec.memory_bytes + holes : m === "live" ? 2 * ram : ram) + margin;
    if (need > shmFree) why.push(`${m}: need ${mib(need)} MiB on ${rec.shm_dir}, ${mib(shmFree)} MiB free`);
    else if (overlayNeed > overlayFree)
      why.push(`${m}: need ${mib(overlayNeed)} MiB beside ${overlay}, ${mib(overlayFree)} MiB free`);
    else {
      if (why.length) report.fallback = join2(report.fallback, `no room for a ${why.join("; ")}`);
      return m;
    }
  }
  if (why.length) {
    report.fallback = join2(
      report.fallback,
      `no room: ${why.join("; ")}; the guest stays paused while it is packed`,
    );
    trace(`snapshot: ${report.fallback}`);
  }
  return "paused";
}

/** join2 joins two reasons for a fallback. */
const join2 = (a: string | undefined, b: string) => (a ? `${a}; then ${b}` : b);

const mib = (b: number) => (b / 2 ** 20).toFixed(1);
