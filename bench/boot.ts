/**
 * bench/boot: cold boot of the demo artifact through the daemon's API, timed from the
 * `POST /start` call to the guest's first console line and to its `OVMS-READY` line
 * (userspace up, layered disk mounted), on both machine models.
 *
 *   node dist/bench/boot.js [--runs 10]
 *
 * Prints a table and writes JSON to bench/results/boot-<date>.json.
 */
import { spawn } from "node:child_process";
import { rm } from "node:fs/promises";
import { cpus } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { DEMO_CMDLINE, demoStore, percentile, writeResult } from "./bench-lib.js";
import { OvmdClient } from "../src/client/client.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const CMDLINE = DEMO_CMDLINE;

const pct = percentile;

async function main(): Promise<void> {
  let runs = 10;
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--runs") runs = Number(argv[++i]);
    else throw new Error(`unknown flag ${argv[i]} (--runs N)`);
  }
  const { dir, store } = await demoStore("ovms-bench-boot-", CMDLINE, 192 << 20);
  const socket = join(dir, "ovmd.sock");
  const daemon = spawn(
    process.execPath,
    [join(ROOT, "dist/src/daemon/ovmd.js"), "--socket", socket, "--store", store.root],
    { stdio: "ignore" },
  );
  const client = new OvmdClient({ socketPath: socket });
  for (let i = 0; ; i++) {
    try {
      await client.version();
      break;
    } catch {
      if (i > 500) throw new Error("ovmd did not come up");
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  const rows = [];
  try {
    for (const machine of ["microvm", "q35"] as const) {
      const samples: { startMs: number; runningMs: number; firstLineMs: number; readyMs: number }[] = [];
      for (let i = 0; i < runs; i++) {
        const t0 = performance.now();
        const { instance_id: id } = await client.start({
          manifest: "bench/vm:1",
          overrides: { accel: "tcg", machine },
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
        samples.push({ startMs, runningMs, firstLineMs, readyMs });
        await client.stop({ instance_id: id, force: true });
        await client.remove(id);
      }
      const col = (k: keyof (typeof samples)[0]) => samples.map((s) => s[k]);
      rows.push({
        machine,
        runs,
        start_call_p50_ms: pct(col("startMs"), 50),
        first_line_p50_ms: pct(col("firstLineMs"), 50),
        first_line_p95_ms: pct(col("firstLineMs"), 95),
        ready_p50_ms: pct(col("readyMs"), 50),
        ready_p95_ms: pct(col("readyMs"), 95),
        samples,
      });
    }
  } finally {
    daemon.kill("SIGTERM");
  }
  const f = (n: number) => n.toFixed(0).padStart(8);
  process.stdout.write(
    [
      `cold boot benchmark (TCG, 192 MiB, ${cpus().length} CPUs): ms from POST /start`,
      `machine   runs   /start returns   first line p50   p95   OVMS-READY p50   p95`,
      ...rows.map(
        (r) =>
          `${r.machine.padEnd(8)} ${String(r.runs).padStart(5)} ${f(r.start_call_p50_ms)}         ${f(r.first_line_p50_ms)} ${f(r.first_line_p95_ms)} ${f(r.ready_p50_ms)}     ${f(r.ready_p95_ms)}`,
      ),
    ].join("\n") + "\n",
  );
  await writeResult("boot", { results: rows });
  await rm(dir, { recursive: true, force: true });
}

await main();
