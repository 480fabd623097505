/**
 * The pause part of bench/snapshot: how long a running guest is paused while it is snapshotted,
 * for the demo guest (192 MiB, counting) and a 1 GiB guest that filled 768 MiB of its memory (880 MiB got its kernel OOM-killing)
 * (`ovms.mode=fill`), each snapshotted `runs` times by each method in turn: packed while paused
 * (`paused`, what every snapshot did before), resumed before packing after memory file and
 * overlay were copied while paused (`copy`), QEMU's precopy (`live`), and device state only while
 * paused, memory written afterwards with copy-on-write (`background`). Per snapshot: the pause as QEMU stamps it (STOP → RESUME), its parts
 * (device state save, copies), the total as the caller sees it, the bytes written, and the
 * guest's own view: the longest gap between two of its console lines around the snapshot, less
 * the usual gap (it prints one every 200 ms of its own time, which stops while it is paused).
 */
import { open, rm, stat } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { DEMO_CMDLINE, demoStore, percentile } from "./bench-lib.js";
import { loadArtifact } from "../src/artifact/artifact.js";
import { PrepareCache, prepareArtifact } from "../src/artifact/prepare.js";
import { packSnapshot } from "../src/artifact/snapshot.js";
import type { Digest } from "../src/core/digest.js";
import { QemuRuntime } from "../src/runtime/qemu/qemu-runtime.js";
import type { SnapshotReport } from "../src/runtime/types.js";

/** GuestKind is a guest the pause is measured on. */
export interface GuestKind {
  name: string;
  memory: number;
  cmdline: string;
  /** A console line that says the guest is ready to be measured. */
  ready: RegExp;
}

export const GUESTS: Record<string, GuestKind> = {
  demo: { name: "demo", memory: 192 << 20, cmdline: "ovms.mode=counter", ready: /^OVMS-COUNTER: 3$/m },
  fill1g: {
    name: "fill1g",
    memory: 1 << 30,
    cmdline: "ovms.mode=fill ovms.fill=768",
    ready: /^OVMS-COUNTER: 3$/m,
  },
};

/** MODES are the methods compared, each snapshot of a run in turn (SnapshotOptions.method). */
const MODES = ["paused", "copy", "live", "background"] as const;

interface Shot {
  mode: string;
  pauseMs: number;
  prepareMs?: number;
  captureMs?: number;
  copyMs?: number;
  totalMs: number;
  bytesWritten: number;
  ramsnapBytes: number;
  guestGapMs: number;
  lostAt: [number, number];
  guestLostMs?: number;
  load1: number;
  fallback?: string;
}

/** Lines watches a console file and stamps when each line arrived. */
class Lines {
  private offset = 0;
  private partial = "";
  readonly arrivals: { at: number; line: string }[] = [];
  private timer?: NodeJS.Timeout;
  private busy = false;

  constructor(private readonly path: string) {}

  start(): void {
    this.timer = setInterval(() => void this.poll(), 5);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async poll(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const st = await stat(this.path).catch(() => undefined);
      if (!st || st.size <= this.offset) return;
      const fh = await open(this.path, "r");
      const buf = Buffer.alloc(st.size - this.offset);
      await fh.read(buf, 0, buf.length, this.offset);
      await fh.close();
      this.offset = st.size;
      const at = performance.now();
      const parts = (this.partial + buf.toString("latin1")).split("\n");
      this.partial = parts.pop()!;
      for (const line of parts) this.arrivals.push({ at, line });
    } finally {
      this.busy = false;
    }
  }

  async waitFor(re: RegExp, timeoutMs: number): Promise<void> {
    const t0 = performance.now();
    while (!this.arrivals.some((a) => re.test(a.line))) {
      const bad = this.arrivals.find((a) => /Kernel panic|OVMS-ERROR|Out of memory/.test(a.line));
      if (bad) throw new Error(`the guest failed: ${bad.line}`);
      if (performance.now() - t0 > timeoutMs) throw new Error(`no ${re} on the console in ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** gapAround is the longest gap between counter lines that spans part of [from, to]. */
  gapAround(from: number, to: number): number {
    const c = this.arrivals.filter((a) => a.line.startsWith("OVMS-COUNTER"));
    let gap = 0;
    for (let i = 1; i < c.length; i++)
      if (c[i].at >= from && c[i - 1].at <= to) gap = Math.max(gap, c[i].at - c[i - 1].at);
    return gap;
  }

  /**
   * lostAround is the time the guest lost around [from, to] by its own count: between the last
   * counter line before `from` and the first after `after`, host time passed less the count's
   * advance times the usual gap. The guest's clock stops while it is paused, so this is the
   * pause as its work sees it (plus any time it ran slower meanwhile).
   */
  lostAround(from: number, after: number, usual: number): number {
    const c = this.arrivals
      .filter((a) => a.line.startsWith("OVMS-COUNTER"))
      .map((a) => ({ at: a.at, n: Number(a.line.split(" ")[1]) }));
    const before = c.filter((x) => x.at < from).pop();
    const next = c.find((x) => x.at > after);
    if (!before || !next) return NaN;
    return Math.max(0, next.at - before.at - (next.n - before.n) * usual);
  }

  /** usualGap is the median gap between counter lines outside the windows given. */
  usualGap(windows: [number, number][]): number {
    const c = this.arrivals.filter((a) => a.line.startsWith("OVMS-COUNTER"));
    const gaps: number[] = [];
    for (let i = 1; i < c.length; i++)
      if (!windows.some(([f, t]) => c[i].at >= f && c[i - 1].at <= t)) gaps.push(c[i].at - c[i - 1].at);
    return gaps.length ? percentile(gaps, 50) : 200;
  }
}

const stats = (xs: number[]) => ({
  p50: Math.round(percentile(xs, 50) * 10) / 10,
  p95: Math.round(percentile(xs, 95) * 10) / 10,
});

/** measurePause boots `kind` and snapshots it `runs` times per mode, interleaved. */
export async function measurePause(kind: GuestKind, runs: number, keep: boolean) {
  const { dir, store } = await demoStore(
    `ovms-bench-pause-${kind.name}-`,
    `${DEMO_CMDLINE} ${kind.cmdline}`,
    kind.memory,
  );
  const rt = await QemuRuntime.create({ stateDir: store.workDir });
  const shots: Shot[] = [];
  const windows: [number, number][] = [];
  let lines: Lines | undefined;
  try {
    const source = await loadArtifact(store, "bench/vm:1");
    const tBoot = performance.now();
    const info = await rt.start(await prepareArtifact(store, source, { cache: new PrepareCache() }), {
      accel: "tcg",
    });
    lines = new Lines(join(store.workDir, "instances", info.id, "serial.log"));
    lines.start();
    await lines.waitFor(kind.ready, 600_000);
    process.stdout.write(`${kind.name}: ready after ${Math.round(performance.now() - tBoot)} ms\n`);
    for (let i = 0; i < runs; i++) {
      for (const mode of MODES) {
        const report: SnapshotReport = {};
        const load1 = loadavg()[0];
        const t0 = performance.now();
        const snap = await rt.snapshot(info.id, { report, method: mode }, (c) =>
          packSnapshot(store, source, c, `bench/vm:${mode}${i}`),
        );
        const t1 = performance.now();
        // Let the guest print a few lines after the resume before the gap is read.
        await new Promise((r) => setTimeout(r, 1500));
        windows.push([t0, t1]);
        shots.push({
          mode: report.mode ?? mode,
          pauseMs: report.pauseMs ?? NaN,
          ...(report.captureMs !== undefined ? { captureMs: report.captureMs } : {}),
          ...(report.prepareMs !== undefined ? { prepareMs: report.prepareMs } : {}),
          ...(report.copyMs !== undefined ? { copyMs: report.copyMs } : {}),
          totalMs: Math.round((t1 - t0) * 10) / 10,
          bytesWritten: snap.bytesWritten,
          ramsnapBytes: snap.ramsnap.size,
          guestGapMs: lines.gapAround(t0, t1),
          lostAt: [t0, t1 + 1000],
          load1,
          ...(report.fallback ? { fallback: report.fallback } : {}),
        });
        const s = shots[shots.length - 1];
        process.stdout.write(
          `${kind.name} ${s.mode}${s.mode !== mode ? ` (asked ${mode})` : ""} ${i}: paused ${s.pauseMs} ms (capture ${s.captureMs}, copy ${s.copyMs ?? "-"}), total ${s.totalMs} ms, ${s.bytesWritten} bytes, load ${load1.toFixed(2)}\n`,
        );
        // The blobs of a run are not needed again: keep the disk from filling up.
        await rm(store.blobPath(snap.ramsnap.digest as Digest), { force: true });
      }
    }
    const usual = lines.usualGap(windows);
    for (const x of shots) x.guestLostMs = Math.round(lines.lostAround(x.lostAt[0], x.lostAt[1], usual));
    const summary: Record<string, unknown> = {};
    for (const mode of MODES) {
      const s = shots.filter((x) => x.mode === mode);
      if (!s.length) continue;
      summary[mode] = {
        runs: s.length,
        pause_ms: stats(s.map((x) => x.pauseMs)),
        capture_ms: stats(s.map((x) => x.captureMs ?? 0)),
        prepare_ms: stats(s.map((x) => x.prepareMs ?? 0)),
        copy_ms: stats(s.map((x) => x.copyMs ?? 0)),
        total_ms: stats(s.map((x) => x.totalMs)),
        bytes_written: stats(s.map((x) => x.bytesWritten)),
        guest_gap_over_usual_ms: stats(s.map((x) => Math.max(0, x.guestGapMs - usual))),
        guest_lost_ms: stats(s.map((x) => x.guestLostMs ?? NaN)),
        load1: stats(s.map((x) => x.load1)),
      };
    }
    return { guest: kind, usualGapMs: Math.round(usual), summary, shots };
  } finally {
    lines?.stop();
    for (const i of await rt.list({ all: true }))
      await rt.remove(i.id, { force: true }).catch(() => undefined);
    await rt.close();
    if (!keep) await rm(dir, { recursive: true, force: true });
  }
}
