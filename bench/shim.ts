/**
 * bench/shim: a Kubernetes pod's container started through the CRI (the kubelet's path) on
 * containerd 1.6 with the OVMS shim, from a RAM-snapshot artifact (the `ovms.artifact`
 * annotation) against a cold boot of the same image's root filesystem.
 *
 *   node dist/bench/shim.js [--runs 10]
 *
 * One ovmd, one containerd (private root, state and socket; CRI plugin with the `ovms`
 * handler), one pod; each run creates a container in it, then times from the StartContainer
 * call to (1) ContainerStatus reporting CONTAINER_RUNNING and (2) the program's first output
 * line in the pod's CRI log file (a restored program goes on ticking; a cold one must boot and
 * print its first line). The program is `echo ready; while :; do echo tick; sleep 0.05; done`.
 * CreateContainer (for the cold path: the rootfs made an ext4 artifact) is not timed. Runs
 * alternate cold and snapshot. Prints a table and writes bench/results/shim-<date>.json.
 */
import { mkdir, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { OVM, percentile, run, writeResult } from "./bench-lib.js";
import { ContractChecker } from "../test/daemon/openapi-check.js";
import { startDaemon } from "../test/daemon/harness.js";
import { startContainerd, writeImageTar } from "../test/shim/containerd-harness.js";
import { CriClient, podConfig } from "../test/shim/cri-client.js";

const IMAGE = "ovms.test/app:1.0";
const PROGRAM = "echo ready; while :; do echo tick; sleep 0.05; done";

interface Sample {
  runningMs: number;
  outputMs: number;
}

function parse(argv: string[]): { runs: number } {
  const a = { runs: 10 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--runs") a.runs = Number(argv[++i]);
    else throw new Error(`unknown flag ${argv[i]} (--runs N)`);
    if (!Number.isInteger(a.runs) || a.runs < 1) throw new Error("--runs needs a whole number");
  }
  return a;
}

async function main(): Promise<void> {
  const args = parse(process.argv.slice(2));
  const dir = await mkdtemp("/tmp/ovms-bench-shim-");
  const d = await startDaemon(join(dir, "d"), new ContractChecker());
  const c = await startContainerd(
    join(dir, "c"),
    { OVMD_SOCKET: d.socket },
    { cri: true, sandboxImage: IMAGE },
  );
  const cri = new CriClient(c.address);
  try {
    const tar = await writeImageTar(dir, { Env: ["PATH=/bin"], Cmd: ["sh"] });
    const imp = await c.ctr(
      ["image", "import", "--base-name", "ovms.test/app", "--snapshotter", "native", tar],
      {
        namespace: "k8s.io",
      },
    );
    if (imp.code !== 0) throw new Error(imp.stderr);
    // The snapshot artifact: the image converted, its program started and snapshotted while it ticks.
    await run(
      process.execPath,
      [OVM, "convert", `oci:${join(dir, "image-layout")}:1.0`, "-t", "bench/app:1"],
      {
        ...process.env,
        ...d.env,
      },
    );
    const s = await d.api.post("/start", {
      manifest: "bench/app:1",
      overrides: { args: ["sh", "-c", PROGRAM] },
    });
    const id = s.body.instance_id;
    for (;;) {
      const logs = await d.api.get(`/logs/${id}`);
      if (JSON.stringify(logs.body).includes("tick")) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const snap = await d.api.post("/snapshot", { instance_id: id, tag: "bench/app:snap", stop: true });
    if (snap.status !== 200) throw new Error(JSON.stringify(snap.body));
    await d.api.request("DELETE", `/instances/${id}?force=1`);

    const logDir = join(dir, "pods", "bench");
    await mkdir(logDir, { recursive: true });
    const pod = podConfig("bench", logDir);
    const { pod_sandbox_id: sandbox } = await cri.call("RunPodSandbox", {
      config: pod,
      runtime_handler: "ovms",
    });
    const series: Record<"cold" | "snapshot", Sample[]> = { cold: [], snapshot: [] };
    let n = 0;
    const one = async (kind: "cold" | "snapshot"): Promise<Sample> => {
      const name = `c${n++}`;
      const { container_id: cid } = await cri.call("CreateContainer", {
        pod_sandbox_id: sandbox,
        config: {
          metadata: { name, attempt: 0 },
          image: { image: IMAGE },
          command: ["sh", "-c", PROGRAM],
          log_path: `${name}.log`,
          annotations: kind === "snapshot" ? { "ovms.artifact": "bench/app:snap" } : {},
        },
        sandbox_config: pod,
      });
      const log = join(logDir, `${name}.log`);
      const t0 = performance.now();
      // Its failure is kept, not left unhandled: the run stops and the cleanup below still runs.
      let failed: Error | undefined;
      const started = cri
        .call("StartContainer", { container_id: cid })
        .catch((e: Error) => void (failed = e));
      let runningMs = 0;
      let outputMs = 0;
      while (!runningMs || !outputMs) {
        if (!outputMs && ((await stat(log).catch(() => undefined))?.size ?? 0) > 0) {
          if (/ stdout [FP] (ready|tick)/.test(await readFile(log, "utf8")))
            outputMs = performance.now() - t0;
        }
        if (!runningMs) {
          const st = (await cri.call("ContainerStatus", { container_id: cid })).status;
          if (st.state === "CONTAINER_RUNNING") runningMs = performance.now() - t0;
          if (st.state === "CONTAINER_EXITED")
            throw new Error(`${kind} container ${name} exited: ${st.reason} ${st.message}`);
        }
        if (failed) throw failed;
        if (performance.now() - t0 > 600_000)
          throw new Error(`${kind} container ${name}: not running in 10 min`);
        await new Promise((r) => setTimeout(r, 2));
      }
      await started;
      if (failed) throw failed;
      await cri.call("StopContainer", { container_id: cid, timeout: 0 });
      await cri.call("RemoveContainer", { container_id: cid });
      return { runningMs, outputMs };
    };
    for (let i = 0; i < args.runs; i++) {
      for (const kind of ["cold", "snapshot"] as const) {
        const x = await one(kind);
        series[kind].push(x);
        process.stderr.write(
          `${kind} ${i + 1}/${args.runs}: running ${x.runningMs.toFixed(0)} ms, output ${x.outputMs.toFixed(0)} ms\n`,
        );
      }
    }
    // The shim's own account of each start (POST /start, then the VMM's pid), for the reader.
    for (const l of c.output().split("\n")) if (l.includes("VMM pid")) process.stderr.write(`${l}\n`);
    await cri.call("StopPodSandbox", { pod_sandbox_id: sandbox });
    await cri.call("RemovePodSandbox", { pod_sandbox_id: sandbox });
    const rows = (["snapshot", "cold"] as const).map((k) => ({
      name: k === "snapshot" ? "snapshot (ovms.artifact)" : "cold (rootfs → VM)",
      running_p50_ms: Math.round(
        percentile(
          series[k].map((x) => x.runningMs),
          50,
        ),
      ),
      running_p95_ms: Math.round(
        percentile(
          series[k].map((x) => x.runningMs),
          95,
        ),
      ),
      output_p50_ms: Math.round(
        percentile(
          series[k].map((x) => x.outputMs),
          50,
        ),
      ),
      output_p95_ms: Math.round(
        percentile(
          series[k].map((x) => x.outputMs),
          95,
        ),
      ),
    }));
    const w = Math.max(...rows.map((r) => r.name.length));
    process.stdout.write(
      [
        `shim benchmark: CRI StartContainer → running / → first program output, p50 (p95) over ${args.runs} runs each, alternating; ${cpus().length} CPUs, load ${loadavg()[0].toFixed(1)}`,
        `${"start".padEnd(w)}  running ms        first output ms`,
        ...rows.map(
          (r) =>
            `${r.name.padEnd(w)}  ${String(r.running_p50_ms).padStart(6)} (${String(r.running_p95_ms).padStart(6)})  ${String(r.output_p50_ms).padStart(7)} (${String(r.output_p95_ms).padStart(6)})`,
        ),
      ].join("\n") + "\n",
    );
    await writeResult("shim", { args, program: PROGRAM, results: rows, runs: series, loadavg: loadavg() });
  } finally {
    cri.close();
    for (const i of (await d.api.get("/instances?all=1").catch(() => undefined))?.body.instances ?? [])
      await d.api.request("DELETE", `/instances/${i.instance_id}?force=1`).catch(() => undefined);
    await c.stop();
    await d.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
