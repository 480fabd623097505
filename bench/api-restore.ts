/**
 * bench/api-restore: a restore from the warm pool as a client of ovmd sees it — from sending
 * `POST /start {"wait": true}` on the UNIX socket to the answer that says the guest runs —
 * beside the daemon's own figure for the same start (`metrics.start_ms` of the instance). Starts
 * rotate between a Node client that opens a new connection for the call (as `ovm run` does),
 * one that keeps its connection open (as an SDK or a shim does), and `curl` (its own
 * time_total: connect to the last byte of the answer, without its process start).
 * The pool's clones are restored ahead (device state loaded, paused), so a start is identity,
 * ports and `cont`. Between starts the bench waits for the pool to refill (`--gap` ms).
 *
 *   node dist/bench/api-restore.js [--runs 30] [--gap 1500] [--keep]   (--runs: starts per kind of client)
 *
 * Prints a table and writes JSON to bench/results/api-restore-<date>.json.
 */
import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { Agent, request } from "node:http";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { DEMO_CMDLINE, ROOT, demoStore, percentile, writeResult } from "./bench-lib.js";

const execFileP = promisify(execFile);

function args(argv: string[]) {
  const a = { runs: 30, gap: 1500, keep: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--runs") a.runs = Number(argv[++i]);
    else if (argv[i] === "--gap") a.gap = Number(argv[++i]);
    else if (argv[i] === "--keep") a.keep = true;
    else throw new Error(`unknown flag ${argv[i]} (--runs N, --gap MS, --keep)`);
  }
  return a;
}

/** call sends one JSON request on the daemon's socket and parses the answer. */
function call(
  socketPath: string,
  method: string,
  path: string,
  body?: unknown,
  agent?: Agent,
): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = request(
      {
        socketPath,
        ...(agent ? { agent } : {}),
        method,
        path,
        headers: data ? { "content-type": "application/json", "content-length": data.length } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          // /logs answers NDJSON (one record a line); everything else one JSON document.
          const ndjson = /ndjson/.test(String(res.headers["content-type"]));
          const body = ndjson
            ? text
                .split("\n")
                .filter(Boolean)
                .map((l) => JSON.parse(l) as unknown)
            : text
              ? (JSON.parse(text) as unknown)
              : undefined;
          resolve({ status: res.statusCode ?? 0, body });
        });
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}

/** runCurl POSTs /start with curl and returns its answer and curl's own time_total in ms. */
async function runCurl(socketPath: string, body: unknown): Promise<{ ms: number; body: any }> {
  const { stdout } = await execFileP("curl", [
    "-sS",
    "--unix-socket",
    socketPath,
    "-H",
    "content-type: application/json",
    "-d",
    JSON.stringify(body),
    "-w",
    "\n%{time_total}",
    "http://ovmd/start",
  ]);
  const nl = stdout.lastIndexOf("\n");
  return { ms: Number(stdout.slice(nl + 1)) * 1000, body: JSON.parse(stdout.slice(0, nl)) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const a = args(process.argv.slice(2));
  const { dir, store } = await demoStore("ovms-bench-api-", `${DEMO_CMDLINE} ovms.mode=counter`, 192 << 20);
  const run = join(dir, "run");
  await mkdir(run, { recursive: true, mode: 0o700 });
  const socket = join(run, "ovmd.sock");
  const env = { ...process.env, OVM_STORE: store.root, XDG_RUNTIME_DIR: run, OVMD_SOCKET: socket };
  const d = spawn(process.execPath, [join(ROOT, "dist/src/daemon/ovmd.js"), "--warm-pool", "2"], {
    env,
    stdio: "ignore",
  });
  try {
    for (let i = 0; ; i++) {
      if (
        await call(socket, "GET", "/version").then(
          () => true,
          () => false,
        )
      )
        break;
      if (i > 300) throw new Error("ovmd did not answer");
      await sleep(50);
    }
    let r = await call(socket, "POST", "/start", {
      manifest: "bench/vm:1",
      overrides: { name: "src", accel: "tcg" },
    });
    if (r.status !== 202) throw new Error(JSON.stringify(r.body));
    for (;;) {
      const logs = await call(socket, "GET", "/logs/src");
      if (((logs.body ?? []) as { line: string }[]).some((l) => /^OVMS-COUNTER: 3$/.test(l.line))) break;
      await sleep(200);
    }
    r = await call(socket, "POST", "/snapshot", { instance_id: "src", tag: "bench/vm:snap", stop: true });
    if (r.status !== 200) throw new Error(JSON.stringify(r.body));
    // The first start is a fresh QEMU and fills the pool: not counted.
    r = await call(socket, "POST", "/start", { manifest: "bench/vm:snap", wait: true });
    await call(socket, "POST", "/stop", { instance_id: r.body.instance_id, force: true });
    await sleep(a.gap * 2);
    const kept = new Agent({ keepAlive: true, maxSockets: 1 });
    await call(socket, "GET", "/version", undefined, kept); // opens the kept connection
    const client = { fresh: [] as number[], kept: [] as number[], curl: [] as number[] };
    const daemon: number[] = [];
    const states: Record<string, number> = {};
    const kinds = ["fresh", "kept", "curl"] as const;
    for (let i = 0; i < a.runs * kinds.length; i++) {
      const how = kinds[i % kinds.length];
      let s: { body: any };
      if (how === "curl") {
        // curl's own figure (connect to last byte), without its process start.
        const out = await runCurl(socket, { manifest: "bench/vm:snap", wait: true });
        client.curl.push(out.ms);
        s = { body: out.body };
      } else {
        const t0 = performance.now();
        s = await call(
          socket,
          "POST",
          "/start",
          { manifest: "bench/vm:snap", wait: true },
          how === "kept" ? kept : undefined,
        );
        client[how].push(performance.now() - t0);
      }
      states[s.body.state] = (states[s.body.state] ?? 0) + 1;
      const st = await call(socket, "GET", `/status/${s.body.instance_id}`);
      daemon.push(st.body.metrics.start_ms);
      await call(socket, "POST", "/stop", { instance_id: s.body.instance_id, force: true });
      await call(socket, "DELETE", `/instances/${s.body.instance_id}`);
      await sleep(a.gap);
    }
    kept.destroy();
    const result = {
      runs: a.runs,
      client_p50_ms: percentile(client.fresh, 50),
      client_p95_ms: percentile(client.fresh, 95),
      client_kept_alive_p50_ms: percentile(client.kept, 50),
      client_kept_alive_p95_ms: percentile(client.kept, 95),
      curl_p50_ms: percentile(client.curl, 50),
      curl_p95_ms: percentile(client.curl, 95),
      daemon_start_ms_p50: percentile(daemon, 50),
      daemon_start_ms_p95: percentile(daemon, 95),
      states,
    };
    const ms = (x: number) => x.toFixed(1);
    console.log("POST /start wait=true → answer, warm pool restored ahead (goal: p50 ≤ 5 ms, p95 ≤ 10 ms)");
    console.log("| client | p50 ms | p95 ms |\n|---|---|---|");
    console.log(`| new connection per call | ${ms(result.client_p50_ms)} | ${ms(result.client_p95_ms)} |`);
    console.log(
      `| kept-alive connection | ${ms(result.client_kept_alive_p50_ms)} | ${ms(result.client_kept_alive_p95_ms)} |`,
    );
    console.log(`| curl (its time_total) | ${ms(result.curl_p50_ms)} | ${ms(result.curl_p95_ms)} |`);
    console.log(`| daemon's own start_ms | ${result.daemon_start_ms_p50} | ${result.daemon_start_ms_p95} |`);
    console.log(`states reached: ${JSON.stringify(states)}`);
    await writeResult("api-restore", result);
  } finally {
    d.kill("SIGTERM");
    await new Promise((r) => d.once("exit", r));
    if (!a.keep) await rm(dir, { recursive: true, force: true });
  }
}

await main();
