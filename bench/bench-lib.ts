import { execFile, execFileSync, spawn } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { mkdir, open, rm, writeFile } from "node:fs/promises";
import { cpus, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build, type BuildResult } from "../src/artifact/build.js";
import type { Store } from "../src/store/store.js";

/** Shared parts of bench/pull.ts and bench/push.ts: flags, test data, timing, report. */

/** ROOT is the repository root (benches run from dist/bench/). */
export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const OVM = join(ROOT, "dist/src/cli/ovm.js");

/** BenchArgs are the flags every bench takes. */
export interface BenchArgs {
  sizeMiB: number;
  runs: number;
  concurrency: number;
  keep: boolean;
}

/** parseArgs reads `--size-mib N --runs N --concurrency N --keep`. */
export function parseArgs(argv: string[]): BenchArgs {
  const a: BenchArgs = { sizeMiB: 2048, runs: 5, concurrency: 4, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < 1) throw new Error(`${k} needs a whole number`);
      return n;
    };
    if (k === "--size-mib") a.sizeMiB = v();
    else if (k === "--runs") a.runs = v();
    else if (k === "--concurrency") a.concurrency = v();
    else if (k === "--keep") a.keep = true;
    else throw new Error(`unknown flag ${k} (--size-mib N, --runs N, --concurrency N, --keep)`);
  }
  return a;
}

/** run runs a command and resolves with its stdout, rejecting with its stderr. */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { env, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(" ")}: ${stderr || err.message}`)) : resolve(stdout),
    ),
  );
}

/** timed runs a command and returns its wall-clock seconds (process start included, as a user sees it). */
export async function timed(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<number> {
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(cmd, args, { env: env ?? process.env, stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("exit", (code) =>
      code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(" ")} exited ${code}: ${err}`)),
    );
  });
  return (performance.now() - t0) / 1000;
}

/** randomFile writes `bytes` of random (incompressible) data, generated in 8 MiB blocks. */
export async function randomFile(path: string, bytes: number): Promise<void> {
  const fh = await open(path, "w");
  const buf = Buffer.allocUnsafe(8 << 20);
  try {
    for (let left = bytes; left > 0;) {
      const n = Math.min(left, buf.length);
      randomFillSync(buf, 0, n);
      await fh.write(buf, 0, n);
      left -= n;
    }
  } finally {
    await fh.close();
  }
}

/**
 * makeBenchArtifact builds an OVMS artifact of about `sizeMiB` into `store`: a kernel (4%), an
 * initrd (6%), a qcow2 base disk (55%) and a qcow2 diff on it (35%), all random data.
 */
export async function makeBenchArtifact(
  store: Store,
  dir: string,
  sizeMiB: number,
  tag: string,
): Promise<BuildResult> {
  await mkdir(dir, { recursive: true });
  const mib = (f: number) => Math.max(1, Math.round(sizeMiB * f)) << 20;
  const kernel = join(dir, "vmlinuz");
  const initrd = join(dir, "initrd.img");
  const baseRaw = join(dir, "base.raw");
  const base = join(dir, "base.qcow2");
  const diffData = join(dir, "diff.bin");
  const diff = join(dir, "diff.qcow2");
  await randomFile(kernel, mib(0.04));
  await randomFile(initrd, mib(0.06));
  await randomFile(baseRaw, mib(0.55));
  await run("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", baseRaw, base]);
  await rm(baseRaw);
  const diffBytes = mib(0.35);
  await randomFile(diffData, diffBytes);
  await run("qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-b",
    base,
    "-F",
    "qcow2",
    diff,
    String(Math.max(diffBytes, mib(0.55))),
  ]);
  await run("qemu-io", ["-f", "qcow2", "-c", `write -s ${diffData} 0 ${diffBytes}`, diff]);
  await rm(diffData);
  const built = await build(
    store,
    {
      name: "bench/vm",
      version: "1",
      kernel: { path: kernel, args: "console=ttyS0" },
      initrd: { path: initrd },
      disks: [{ path: base }, { path: diff }],
      metadata: { created: "2026-01-01T00:00:00Z" },
    },
    tag,
  );
  await rm(dir, { recursive: true, force: true });
  return built;
}

/** median of a list of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Series is the timings of one contender. */
export interface Series {
  name: string;
  command: string;
  seconds: number[];
}

/** report prints a table of medians and throughputs and writes the JSON result file; it returns its path. */
export async function report(
  kind: "pull" | "push",
  args: BenchArgs,
  bytes: number,
  series: Series[],
  ratios: Record<string, number>,
  extra: Record<string, unknown> = {},
): Promise<string> {
  const rows = series.map((s) => {
    const med = median(s.seconds);
    return {
      name: s.name,
      median: med,
      min: Math.min(...s.seconds),
      max: Math.max(...s.seconds),
      mibps: bytes / (1 << 20) / med,
    };
  });
  const w = Math.max(...rows.map((r) => r.name.length), 10);
  const lines = [
    `${kind} benchmark: ${(bytes / (1 << 20)).toFixed(0)} MiB artifact, ${args.runs} runs each (alternating), concurrency ${args.concurrency}, ${cpus().length} CPUs`,
    `${"contender".padEnd(w)}  median s   min s    max s    MiB/s (median)`,
    ...rows.map(
      (r) =>
        `${r.name.padEnd(w)}  ${r.median.toFixed(3).padStart(7)}  ${r.min.toFixed(3).padStart(7)}  ${r.max.toFixed(3).padStart(7)}  ${r.mibps.toFixed(0).padStart(8)}`,
    ),
    ...Object.entries(ratios).map(([k, v]) => `${k}: ${v.toFixed(2)}`),
  ];
  process.stdout.write(lines.join("\n") + "\n");
  return writeResult(kind, { bytes, args, results: rows, runs: series, ratios, ...extra });
}

export { DEMO_CMDLINE } from "../scripts/demo-guest.js";

/** demoAssetsDir builds the demo VM's parts once (scripts/demo-assets.sh) and returns their folder. */
export function demoAssetsDir(): string {
  const out = execFileSync("bash", [join(ROOT, "scripts/demo-assets.sh")], { encoding: "utf8" }).trim();
  return out.split("\n").pop()!;
}

/**
 * demoStore makes a temp folder QEMU's unprivileged user can reach, with a store holding the
 * demo VM (from scripts/demo-assets.sh) as `bench/vm:1`.
 */
export async function demoStore(
  prefix: string,
  cmdline: string,
  memory: number,
): Promise<{ dir: string; store: Store }> {
  const { mkdtemp, chmod } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const { Store } = await import("../src/store/store.js");
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await chmod(dir, 0o755);
  const assets = demoAssetsDir();
  const store = await Store.open(join(dir, "store"));
  await build(
    store,
    {
      name: "bench/vm",
      version: "1",
      kernel: { path: join(assets, "vmlinuz"), args: cmdline },
      initrd: { path: join(assets, "initrd.img") },
      disks: [{ path: join(assets, "base.qcow2") }, { path: join(assets, "diff.qcow2") }],
      resources: { memory, vcpus: 1 },
    },
    "bench/vm:1",
  );
  return { dir, store };
}

/** networkFlag reads `--network off|on|both` into the settings to run, off first. */
export function networkFlag(v: string | undefined): ("off" | "on")[] {
  if (v === "off" || v === "on") return [v];
  if (v === "both") return ["off", "on"];
  throw new Error(`--network takes off, on or both, not ${v}`);
}

/** confineFlag reads `--confine on|off|both` into the confinement modes to compare. */
export function confineFlag(v: string | undefined): ("on" | "off")[] {
  if (v === "on" || v === "off") return [v];
  if (v === "both") return ["on", "off"];
  throw new Error(`--confine takes on, off or both, not ${v}`);
}

/**
 * httpAnswer polls `http://127.0.0.1:PORT/cgi-bin/state` (the demo guest's httpd, through a
 * published port) every 5 ms until it answers 200, and returns the ms since `t0`.
 */
export async function httpAnswer(port: number, t0: number, timeoutMs = 120_000): Promise<number> {
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/cgi-bin/state`, { signal: AbortSignal.timeout(5000) });
      await r.arrayBuffer();
      if (r.status === 200) return performance.now() - t0;
    } catch {
      // not listening yet: SLIRP resets the connection while nothing listens in the guest
    }
    if (performance.now() - t0 > timeoutMs) throw new Error(`no HTTP answer on port ${port}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** percentile of a list of numbers (nearest rank). */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

/**
 * writeResult writes one benchmark's machine-readable result to
 * bench/results/<kind>-<date>.json, with the host it ran on, and prints its path.
 */
export async function writeResult(kind: string, body: Record<string, unknown>): Promise<string> {
  const dir = join(ROOT, "bench", "results");
  await mkdir(dir, { recursive: true });
  const path = join(
    dir,
    `${kind}-${new Date().toISOString().replace(/[:]/g, "-").replace(/\..+$/, "")}.json`,
  );
  const host = {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    memoryBytes: totalmem(),
    node: process.version,
    // What else ran: the figures of a 2-core machine depend on it.
    loadavg: loadavg().map((l) => Math.round(l * 100) / 100),
  };
  await writeFile(
    path,
    JSON.stringify({ kind, date: new Date().toISOString(), host, ...body }, null, 2) + "\n",
  );
  process.stdout.write(`results: ${path}\n`);
  return path;
}
