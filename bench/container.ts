/**
 * bench/container: container images as VMs (ovm convert, ovm run), against the demo VM.
 *
 *   node dist/bench/container.js [--runs 10] [--convert-runs 3] [--base-mib 64] [--files 2000]
 *
 * 1. Conversion time, through the CLI (`ovm --json convert oci:DIR -t …`), of two images that
 *    share a base layer (busybox + `--files` files of `--base-mib` MiB of random data; each has
 *    its own small top layer): image A into an empty store (cold), then image B into the same
 *    store (its base layer comes from the layer cache), and image B into an empty store (cold),
 *    `--convert-runs` times each, fresh stores every time.
 * 2. The time from `ovm run` (the CLI process started) to the first byte of the program's
 *    output (`ovm run --rm --accel tcg IMAGE -- echo hello`), against a plain cold boot of the
 *    demo VM (`ovm run --rm --accel tcg demo`): to its first console line and to its
 *    `OVMS-READY` line (then Ctrl-C stops it); `--runs` runs each, alternating, one warm daemon.
 *
 * Prints a table and writes JSON to bench/results/container-<date>.json.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { DEMO_CMDLINE, OVM, ROOT, median, percentile, run, writeResult } from "./bench-lib.js";
import { baseLayer, topLayer, writeImageLayout, type TarEntry } from "../test/convert/image-fixture.js";

interface Args {
  runs: number;
  convertRuns: number;
  baseMiB: number;
  files: number;
}

function parse(argv: string[]): Args {
  const a: Args = { runs: 10, convertRuns: 3, baseMiB: 64, files: 2000 };
  for (let i = 0; i < argv.length; i++) {
    const n = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1) throw new Error(`${argv[i - 1]} needs a whole number`);
      return v;
    };
    if (argv[i] === "--runs") a.runs = n();
    else if (argv[i] === "--convert-runs") a.convertRuns = n();
    else if (argv[i] === "--base-mib") a.baseMiB = n();
    else if (argv[i] === "--files") a.files = n();
    else throw new Error(`unknown flag ${argv[i]} (--runs N, --convert-runs N, --base-mib N, --files N)`);
  }
  return a;
}

/** dataFiles makes `count` files of pseudo-random bytes (a fixed seed: the same image every time). */
function dataFiles(count: number, totalMiB: number): TarEntry[] {
  const per = Math.floor((totalMiB << 20) / count);
  const out: TarEntry[] = [];
  let seed = Buffer.from("ovms-bench");
  for (let i = 0; i < count; i++) {
    const chunks: Buffer[] = [];
    for (let n = 0; n < per; n += 32) {
      seed = createHash("sha256").update(seed).digest();
      chunks.push(seed);
    }
    out.push({
      path: `usr/share/data/${i % 50}/file-${i}.bin`,
      data: Buffer.concat(chunks).subarray(0, per),
    });
  }
  return out;
}

/** cli runs `ovm` with `env` and resolves with its stdout. */
const cli = (args: string[], env: NodeJS.ProcessEnv) => run(process.execPath, [OVM, ...args], env);

/**
 * firstOutput runs `ovm ARGS` and times, from the process start, its first stdout byte, the
 * first line matching `mark` (when given; then it sends SIGINT, as Ctrl-C would) and its exit.
 * A run that takes more than 5 minutes fails the benchmark.
 */
function firstOutput(
  args: string[],
  env: NodeJS.ProcessEnv,
  mark?: RegExp,
): Promise<{ firstMs: number; markMs: number; exitMs: number; out: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [OVM, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    const timer = setTimeout(() => child.kill("SIGINT"), 300_000);
    let firstMs = NaN;
    let markMs = NaN;
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => {
      if (Number.isNaN(firstMs)) firstMs = performance.now() - t0;
      out += d.toString();
      if (mark && Number.isNaN(markMs) && mark.test(out)) {
        markMs = performance.now() - t0;
        child.kill("SIGINT");
      }
    });
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code !== 0 || (mark && Number.isNaN(markMs)))
        return reject(new Error(`ovm ${args.join(" ")} exited ${code}: ${err}`));
      resolve({ firstMs, markMs, exitMs: performance.now() - t0, out });
    });
  });
}

async function main(): Promise<void> {
  const args = parse(process.argv.slice(2));
  const dir = await mkdtemp(join(tmpdir(), "ovms-bench-container-"));
  await chmod(dir, 0o755); // as root, QEMU runs as nobody and must reach the instance folders
  const load0 = loadavg();
  try {
    // 1. Conversion: two images sharing a base layer.
    const base = [...baseLayer(), ...dataFiles(args.files, args.baseMiB)];
    const imgA = join(dir, "image-a");
    const imgB = join(dir, "image-b");
    await writeImageLayout(imgA, "1", [base, topLayer()], { Cmd: ["sh", "-c", "echo a"] });
    await writeImageLayout(imgB, "1", [base, [{ path: "etc/b", data: "image b\n" }]], {
      Cmd: ["sh", "-c", "echo b"],
    });
    const conv: { coldA: number[]; sharedB: number[]; coldB: number[]; detail: unknown[] } = {
      coldA: [],
      sharedB: [],
      coldB: [],
      detail: [],
    };
    for (let i = 0; i < args.convertRuns; i++) {
      const envShared = { ...process.env, OVM_STORE: join(dir, `conv-${i}-shared`) };
      const envCold = { ...process.env, OVM_STORE: join(dir, `conv-${i}-cold`) };
      const time = async (src: string, tag: string, env: NodeJS.ProcessEnv) => {
        const t0 = performance.now();
        const r = JSON.parse(await cli(["--json", "convert", `oci:${src}:1`, "-t", tag], env));
        return { ms: performance.now() - t0, r };
      };
      const a = await time(imgA, "bench/a:1", envShared);
      const b = await time(imgB, "bench/b:1", envShared);
      const c = await time(imgB, "bench/b:1", envCold);
      conv.coldA.push(a.ms);
      conv.sharedB.push(b.ms);
      conv.coldB.push(c.ms);
      conv.detail.push({
        coldA: { ms: a.ms, timings: a.r.timings, layers: a.r.layers, disk: a.r.disk },
        sharedB: { ms: b.ms, timings: b.r.timings, layers: b.r.layers },
        coldB: { ms: c.ms, timings: c.r.timings, layers: c.r.layers },
      });
      if (b.r.disk?.contentBytes === undefined || !b.r.layers[0].cached)
        throw new Error("image B's base layer was not shared");
      await rm(envShared.OVM_STORE, { recursive: true, force: true });
      await rm(envCold.OVM_STORE, { recursive: true, force: true });
    }

    // 2. ovm run → the program's first output, against the demo VM's cold boot.
    const store = join(dir, "store");
    const socket = join(dir, "ovmd.sock");
    const env = { ...process.env, OVM_STORE: store, OVMD_SOCKET: socket };
    const small = join(dir, "small");
    await writeImageLayout(small, "1", [baseLayer(), topLayer()], { Env: ["PATH=/bin"], Cmd: ["sh"] });
    await cli(["convert", `oci:${small}:1`, "-t", "bench/busybox:vm"], env);
    const assets = join(ROOT, ".cache", "demo-assets");
    await cli(
      [
        "build",
        "-t",
        "bench/demo:1",
        "--kernel",
        join(assets, "vmlinuz"),
        "--initrd",
        join(assets, "initrd.img"),
        "--disk",
        join(assets, "base.qcow2"),
        "--disk",
        join(assets, "diff.qcow2"),
        "--cmdline",
        DEMO_CMDLINE,
        "--memory",
        "256M",
        "--cpus",
        "1",
      ],
      env,
    );
    const daemon = spawn(
      process.execPath,
      [join(ROOT, "dist/src/daemon/ovmd.js"), "--socket", socket, "--store", store],
      {
        stdio: "ignore",
      },
    );
    const container: { firstMs: number; exitMs: number }[] = [];
    const demo: { firstMs: number; readyMs: number }[] = [];
    try {
      for (let i = 0; i < 50; i++) {
        if (
          await cli(["ps"], env).then(
            () => true,
            () => false,
          )
        )
          break;
        await new Promise((r) => setTimeout(r, 100));
      }
      for (let i = 0; i < args.runs; i++) {
        const c = await firstOutput(
          ["run", "--rm", "--accel", "tcg", "bench/busybox:vm", "--", "echo", "hello"],
          env,
        );
        if (c.out !== "hello\n") throw new Error(`the container printed ${JSON.stringify(c.out)}`);
        container.push({ firstMs: c.firstMs, exitMs: c.exitMs });
        const d = await firstOutput(
          ["run", "--rm", "--accel", "tcg", "bench/demo:1"],
          env,
          /^OVMS-READY\r?$/m,
        );
        demo.push({ firstMs: d.firstMs, readyMs: d.markMs });
      }
    } finally {
      daemon.kill("SIGTERM");
    }
    const load1 = loadavg();
    const p = (xs: number[], q: number) => percentile(xs, q);
    const rows = {
      conversion: {
        runs: args.convertRuns,
        baseMiB: args.baseMiB,
        files: args.files,
        cold_a_median_ms: median(conv.coldA),
        shared_b_median_ms: median(conv.sharedB),
        cold_b_median_ms: median(conv.coldB),
        shared_vs_cold: median(conv.sharedB) / median(conv.coldB),
        samples: conv,
      },
      run: {
        runs: args.runs,
        container_first_output_p50_ms: p(
          container.map((c) => c.firstMs),
          50,
        ),
        container_first_output_p95_ms: p(
          container.map((c) => c.firstMs),
          95,
        ),
        container_exit_p50_ms: p(
          container.map((c) => c.exitMs),
          50,
        ),
        demo_first_line_p50_ms: p(
          demo.map((c) => c.firstMs),
          50,
        ),
        demo_first_line_p95_ms: p(
          demo.map((c) => c.firstMs),
          95,
        ),
        demo_ready_p50_ms: p(
          demo.map((c) => c.readyMs),
          50,
        ),
        samples: { container, demo },
      },
      loadavg: { before: load0, after: load1 },
    };
    const f = (n: number) => `${(n / 1000).toFixed(2)} s`;
    const r = rows.run;
    const c = rows.conversion;
    process.stdout.write(
      [
        `container benchmark (${cpus().length} CPUs, load ${load0[0].toFixed(1)} → ${load1[0].toFixed(1)})`,
        `conversion, ${c.runs} runs, base layer ${c.baseMiB} MiB in ${c.files} files + busybox (ovm convert, medians):`,
        `  image A, empty store (cold)              ${f(c.cold_a_median_ms)}`,
        `  image B, base layer already converted    ${f(c.shared_b_median_ms)}`,
        `  image B, empty store (cold)              ${f(c.cold_b_median_ms)}   shared/cold ${c.shared_vs_cold.toFixed(2)}`,
        `ovm run (TCG, CLI process start to …), ${r.runs} runs each:      p50       p95`,
        `  container: the program's first output    ${f(r.container_first_output_p50_ms)}   ${f(r.container_first_output_p95_ms)}   (ovm exits after ${f(r.container_exit_p50_ms)})`,
        `  demo VM cold boot: first console line     ${f(r.demo_first_line_p50_ms)}   ${f(r.demo_first_line_p95_ms)}`,
        `  demo VM cold boot: OVMS-READY             ${f(r.demo_ready_p50_ms)}`,
      ].join("\n") + "\n",
    );
    await writeResult("container", { args, results: rows });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
