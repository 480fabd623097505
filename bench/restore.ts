/**
 * bench/restore: how fast an OVMS RAM snapshot brings a VM to running, side by side in one
 * run: cold boot of the same artifact, restore with a fresh QEMU process, restore from the
 * warm pool, and QEMU's own loadvm of the same guest as the peer. Each start is timed from
 * the start call to the guest running (QMP status) and to its first console output after.
 *
 *   node dist/bench/restore.js [--runs 20] [--cold-runs 20] [--confine on|off|both] [--keep]
 *
 * `--confine` (as root): `on` runs QEMU in its sandbox (namespaces, the QEMU user, cgroup
 * limits: ovmd's default), `off` as the QEMU user through `-runas`, without limits (what ovmd
 * did before: `ovmd --confine off --no-limits`);
 * `both` times the two side by side, their starts interleaved so that both see the same load.
 *
 * Prints a table and writes JSON to bench/results/restore-<date>.json.
 */
import { spawn } from "node:child_process";
import { copyFile, mkdir, rm, stat, writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import { join } from "node:path";
import { DEMO_CMDLINE, demoStore, percentile, writeResult } from "./bench-lib.js";
import { loadArtifact } from "../src/artifact/artifact.js";
import { PrepareCache, prepareArtifact, type PreparedArtifact } from "../src/artifact/prepare.js";
import { packSnapshot } from "../src/artifact/snapshot.js";
import { QemuRuntime } from "../src/runtime/qemu/qemu-runtime.js";
import { QmpClient } from "../src/runtime/qemu/qmp-client.js";
import { createOverlay } from "../src/artifact/qemu-img.js";

const CMDLINE = `${DEMO_CMDLINE} ovms.mode=counter`;
const MEMORY = 192 << 20;

/**
 * Sample is one start: to `running` (QMP), to the guest's first console output, and to the
 * guest being ready for work: its first counter line (a cold boot must boot, mount the
 * layered disk and start counting; a restored guest was snapshotted counting, so it is ready
 * when it runs).
 */
interface Sample {
  runningMs: number;
  firstOutputMs: number;
  readyMs: number;
}

function args(argv: string[]) {
  const a = { runs: 20, coldRuns: 20, keep: false, confine: ["on"] as ("on" | "off")[] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--runs") a.runs = Number(argv[++i]);
    else if (argv[i] === "--cold-runs") a.coldRuns = Number(argv[++i]);
    else if (argv[i] === "--keep") a.keep = true;
    else if (argv[i] === "--confine") {
      const v = argv[++i];
      if (v !== "on" && v !== "off" && v !== "both") throw new Error(`--confine ${v}: on, off or both`);
      a.confine = v === "both" ? ["on", "off"] : [v];
    } else
      throw new Error(`unknown flag ${argv[i]} (--runs N, --cold-runs N, --confine on|off|both, --keep)`);
  }
  return a;
}

/** stats is the p50 and p95 of one measure of a series, named `<name>_p50_ms`/`<name>_p95_ms`. */
function stats<N extends string>(
  xs: Sample[],
  key: keyof Sample,
  name: N,
): Record<`${N}_p50_ms` | `${N}_p95_ms`, number> {
  const v = xs.map((x) => x[key]);
  return { [`${name}_p50_ms`]: percentile(v, 50), [`${name}_p95_ms`]: percentile(v, 95) } as Record<
    `${N}_p50_ms` | `${N}_p95_ms`,
    number
  >;
}

/** firstOutput waits until a file has grown past `from` bytes and returns when that was seen. */
async function firstOutput(path: string, from: number, t0: number, timeoutMs = 60_000): Promise<number> {
  for (;;) {
    const st = await stat(path).catch(() => undefined);
    if (st && st.size > from) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`no output in ${path}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** viaRuntime times one start through the runtime API (the daemon's /start calls exactly this). */
async function viaRuntime(rt: QemuRuntime, a: PreparedArtifact, stateDir: string): Promise<Sample> {
  const t0 = performance.now();
  const info = await rt.start(a, { accel: "tcg" });
  const runningMs = performance.now() - t0;
  const serial = join(stateDir, "instances", info.id, "serial.log");
  const firstOutputMs = await firstOutput(serial, 0, t0);
  const readyMs = a.ramSnapshot ? runningMs : await lineSeen(serial, /^OVMS-COUNTER: /m, t0);
  await rt.remove(info.id, { force: true });
  return { runningMs, firstOutputMs, readyMs };
}

/** lineSeen waits until the serial log holds a line matching `re`. */
async function lineSeen(path: string, re: RegExp, t0: number, timeoutMs = 120_000): Promise<number> {
  const { readFile } = await import("node:fs/promises");
  for (;;) {
    if (re.test(await readFile(path, "utf8").catch(() => ""))) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`no line matching ${re} in ${path}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

async function main() {
  const a = args(process.argv.slice(2));
  const { dir, store } = await demoStore("ovms-bench-restore-", CMDLINE, MEMORY);
  const source = await loadArtifact(store, "bench/vm:1");
  const cache = new PrepareCache();
  const cold = await prepareArtifact(store, source, { cache });
  // One runtime per confinement, each with its own state folder (reachable by the QEMU user).
  const root = process.getuid?.() === 0;
  const rts = new Map<string, { rt: QemuRuntime; stateDir: string }>();
  for (const c of a.confine) {
    const stateDir = join(dir, `state-${c}`);
    // "on" must really be namespaces: refuse to measure something else under its name.
    const rt = await QemuRuntime.create(
      root ? { stateDir, confine: c, ...(c === "off" ? { limits: false } : {}) } : { stateDir },
    );
    rts.set(c, { rt, stateDir });
  }
  const [first] = rts.values();
  const rt = first.rt;

  // The snapshot: a counting guest, paused after a few counts.
  const src = await rt.start(cold, { accel: "tcg", name: "source" });
  await firstOutput(join(first.stateDir, "instances", src.id, "serial.log"), 200, performance.now());
  await new Promise((r) => setTimeout(r, 1000));
  const snap = await rt.snapshot(src.id, { stop: true }, (c) =>
    packSnapshot(store, source, c, "bench/vm:snap"),
  );
  const restorable = await prepareArtifact(store, await loadArtifact(store, "bench/vm:snap"), { cache });
  process.stderr.write(
    `snapshot ${snap.descriptor.digest}: ${snap.ramsnap.metadata.memory.bytes} of ${MEMORY} bytes non-zero, blob ${snap.ramsnap.size} bytes\n`,
  );

  const series: Record<string, Sample[]> = {};
  const label = (name: string, c: string) => (rts.size > 1 ? `${name} [confine ${c}]` : name);
  const push = (name: string, c: string, s: Sample) => (series[label(name, c)] ??= []).push(s);
  // Interleaved: sample i of every confinement before sample i + 1 of any.
  for (let i = 0; i < a.coldRuns; i++)
    for (const [c, r] of rts) push("cold boot", c, await viaRuntime(r.rt, cold, r.stateDir));
  for (let i = 0; i < a.runs; i++)
    for (const [c, r] of rts) push("restore (fresh QEMU)", c, await viaRuntime(r.rt, restorable, r.stateDir));
  for (const r of rts.values()) await r.rt.configurePool(restorable, 1);
  for (let i = 0; i < a.runs; i++) {
    for (const [c, r] of rts) {
      // Every pool refilled (so every start is a pool start) and settled: with two runtimes
      // interleaved, one's refill would otherwise spawn QEMU during the other's restore.
      for (const x of rts.values())
        while (x.rt.poolStatus()[0].ready < 1) await new Promise((res) => setTimeout(res, 20));
      if (rts.size > 1) await new Promise((res) => setTimeout(res, 300));
      push("restore (warm pool)", c, await viaRuntime(r.rt, restorable, r.stateDir));
    }
  }
  for (const r of rts.values()) {
    await r.rt.configurePool(restorable, 0);
    await r.rt.close();
  }
  series["QEMU loadvm"] = await loadvmSeries(dir, cold, a.runs);

  const rows = Object.entries(series).map(([name, xs]) => ({
    name,
    runs: xs.length,
    ...stats(xs, "runningMs", "running"),
    ...stats(xs, "firstOutputMs", "output"),
    ...stats(xs, "readyMs", "ready"),
  }));
  const by = Object.fromEntries(rows.map((r) => [r.name.replace(` [confine ${a.confine[0]}]`, ""), r]));
  const ratios: Record<string, number> = {
    "cold boot / warm pool (ready for work p50)":
      by["cold boot"].ready_p50_ms / by["restore (warm pool)"].ready_p50_ms,
    "cold boot / fresh restore (ready for work p50)":
      by["cold boot"].ready_p50_ms / by["restore (fresh QEMU)"].ready_p50_ms,
    "cold boot / warm pool (running p50)":
      by["cold boot"].running_p50_ms / by["restore (warm pool)"].running_p50_ms,
    "cold boot / warm pool (first output p50)":
      by["cold boot"].output_p50_ms / by["restore (warm pool)"].output_p50_ms,
    "cold boot / fresh restore (first output p50)":
      by["cold boot"].output_p50_ms / by["restore (fresh QEMU)"].output_p50_ms,
    "loadvm / warm pool (running p50)":
      by["QEMU loadvm"].running_p50_ms / by["restore (warm pool)"].running_p50_ms,
    "loadvm / fresh restore (running p50)":
      by["QEMU loadvm"].running_p50_ms / by["restore (fresh QEMU)"].running_p50_ms,
  };
  if (rts.size > 1) {
    const on = (n: string) => rows.find((r) => r.name === `${n} [confine on]`)!;
    const off = (n: string) => rows.find((r) => r.name === `${n} [confine off]`)!;
    for (const n of ["cold boot", "restore (fresh QEMU)", "restore (warm pool)"]) {
      ratios[`confine on / off, ${n} (running p50)`] = on(n).running_p50_ms / off(n).running_p50_ms;
      ratios[`confine on / off, ${n} (ready p50)`] = on(n).ready_p50_ms / off(n).ready_p50_ms;
    }
  }
  const f = (n: number) => n.toFixed(1).padStart(9);
  const w = Math.max(22, ...rows.map((r) => r.name.length));
  const lines = [
    `restore benchmark: ${MEMORY >> 20} MiB guest (microvm, TCG), ${cpus().length} CPUs; ms from start call`,
    `${"contender".padEnd(w)} runs  running p50  running p95   output p50   output p95    ready p50    ready p95`,
    ...rows.map(
      (r) =>
        `${r.name.padEnd(w)} ${String(r.runs).padStart(4)} ${f(r.running_p50_ms)}    ${f(r.running_p95_ms)}    ${f(r.output_p50_ms)}    ${f(r.output_p95_ms)}    ${f(r.ready_p50_ms)}    ${f(r.ready_p95_ms)}`,
    ),
    ...Object.entries(ratios).map(([k, v]) => `${k}: ${v.toFixed(2)}x`),
  ];
  process.stdout.write(lines.join("\n") + "\n");
  await writeResult("restore", {
    guest: { memoryBytes: MEMORY, machine: "microvm", accel: "tcg", cmdline: CMDLINE },
    confine: Object.fromEntries([...rts].map(([c, r]) => [c, r.rt.confinement])),
    snapshot: {
      digest: snap.descriptor.digest,
      blobBytes: snap.ramsnap.size,
      nonZeroBytes: snap.ramsnap.metadata.memory.bytes,
    },
    results: rows,
    ratios,
    samples: series,
  });
  if (!a.keep) await rm(dir, { recursive: true, force: true });
}

/**
 * loadvmSeries is the peer: the same guest saved with QEMU's own `savevm` (into its qcow2
 * overlay) and started with `-loadvm`, timed from process spawn to QMP running and to output.
 */
async function loadvmSeries(dir: string, a: PreparedArtifact, runs: number): Promise<Sample[]> {
  const vm = join(dir, "loadvm");
  await mkdir(vm, { recursive: true });
  const top = a.disks[a.disks.length - 1];
  const disk = join(vm, "disk.qcow2");
  await createOverlay(disk, top.path, top.format);
  const base = (serial: string, qmp: string, d: string) => [
    "-machine",
    "microvm,x-option-roms=off,rtc=on",
    "-accel",
    "tcg",
    "-cpu",
    "max",
    "-m",
    `${MEMORY >> 20}M`,
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-no-reboot",
    "-kernel",
    a.kernelPath,
    "-initrd",
    a.initrdPath!,
    "-append",
    CMDLINE,
    "-chardev",
    `file,id=s0,path=${serial}`,
    "-serial",
    "chardev:s0",
    "-drive",
    `file=${d},format=qcow2,if=none,id=disk0`,
    "-device",
    "virtio-blk-device,drive=disk0",
    "-qmp",
    `unix:${qmp},server=on,wait=off`,
  ];
  const waitQmp = async (sock: string, t0: number) => {
    for (;;) {
      try {
        return await QmpClient.connect(sock, 1000);
      } catch {
        if (performance.now() - t0 > 60_000) throw new Error("QEMU did not come up");
        await new Promise((r) => setTimeout(r, 1));
      }
    }
  };
  // Save: boot, count a little, savevm, quit.
  const q0 = spawn("qemu-system-x86_64", base(join(vm, "save.log"), join(vm, "save.sock"), disk), {
    stdio: "ignore",
  });
  const t = performance.now();
  const c0 = await waitQmp(join(vm, "save.sock"), t);
  await firstOutput(join(vm, "save.log"), 200, t);
  await new Promise((r) => setTimeout(r, 1000));
  await c0.execute("human-monitor-command", { "command-line": "savevm bench" }, 60_000);
  await c0.execute("quit").catch(() => undefined);
  await new Promise((r) => q0.on("exit", r));
  const out: Sample[] = [];
  for (let i = 0; i < runs; i++) {
    const d = join(vm, `run-${i}.qcow2`);
    await copyFile(disk, d);
    const serial = join(vm, `run-${i}.log`);
    const sock = join(vm, `run-${i}.sock`);
    await writeFile(serial, "");
    const t0 = performance.now();
    const q = spawn("qemu-system-x86_64", [...base(serial, sock, d), "-loadvm", "bench"], {
      stdio: "ignore",
    });
    const c = await waitQmp(sock, t0);
    for (;;) {
      const st = await c.execute<{ status: string }>("query-status");
      if (st.status === "running") break;
      await new Promise((r) => setTimeout(r, 1));
    }
    const runningMs = performance.now() - t0;
    const firstOutputMs = await firstOutput(serial, 0, t0);
    // loadvm resumes the counting guest too: it is ready when it runs.
    out.push({ runningMs, firstOutputMs, readyMs: runningMs });
    await c.execute("quit").catch(() => undefined);
    await new Promise((r) => q.on("exit", r));
    await rm(d, { force: true });
  }
  return out;
}

await main();
