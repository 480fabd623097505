/**
 * bench/boot: cold boot of the demo artifact through the daemon's API, timed from the
 * `POST /start` call to the guest's first console line and to its `OVMS-READY` line
 * (userspace up, layered disk mounted, and with a NIC its DHCP lease taken), on both machine
 * models.
 *
 *   node dist/bench/boot.js [--runs 10] [--network off|on|both] [--confine on|off|both]
 *
 * `--network on` publishes guest port 80 and also times the first HTTP answer of the guest's
 * httpd through it. `--confine` (as root) chooses the daemon's `--confine`: `on` runs QEMU in
 * its sandbox (namespaces, the QEMU user, cgroup limits: the default), `off` as the QEMU user
 * through `-runas` without limits (`--confine off --no-limits`: what ovmd did before). With
 * `both`, one daemon per confinement mode serves the same store and the variants are
 * interleaved run by run, so a change of load hits every variant alike.
 *
 * Prints a table and writes JSON to bench/results/boot-<date>.json.
 */
import { spawn } from "node:child_process";
import { rm } from "node:fs/promises";
import { cpus } from "node:os";
import { join } from "node:path";
import {
  DEMO_CMDLINE,
  ROOT,
  confineFlag,
  demoStore,
  httpAnswer,
  networkFlag,
  percentile,
  writeResult,
} from "./bench-lib.js";
import { OvmdClient } from "../src/client/client.js";

// httpd: busybox httpd in the guest (it answers only with a NIC) and a counter.
const CMDLINE = `${DEMO_CMDLINE} ovms.mode=httpd`;

const pct = percentile;

type Sample = { startMs: number; runningMs: number; firstLineMs: number; readyMs: number; httpMs?: number };

async function main(): Promise<void> {
  let runs = 10;
  let nets: ("off" | "on")[] = ["off"];
  let confine: ("on" | "off")[] = ["on"];
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--runs") runs = Number(argv[++i]);
    else if (argv[i] === "--network") nets = networkFlag(argv[++i]);
    else if (argv[i] === "--confine") confine = confineFlag(argv[++i]);
    else throw new Error(`unknown flag ${argv[i]} (--runs N, --network off|on|both, --confine on|off|both)`);
  }
  const { dir, store } = await demoStore("ovms-bench-boot-", CMDLINE, 192 << 20);
  const daemons = new Map<string, { proc: ReturnType<typeof spawn>; client: OvmdClient }>();
  for (const c of confine) {
    const socket = join(dir, `ovmd-${c}.sock`);
    const proc = spawn(
      process.execPath,
      [
        join(ROOT, "dist/src/daemon/ovmd.js"),
        "--socket",
        socket,
        "--store",
        store.root,
        "--state-dir",
        join(dir, `state-${c}`),
        ...(process.getuid?.() === 0 ? ["--confine", c, ...(c === "off" ? ["--no-limits"] : [])] : []),
      ],
      { stdio: "ignore" },
    );
    const client = new OvmdClient({ socketPath: socket });
    daemons.set(c, { proc, client });
    for (let i = 0; ; i++) {
      try {
        await client.version();
        break;
      } catch {
        if (i > 500) throw new Error(`ovmd --confine ${c} did not come up`);
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  }
  const variants = confine.flatMap((c) => nets.map((net) => ({ confine: c, network: net })));
  const rows = [];
  try {
    for (const machine of ["microvm", "q35"] as const) {
      const samples = variants.map(() => [] as Sample[]);
      for (let i = 0; i < runs; i++) {
        for (const [v, { confine: c, network: net }] of variants.entries()) {
          const { client } = daemons.get(c)!;
          const t0 = performance.now();
          const { instance_id: id } = await client.start({
            manifest: "bench/vm:1",
            overrides: { accel: "tcg", machine, ...(net === "on" ? { ports: [{ guest_port: 80 }] } : {}) },
          });
          const startMs = performance.now() - t0;
          let runningMs = NaN;
          let firstLineMs = NaN;
          let readyMs = NaN;
          while (Number.isNaN(readyMs)) {
            if (Number.isNaN(runningMs) && (await client.status(id)).state === "running")
              runningMs = performance.now() - t0;
            const lines: string[] = [];
            for await (const r of await client.logs(id)) lines.push(r.line);
            const now = performance.now() - t0;
            if (Number.isNaN(firstLineMs) && lines.some((l) => l.trim() !== "")) firstLineMs = now;
            if (lines.includes("OVMS-READY")) readyMs = now;
            if (now > 120_000) throw new Error(`instance ${id} not ready after 120 s`);
            await new Promise((r) => setTimeout(r, 5));
          }
          const sample: Sample = { startMs, runningMs, firstLineMs, readyMs };
          if (net === "on")
            sample.httpMs = await httpAnswer((await client.status(id)).network.ports[0].host_port, t0);
          samples[v].push(sample);
          await client.stop({ instance_id: id, force: true });
          await client.remove(id);
        }
      }
      for (const [v, { confine: c, network: net }] of variants.entries()) {
        const col = (k: keyof Sample) =>
          samples[v].map((s) => s[k]).filter((n): n is number => n !== undefined);
        rows.push({
          machine,
          confine: c,
          network: net,
          runs,
          start_call_p50_ms: pct(col("startMs"), 50),
          first_line_p50_ms: pct(col("firstLineMs"), 50),
          first_line_p95_ms: pct(col("firstLineMs"), 95),
          ready_p50_ms: pct(col("readyMs"), 50),
          ready_p95_ms: pct(col("readyMs"), 95),
          ...(net === "on"
            ? { http_p50_ms: pct(col("httpMs"), 50), http_p95_ms: pct(col("httpMs"), 95) }
            : {}),
          samples: samples[v],
        });
      }
    }
  } finally {
    for (const d of daemons.values()) d.proc.kill("SIGTERM");
  }
  const f = (n: number | undefined) => (n === undefined ? "—" : n.toFixed(0)).padStart(8);
  process.stdout.write(
    [
      `cold boot benchmark (TCG, 192 MiB, ${cpus().length} CPUs): ms from POST /start; http: first answer through the published port`,
      `machine  confine  network  runs   /start returns   first line p50   p95   OVMS-READY p50   p95   http p50      p95`,
      ...rows.map(
        (r) =>
          `${r.machine.padEnd(8)} ${r.confine.padEnd(8)} ${r.network.padEnd(7)} ${String(r.runs).padStart(5)} ${f(r.start_call_p50_ms)}         ${f(r.first_line_p50_ms)} ${f(r.first_line_p95_ms)} ${f(r.ready_p50_ms)}     ${f(r.ready_p95_ms)} ${f(r.http_p50_ms)} ${f(r.http_p95_ms)}`,
      ),
    ].join("\n") + "\n",
  );
  await writeResult("boot", { cmdline: CMDLINE, network: nets, confine, results: rows });
  await rm(dir, { recursive: true, force: true });
}

await main();
