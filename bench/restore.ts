/**
 * bench/restore: how fast an OVMS RAM snapshot brings a VM to running, side by side in one
 * run: cold boot of the same artifact, restore with a fresh QEMU process, restore from the
 * warm pool, and QEMU's own loadvm of the same guest as the peer. Each start is timed from
 * the start call to the guest running (QMP status) and to its first console output after.
 * Warm-pool starts alternate between the pool refilling after the clone's first output (its
 * default) and at once, so the cost of a refill competing with a resumed guest is seen.
 * `--network on` gives every instance a NIC with a published port (the snapshot is taken of a
 * guest with a NIC) and also times the first HTTP answer through that port; `both` runs each
 * contender with and without, side by side (loadvm runs without only).
 *
 *   node dist/bench/restore.js [--runs 20] [--cold-runs 20] [--network off|on|both]
 *                              [--confine on|off|both] [--keep]
 *
 * `--confine` (as root): `on` runs QEMU in its sandbox (namespaces, the QEMU user, cgroup
 * limits: ovmd's default), `off` as the QEMU user through `-runas`, without limits (what ovmd
 * did before: `ovmd --confine off --no-limits`). With `both` for either flag, the variants'
 * starts are interleaved so that all see the same load.
 *
 * Prints a table and writes JSON to bench/results/restore-<date>.json.
 */
import { spawn } from "node:child_process";
import { copyFile, mkdir, rm, stat, writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import { join } from "node:path";
import {
  DEMO_CMDLINE,
  confineFlag,
  demoStore,
  httpAnswer,
  networkFlag,
  percentile,
  writeResult,
} from "./bench-lib.js";
import { loadArtifact } from "../src/artifact/artifact.js";
import { PrepareCache, prepareArtifact, type PreparedArtifact } from "../src/artifact/prepare.js";
import { packSnapshot, type SnapshotResult } from "../src/artifact/snapshot.js";
import { QemuRuntime } from "../src/runtime/qemu/qemu-runtime.js";
import { QmpClient } from "../src/runtime/qemu/qmp-client.js";
import { createOverlay } from "../src/artifact/qemu-img.js";

// httpd: the counter of ovms.mode=counter plus busybox httpd (answers only with a NIC).
const CMDLINE = `${DEMO_CMDLINE} ovms.mode=httpd`;
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
  /** With a network: to the first HTTP answer through the published port. */
  httpMs?: number;
}

type Net = "off" | "on";
type Confine = "on" | "off";

function args(argv: string[]) {
  const a = { runs: 20, coldRuns: 20, keep: false, network: ["off"] as Net[], confine: ["on"] as Confine[] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--runs") a.runs = Number(argv[++i]);
    else if (argv[i] === "--cold-runs") a.coldRuns = Number(argv[++i]);
    else if (argv[i] === "--keep") a.keep = true;
    else if (argv[i] === "--network") a.network = networkFlag(argv[++i]);
    else if (argv[i] === "--confine") a.confine = confineFlag(argv[++i]);
    else
      throw new Error(
        `unknown flag ${argv[i]} (--runs N, --cold-runs N, --network off|on|both, --confine on|off|both, --keep)`,
      );
  }
  return a;
}

/** stats is the p50 and p95 of one measure of a series, named `<name>_p50_ms`/`<name>_p95_ms`. */
function stats<N extends string>(
  xs: Sample[],
  key: keyof Sample,
  name: N,
): Record<`${N}_p50_ms` | `${N}_p95_ms`, number> {
  const v = xs.map((x) => x[key]).filter((n): n is number => n !== undefined);
  if (!v.length) return {} as Record<`${N}_p50_ms` | `${N}_p95_ms`, number>;
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

/**
 * viaRuntime times one start through the runtime API (the daemon's /start calls exactly
 * this); with the network on, the instance publishes guest port 80 on a free host port.
 */
async function viaRuntime(rt: QemuRuntime, a: PreparedArtifact, stateDir: string, net: Net): Promise<Sample> {
  const t0 = performance.now();
  const info = await rt.start(a, { accel: "tcg", ...(net === "on" ? { ports: [{ guestPort: 80 }] } : {}) });
  const runningMs = performance.now() - t0;
  const serial = join(stateDir, "instances", info.id, "serial.log");
  const firstOutputMs = await firstOutput(serial, 0, t0);
  const readyMs = a.ramSnapshot ? runningMs : await lineSeen(serial, /^OVMS-COUNTER: /m, t0);
  const sample: Sample = { runningMs, firstOutputMs, readyMs };
  if (net === "on") sample.httpMs = await httpAnswer(info.network.ports[0].hostPort, t0);
  await rt.remove(info.id, { force: true });
  return sample;
}

/** label names a series; with both settings of a flag in one run, each gets its own. */
function label(name: string, c: Confine, net: Net, confines: Confine[], nets: Net[]): string {
  const tags = [
    ...(confines.length === 2 ? [`confine ${c}`] : []),
    ...(nets.length === 2 ? [`network ${net}`] : []),
  ];
  return tags.length ? `${name} [${tags.join(", ")}]` : name;
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

  // One snapshot per network setting: a counting guest (with a NIC for "on"), paused after a few counts.
  const snaps: Partial<Record<Net, { prepared: PreparedArtifact; result: SnapshotResult }>> = {};
  for (const net of a.network) {
    const src = await rt.start(cold, {
      accel: "tcg",
      name: `source-${net}`,
      network: net === "on" ? "user" : "none",
    });
    await firstOutput(join(first.stateDir, "instances", src.id, "serial.log"), 200, performance.now());
    await new Promise((r) => setTimeout(r, 1000));
    const ref = `bench/vm:snap-net-${net}`;
    const result = await rt.snapshot(src.id, { stop: true }, (c) => packSnapshot(store, source, c, ref));
    snaps[net] = {
      prepared: await prepareArtifact(store, await loadArtifact(store, ref), { cache }),
      result,
    };
    process.stderr.write(
      `snapshot (network ${net}) ${result.descriptor.digest}: ${result.ramsnap.metadata.memory.bytes} of ${MEMORY} bytes non-zero, blob ${result.ramsnap.size} bytes\n`,
    );
  }

  const series: Record<string, Sample[]> = {};
  const add = (name: string, c: Confine, net: Net, s: Sample) =>
    (series[label(name, c, net, a.confine, a.network)] ??= []).push(s);
  // Every variant's sample i before any variant's sample i + 1, so a change of load hits all alike.
  const variants = a.confine.flatMap((c) => a.network.map((net) => ({ c, net, ...rts.get(c)! })));
  for (let i = 0; i < a.coldRuns; i++)
    for (const v of variants) add("cold boot", v.c, v.net, await viaRuntime(v.rt, cold, v.stateDir, v.net));
  for (let i = 0; i < a.runs; i++)
    for (const v of variants)
      add(
        "restore (fresh QEMU)",
        v.c,
        v.net,
        await viaRuntime(v.rt, snaps[v.net]!.prepared, v.stateDir, v.net),
      );
  for (const v of variants) await v.rt.pool.configure(snaps[v.net]!.prepared, 1);
  // Pool starts alternate between the pool's two refill timings: after the clone's first output
  // (the default: the refill does not compete with the guest just resumed) and at once.
  for (let i = 0; i < a.runs * 2; i++) {
    const when = i % 2 ? "at-once" : "after-first-output";
    for (const v of variants) {
      v.rt.pool.refillWhen = when;
      // Every pool refilled (so every start is a pool start) and settled: otherwise one pool's
      // refill would spawn QEMU during another variant's restore.
      for (const x of variants)
        while ((x.rt.pool.status().find((p) => p.digest === snaps[x.net]!.prepared.digest)?.ready ?? 0) < 1)
          await new Promise((r) => setTimeout(r, 20));
      if (variants.length > 1) await new Promise((r) => setTimeout(r, 300));
      add(
        when === "at-once" ? "restore (warm pool, refill at once)" : "restore (warm pool)",
        v.c,
        v.net,
        await viaRuntime(v.rt, snaps[v.net]!.prepared, v.stateDir, v.net),
      );
    }
  }
  for (const v of variants) await v.rt.pool.configure(snaps[v.net]!.prepared, 0);
  for (const r of rts.values()) await r.rt.close();
  if (a.network.includes("off"))
    series[label("QEMU loadvm", a.confine[0], "off", [], a.network)] = await loadvmSeries(dir, cold, a.runs);

  const rows = Object.entries(series).map(([name, xs]) => ({
    name,
    runs: xs.length,
    ...stats(xs, "runningMs", "running"),
    ...stats(xs, "firstOutputMs", "output"),
    ...stats(xs, "readyMs", "ready"),
    ...stats(xs, "httpMs", "http"),
  }));
  // The classic ratios compare the contenders under the first variant (confine on, network off).
  const firstName = (n: string) => label(n, a.confine[0], a.network[0], a.confine, a.network);
  const by = Object.fromEntries(
    ["cold boot", "restore (fresh QEMU)", "restore (warm pool)", "QEMU loadvm"].map((n) => [
      n,
      rows.find(
        (r) => r.name === (n === "QEMU loadvm" ? label(n, a.confine[0], "off", [], a.network) : firstName(n)),
      )!,
    ]),
  );
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
      by["QEMU loadvm"]?.running_p50_ms / by["restore (warm pool)"].running_p50_ms,
    "loadvm / fresh restore (running p50)":
      by["QEMU loadvm"]?.running_p50_ms / by["restore (fresh QEMU)"].running_p50_ms,
  };
  const row = (n: string, c: Confine, net: Net) =>
    rows.find((r) => r.name === label(n, c, net, a.confine, a.network))!;
  for (const n of ["cold boot", "restore (fresh QEMU)", "restore (warm pool)"]) {
    if (a.network.length === 2) {
      const on = row(n, a.confine[0], "on");
      const off = row(n, a.confine[0], "off");
      ratios[`${n}: network on / off (running p50)`] = on.running_p50_ms / off.running_p50_ms;
      ratios[`${n}: network on / off (ready p50)`] = on.ready_p50_ms / off.ready_p50_ms;
    }
    if (a.confine.length === 2) {
      const on = row(n, "on", a.network[0]);
      const off = row(n, "off", a.network[0]);
      ratios[`${n}: confine on / off (running p50)`] = on.running_p50_ms / off.running_p50_ms;
      ratios[`${n}: confine on / off (ready p50)`] = on.ready_p50_ms / off.ready_p50_ms;
    }
  }
  const atOnce = rows.find((r) => r.name === firstName("restore (warm pool, refill at once)"));
  if (atOnce)
    ratios["warm pool: refill at once / after first output (first output p50)"] =
      atOnce.output_p50_ms / by["restore (warm pool)"].output_p50_ms;
  for (const k of Object.keys(ratios)) if (!Number.isFinite(ratios[k])) delete ratios[k];
  const f = (n: number | undefined) => (n === undefined ? "—" : n.toFixed(1)).padStart(9);
  const w = Math.max(22, ...rows.map((r) => r.name.length));
  const lines = [
    `restore benchmark: ${MEMORY >> 20} MiB guest (microvm, TCG), ${cpus().length} CPUs; ms from start call; http: first answer through the published port`,
    `${"contender".padEnd(w)} runs  running p50  running p95   output p50   output p95    ready p50    ready p95     http p50     http p95`,
    ...rows.map(
      (r) =>
        `${r.name.padEnd(w)} ${String(r.runs).padStart(4)} ${f(r.running_p50_ms)}    ${f(r.running_p95_ms)}    ${f(r.output_p50_ms)}    ${f(r.output_p95_ms)}    ${f(r.ready_p50_ms)}    ${f(r.ready_p95_ms)}    ${f(r.http_p50_ms)}    ${f(r.http_p95_ms)}`,
    ),
    ...Object.entries(ratios).map(([k, v]) => `${k}: ${v.toFixed(2)}x`),
  ];
  process.stdout.write(lines.join("\n") + "\n");
  await writeResult("restore", {
    guest: { memoryBytes: MEMORY, machine: "microvm", accel: "tcg", cmdline: CMDLINE },
    network: a.network,
    confine: Object.fromEntries([...rts].map(([c, r]) => [c, r.rt.confinement])),
    snapshots: Object.fromEntries(
      Object.entries(snaps).map(([net, { result }]) => [
        `network ${net}`,
        {
          digest: result.descriptor.digest,
          blobBytes: result.ramsnap.size,
          nonZeroBytes: result.ramsnap.metadata.memory.bytes,
        },
      ]),
    ),
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
