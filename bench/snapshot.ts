/**
 * bench/snapshot: snapshots of a counting demo guest and of its clones, generation after
 * generation, in one run: for each generation how long the guest is paused (each is taken with
 * `stop`, since a clone of it is what goes on: the guest stays paused while its snapshot is
 * packed, so this pause is the whole snapshot; the pause part below is about guests that resume),
 * the ramsnap blob's bytes and how many memory blocks it stores itself (layout 2 stores only
 * what changed since its parent), and then the restore time of generation 1 against the last
 * generation (fresh QEMU each, no warm pool, interleaved so both see the same load).
 *
 * First, the pause (bench/snapshot-pause.ts): the demo guest and a 1 GiB guest that filled its
 * memory, each snapshotted while running by every method in turn (`paused`, `copy`, `live`,
 * `background`): pause, the time before it, total and bytes written, p50/p95, with the load average.
 *
 *   node dist/bench/snapshot.js [--generations 10] [--runs 10] [--pause-runs 10]
 *                               [--guests demo,fill1g] [--keep]
 *
 * `--generations 0` or `--pause-runs 0` skips that part. Prints tables and writes JSON to
 * bench/results/snapshot-<date>.json.
 */
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { loadavg } from "node:os";
import { DEMO_CMDLINE, demoStore, percentile, writeResult } from "./bench-lib.js";
import { GUESTS, measurePause } from "./snapshot-pause.js";
import { loadArtifact, type Artifact } from "../src/artifact/artifact.js";
import { PrepareCache, prepareArtifact } from "../src/artifact/prepare.js";
import { packSnapshot, type SnapshotResult } from "../src/artifact/snapshot.js";
import { QemuRuntime } from "../src/runtime/qemu/qemu-runtime.js";

const MEMORY = 192 << 20;

function args(argv: string[]) {
  const a = { generations: 10, runs: 10, pauseRuns: 10, guests: ["demo", "fill1g"], keep: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--generations") a.generations = Number(argv[++i]);
    else if (argv[i] === "--runs") a.runs = Number(argv[++i]);
    else if (argv[i] === "--pause-runs") a.pauseRuns = Number(argv[++i]);
    else if (argv[i] === "--guests") a.guests = (argv[++i] ?? "").split(",");
    else if (argv[i] === "--keep") a.keep = true;
    else
      throw new Error(
        `unknown flag ${argv[i]} (--generations N, --runs N, --pause-runs N, --guests demo,fill1g, --keep)`,
      );
  }
  for (const g of a.guests) if (!GUESTS[g]) throw new Error(`--guests: no guest ${g} (demo, fill1g)`);
  return a;
}

/** counterAbove waits until the instance's console shows a counter line above `n`; returns the highest. */
async function counterAbove(serial: string, n: number, timeoutMs = 300_000): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const seen = [...(await readFile(serial, "utf8").catch(() => "")).matchAll(/^OVMS-COUNTER: (\d+)/gm)].map(
      (m) => Number(m[1]),
    );
    const top = seen.length ? Math.max(...seen) : -1;
    if (top > n) return top;
    if (Date.now() - t0 > timeoutMs) throw new Error(`no counter above ${n} in ${serial}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface Generation {
  generation: number;
  pauseMs: number;
  blobBytes: number;
  storedBlocks: number;
  blocks: number;
  storedBytes: number;
  memoryBytes: number;
  parents: number;
  /** blobBytes as a share of generation 1's. */
  ofFirst: number;
}

/** pausePart measures the pause of each guest kind and prints its table. */
async function pausePart(a: ReturnType<typeof args>) {
  const out = [];
  for (const g of a.guests) out.push(await measurePause(GUESTS[g], a.pauseRuns, a.keep));
  console.log(
    "\nguest | mode | pause ms p50/p95 | prepare ms p50 | total ms p50/p95 | bytes written p50 | guest lost ms p50/p95 | console gap over usual ms p50/p95 | load1 p50",
  );
  for (const r of out)
    for (const [mode, s] of Object.entries(r.summary) as [string, any][])
      console.log(
        `${r.guest.name} | ${mode} | ${s.pause_ms.p50}/${s.pause_ms.p95} | ${s.prepare_ms.p50} | ${s.total_ms.p50}/${s.total_ms.p95} | ${s.bytes_written.p50} | ${s.guest_lost_ms.p50}/${s.guest_lost_ms.p95} | ${s.guest_gap_over_usual_ms.p50}/${s.guest_gap_over_usual_ms.p95} | ${s.load1.p50}`,
      );
  return out;
}

async function main() {
  const a = args(process.argv.slice(2));
  const pauses = a.pauseRuns > 0 ? await pausePart(a) : [];
  if (a.generations <= 0) {
    await writeResult("snapshot", { pauses, loadavg: loadavg() });
    return;
  }
  const { dir, store } = await demoStore("ovms-bench-snapshot-", `${DEMO_CMDLINE} ovms.mode=counter`, MEMORY);
  const rt = await QemuRuntime.create({ stateDir: store.workDir });
  const cache = new PrepareCache();
  const serial = (id: string) => join(store.workDir, "instances", id, "serial.log");
  const gens: Generation[] = [];
  const artifacts: Artifact[] = [];
  try {
    let source = await loadArtifact(store, "bench/vm:1");
    let info = await rt.start(await prepareArtifact(store, source, { cache }), { accel: "tcg" });
    let last = await counterAbove(serial(info.id), 2);
    for (let g = 1; g <= a.generations; g++) {
      const t0 = performance.now();
      const snap: SnapshotResult = await rt.snapshot(info.id, { stop: true }, (c) =>
        packSnapshot(store, source, c, `bench/vm:gen${g}`),
      );
      const pauseMs = performance.now() - t0;
      const r = snap.ramsnap;
      gens.push({
        generation: g,
        pauseMs: Math.round(pauseMs),
        blobBytes: r.size,
        storedBlocks: r.stored.blocks,
        blocks: r.metadata.memory.blocks,
        storedBytes: r.stored.bytes,
        memoryBytes: r.metadata.memory.bytes,
        parents: r.parents.length,
        ofFirst: gens.length ? r.size / gens[0].blobBytes : 1,
      });
      process.stdout.write(`generation ${g}: paused ${Math.round(pauseMs)} ms, blob ${r.size} bytes\n`);
      await rt.remove(info.id, { force: true });
      source = await loadArtifact(store, `bench/vm:gen${g}`);
      artifacts.push(source);
      if (g === a.generations) break;
      // Restore it, let the guest work (count on a few times), and snapshot the clone next.
      info = await rt.start(await prepareArtifact(store, source, { cache }), {});
      last = await counterAbove(serial(info.id), last + 2);
    }
    // Restore p50: generation 1 against the last one, interleaved.
    const first = await prepareArtifact(store, artifacts[0], { cache });
    const lastGen = await prepareArtifact(store, artifacts[artifacts.length - 1], { cache });
    const times: Record<"first" | "last", number[]> = { first: [], last: [] };
    for (let i = 0; i < a.runs; i++) {
      for (const [k, p] of [
        ["first", first],
        ["last", lastGen],
      ] as const) {
        const t0 = performance.now();
        const s = await rt.start(p, {});
        times[k].push(performance.now() - t0);
        await rt.remove(s.id, { force: true });
      }
    }
    const restore = {
      generation1_p50_ms: percentile(times.first, 50),
      generation1_p95_ms: percentile(times.first, 95),
      [`generation${a.generations}_p50_ms`]: percentile(times.last, 50),
      [`generation${a.generations}_p95_ms`]: percentile(times.last, 95),
      runs: a.runs,
    };
    const pauses = gens.map((g) => g.pauseMs);
    console.log("\ngeneration | paused ms | blob bytes | % of gen 1 | blocks stored/all | parents");
    for (const g of gens)
      console.log(
        `${g.generation} | ${g.pauseMs} | ${g.blobBytes} | ${(g.ofFirst * 100).toFixed(1)} | ${g.storedBlocks}/${g.blocks} | ${g.parents}`,
      );
    console.log(`restore (fresh QEMU, ms): ${JSON.stringify(restore)}`);
    await writeResult("snapshot", {
      pauses,
      loadavg: loadavg(),
      memoryBytes: MEMORY,
      generations: gens,
      pause: {
        p50_ms: percentile(pauses, 50),
        p95_ms: percentile(pauses, 95),
        note: "generations are taken with stop: the guest stays paused while the snapshot is packed, pause = the whole snapshot",
      },
      restore,
    });
  } finally {
    for (const i of await rt.list({ all: true }))
      await rt.remove(i.id, { force: true }).catch(() => undefined);
    await rt.close();
    if (!a.keep) await rm(dir, { recursive: true, force: true });
  }
}

await main();
