import { spawn, type ChildProcess } from "node:child_process";
import { chmod, mkdir } from "node:fs/promises";
import { request } from "node:http";
import { dirname, join } from "node:path";
import { DEMO_CMDLINE, ROOT, demoAssets, ovm } from "../helpers.js";
import { Api, ContractChecker } from "./openapi-check.js";
import { describeInstance } from "../qemu-diagnosis.js";

/** OVMD is the daemon's entry point as installed (package.json bin.ovmd). */
export const OVMD = join(ROOT, "dist/src/daemon/ovmd.js");

/** DaemonProc is one real ovmd process with its own runtime folder, store and socket. */
export interface DaemonProc {
  proc: ChildProcess;
  dir: string;
  store: string;
  socket: string;
  /** env is what a CLI talking to this daemon needs (OVM_STORE, XDG_RUNTIME_DIR, OVMD_SOCKET). */
  env: Record<string, string>;
  api: Api;
  /** output is everything the daemon wrote on stdout and stderr so far. */
  output(): string;
  /** stop sends SIGTERM and waits for the process to end. */
  stop(): Promise<void>;
}

/**
 * startDaemon runs `ovmd` under `dir` with its own XDG_RUNTIME_DIR and OVM_STORE (`storeDir`,
 * default `<dir>/store`), and waits (≤ 15 s) until `GET /version` answers on its socket. The socket path is given in
 * OVMD_SOCKET too: as root the default would be /run/ovms/ovmd.sock, shared by every test.
 */
export async function startDaemon(
  dir: string,
  checker: ContractChecker,
  args: string[] = [],
  storeDir?: string,
): Promise<DaemonProc> {
  const runtimeDir = join(dir, "run");
  // Traversable, as a daemon started with --confine off runs QEMU as nobody through -runas.
  await mkdir(dir, { recursive: true, mode: 0o755 });
  await chmod(dir, 0o755);
  await chmod(dirname(dir), 0o755).catch(() => undefined);
  await mkdir(runtimeDir, { recursive: true, mode: 0o700 });
  const store = storeDir ?? join(dir, "store");
  const socket = join(runtimeDir, "ovms", "ovmd.sock");
  const env = { OVM_STORE: store, XDG_RUNTIME_DIR: runtimeDir, OVMD_SOCKET: socket };
  let out = "";
  const proc = spawn(process.execPath, [OVMD, "--log-level", "debug", ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`ovmd exited ${proc.exitCode} before answering:\n${out}`);
    if (await answers(socket)) break;
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`ovmd did not answer on ${socket} in 15 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    proc,
    dir,
    store,
    socket,
    env,
    api: new Api({ socketPath: socket }, checker),
    output: () => out,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
      await exited;
    },
  };
}

/** answers tells whether an HTTP server answers `GET /version` on a UNIX socket. */
export function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path: "/version", headers: { host: "localhost" } }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("error", () => resolve(false));
    req.end();
  });
}

/**
 * buildDemoCli builds the demo artifact with `ovm build` (real kernel, busybox initrd,
 * base + diff qcow2 layers, one 1 MiB ivshmem device) into the store of `env`.
 */
export async function buildDemoCli(
  env: Record<string, string>,
  tag = "demo/vm:1.0",
  opts: { cmdline?: string; ivshmem?: boolean; extra?: string[] } = {},
): Promise<string> {
  const a = demoAssets();
  const device = opts.ivshmem === false ? [] : ["--device", "type=ivshmem,name=shm0,size=1M"];
  const r = await ovm(
    [
      "--json",
      "build",
      "-t",
      tag,
      "--kernel",
      a.kernel,
      "--initrd",
      a.initrd,
      "--disk",
      a.base,
      "--disk",
      a.diff,
      "--cmdline",
      opts.cmdline ?? DEMO_CMDLINE,
      ...device,
      "--memory",
      "192M",
      "--cpus",
      "1",
      ...(opts.extra ?? []),
    ],
    env,
  );
  if (r.code !== 0) throw new Error(`ovm build: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { digest: string }).digest;
}

/**
 * waitFor polls `fn` until it returns a value other than undefined. `explain`, when given, adds
 * what it finds at the time out to the error (the state of the guest that was waited for).
 */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 60_000,
  explain?: () => Promise<string>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) {
      const why = explain ? await explain().catch((e: Error) => `(no diagnosis: ${e.message})`) : "";
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why ? `\n${why}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** serialLine waits until the instance's serial log has a line matching `re` and returns it. */
export function serialLine(api: Api, id: string, re: RegExp, timeoutMs = 60_000): Promise<string> {
  return waitFor(
    `${re} on the serial console of ${id}`,
    async () => {
      const r = await api.get<{ line: string }[]>(`/logs/${encodeURIComponent(id)}`);
      if (r.status !== 200) throw new Error(`GET /logs/${id}: ${r.status} ${JSON.stringify(r.body)}`);
      const hit = r.body.find((x) => re.test(x.line));
      if (hit) return hit.line;
      const s = await api.get(`/status/${encodeURIComponent(id)}`);
      if (s.body.state === "exited" || s.body.state === "failed")
        throw new Error(`instance ${id} ${s.body.state} (${s.body.reason}) before ${re}`);
      return undefined;
    },
    timeoutMs,
    () => instanceDiagnosis(api, id),
  );
}

/**
 * instanceDiagnosis describes an instance of the daemon a test waited for in vain (describeInstance).
 */
export async function instanceDiagnosis(api: Api, id: string): Promise<string> {
  const s = (await api.get(`/status/${encodeURIComponent(id)}`)).body;
  const logs = (await api.get<{ line: string }[]>(`/logs/${encodeURIComponent(id)}`)).body;
  return describeInstance(id, s, Array.isArray(logs) ? logs.map((l) => l.line) : []);
}
