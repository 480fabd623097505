/**
 * bench/cli: how long an `ovm` command takes as a user sees it, from starting the process to
 * its exit: `ovm --version`, `ovm ls` (a store holding a few artifacts), `ovm ps` with ovmd
 * running (no instances: the CLI's own cost plus two calls on the socket) and without one (its
 * error path). Beside them, in the same run: the floor (`node -e 0`, a Node process that does
 * nothing), the docker CLI where it is installed (`docker --version`, `docker ps`; a Go binary
 * with no runtime start-up), and with `--before PATH` the same commands run by another build's
 * ovm.js (main's, for a before/after in one run). Every contender runs once per round, rounds
 * interleaved, so that all see the same load; the load average is recorded beside the figures.
 *
 *   node dist/bench/cli.js [--runs 30] [--before /path/to/dist/src/cli/ovm.js] [--keep]
 *
 * bench/cli-baseline.json, when present, holds figures recorded before the lazy loading (main
 * at 747a283, through --before); they are printed under the table and copied into the result
 * as `baseline`.
 * Prints a table and writes JSON to bench/results/cli-<date>.json.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../src/store/store.js";
import { OVM, ROOT, makeBenchArtifact, percentile, writeResult } from "./bench-lib.js";

/** GOAL_MS is issue 11's goal for the p50 of `ovm --version`, `ovm ls` and `ovm ps`. */
const GOAL_MS = 120;

function args(argv: string[]) {
  const a = { runs: 30, before: undefined as string | undefined, keep: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--runs") a.runs = Number(argv[++i]);
    else if (argv[i] === "--before") a.before = argv[++i];
    else if (argv[i] === "--keep") a.keep = true;
    else throw new Error(`unknown flag ${argv[i]} (--runs N, --before OVM_JS, --keep)`);
  }
  if (!Number.isInteger(a.runs) || a.runs < 1) throw new Error("--runs needs a whole number");
  if (a.before !== undefined && !existsSync(a.before)) throw new Error(`--before ${a.before}: no such file`);
  return a;
}

/** Contender is one command line timed in every round. */
interface Contender {
  name: string;
  argv: string[];
  env: NodeJS.ProcessEnv;
  /** The exit status it must end with (`ovm ps` without a daemon fails, as it should). */
  status: number;
  ms: number[];
}

/** timeOnce runs a command with its output discarded and returns its wall-clock ms, spawn to exit. */
function timeOnce(c: Contender): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(c.argv[0], c.argv.slice(1), { env: c.env, stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    child.on("exit", (code) => {
      const ms = performance.now() - t0;
      if (code === c.status) resolve(ms);
      else reject(new Error(`${c.name}: exited ${code}, not ${c.status}: ${err}`));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** startDaemon starts ovmd on the store and waits until `ovm ps` gets an answer from it. */
async function startDaemon(env: NodeJS.ProcessEnv) {
  const d = spawn(process.execPath, [join(ROOT, "dist/src/daemon/ovmd.js")], { env, stdio: "ignore" });
  for (let i = 0; ; i++) {
    if (spawnSync(process.execPath, [OVM, "ps"], { env, stdio: "ignore" }).status === 0) return d;
    if (i > 100 || d.exitCode !== null) throw new Error("ovmd did not answer");
    await sleep(100);
  }
}

async function main() {
  const a = args(process.argv.slice(2));
  const dir = await mkdtemp(join(tmpdir(), "ovms-bench-cli-"));
  const store = await Store.open(join(dir, "store"));
  for (let i = 1; i <= 4; i++) await makeBenchArtifact(store, join(dir, `parts-${i}`), 2, `bench/vm:${i}`);
  const run = join(dir, "run");
  await mkdir(run, { recursive: true, mode: 0o700 });
  const env: NodeJS.ProcessEnv = { ...process.env, OVM_STORE: store.root, XDG_RUNTIME_DIR: run };
  // Nothing serves this store: `ovm ps` fails with DAEMON_UNAVAILABLE (exit status 1).
  const idle = join(dir, "idle");
  await mkdir(join(idle, "run"), { recursive: true, mode: 0o700 });
  const idleEnv: NodeJS.ProcessEnv = {
    ...process.env,
    OVM_STORE: join(idle, "store"),
    XDG_RUNTIME_DIR: join(idle, "run"),
  };
  for (const k of ["OVMD_SOCKET", "DOCKER_HOST"]) {
    delete env[k];
    delete idleEnv[k];
  }
  const node = process.execPath;
  const c = (name: string, argv: string[], e = env, status = 0): Contender => ({
    name,
    argv,
    env: e,
    status,
    ms: [],
  });
  const ovmSet = (label: string, js: string) => [
    c(`${label} --version`, [node, js, "--version"]),
    c(`${label} ls`, [node, js, "ls"]),
    c(`${label} ps`, [node, js, "ps"]),
    c(`${label} ps (no ovmd)`, [node, js, "ps"], idleEnv, 1),
  ];
  const contenders = [c("node -e 0 (floor)", [node, "-e", "0"]), ...ovmSet("ovm", OVM)];
  if (a.before) contenders.push(...ovmSet("before: ovm", a.before));
  const docker = spawnSync("docker", ["--version"], { encoding: "utf8" });
  if (docker.status === 0) {
    contenders.push(c("docker --version", ["docker", "--version"]));
    // Without a docker daemon this is docker's error path, like `ovm ps (no ovmd)`.
    const up = spawnSync("docker", ["ps"], { stdio: "ignore" }).status ?? 1;
    contenders.push(c(`docker ps${up ? " (no dockerd)" : ""}`, ["docker", "ps"], env, up));
  }
  const daemon = await startDaemon(env);
  const load = { before: loadavg(), after: [] as number[] };
  try {
    for (const k of contenders) await timeOnce(k); // warm the page cache; not counted
    for (let r = 0; r < a.runs; r++) for (const k of contenders) k.ms.push(await timeOnce(k));
    load.after = loadavg();
  } finally {
    daemon.kill("SIGTERM");
    await new Promise((r) => daemon.once("exit", r));
    if (!a.keep) await rm(dir, { recursive: true, force: true });
  }

  const baselineFile = join(ROOT, "bench", "cli-baseline.json");
  const baseline = existsSync(baselineFile) ? JSON.parse(await readFile(baselineFile, "utf8")) : undefined;
  const results = contenders.map((k) => ({
    name: k.name,
    command: k.argv.join(" ").replace(node, "node"),
    p50_ms: percentile(k.ms, 50),
    p95_ms: percentile(k.ms, 95),
    min_ms: Math.min(...k.ms),
  }));
  const floor = results[0].p50_ms;
  const w = Math.max(...results.map((r) => r.name.length));
  const f = (n: number) => n.toFixed(1).padStart(7);
  process.stdout.write(
    [
      `ovm CLI start-up: ${a.runs} runs each (interleaved), load average ${load.before.map((x) => x.toFixed(2)).join(" ")} before, ${load.after.map((x) => x.toFixed(2)).join(" ")} after`,
      `${"command".padEnd(w)}   p50 ms   p95 ms   min ms   p50 over the floor`,
      ...results.map(
        (r) => `${r.name.padEnd(w)}  ${f(r.p50_ms)}  ${f(r.p95_ms)}  ${f(r.min_ms)}  ${f(r.p50_ms - floor)}`,
      ),
      ...(baseline
        ? [
            `before, recorded ${baseline.recorded} (bench/cli-baseline.json, floor ${baseline.floor_p50_ms} ms then): ` +
              (baseline.results as { name: string; p50_ms: number }[])
                .map((r) => `${r.name} ${r.p50_ms} ms`)
                .join(", "),
          ]
        : []),
      `goal: ovm --version, ls and ps p50 <= ${GOAL_MS} ms`,
    ].join("\n") + "\n",
  );
  await writeResult("cli", {
    runs: a.runs,
    goal_p50_ms: GOAL_MS,
    load_average: load,
    store: "4 OVMS artifacts of 2 MiB (bench/vm:1..4); ovmd running with no instances",
    note:
      "docker-style expectation: a command typed all day answers about as fast as the docker CLI " +
      "(a Go binary: no runtime to start, one call on its socket), whose rows, where present, are " +
      "measured in this run on this machine. ovm pays Node's start-up (the floor row: node -e 0) " +
      "plus what it loads; the goal is p50 <= 120 ms for --version, ls and ps.",
    results,
    runs_ms: Object.fromEntries(contenders.map((k) => [k.name, k.ms.map((x) => +x.toFixed(2))])),
    ...(baseline ? { baseline } : {}),
  });
}

await main();
