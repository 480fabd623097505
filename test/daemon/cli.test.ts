import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OVM, ovm } from "../helpers.js";
import { daemonStateDir } from "../../src/store/paths.js";
import { answers, buildDemoCli, waitFor } from "./harness.js";

// The CLI side of the runtime: `ovm run` with no daemon running starts one in the
// background (one daemon for the whole file), then the instance commands talk to it.
let dir: string;
let env: Record<string, string>;
let socket: string;
let store: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-daemon-cli-"));
  await chmod(dir, 0o755); // as root, QEMU runs as nobody and must reach the store's instance folders
  const run = join(dir, "run");
  await mkdir(run, { mode: 0o700 });
  store = join(dir, "store");
  socket = join(run, "ovms", "ovmd.sock");
  // OVMD_SOCKET as well: as root the default socket is /run/ovms/ovmd.sock, shared by all.
  env = { OVM_STORE: store, XDG_RUNTIME_DIR: run, OVMD_SOCKET: socket };
  await buildDemoCli(env);
});

after(async () => {
  const pid = Number(
    (await readFile(join(daemonStateDir(store), "ovmd.pid"), "utf8").catch(() => "")).trim(),
  );
  if (pid) {
    const ps = await ovm(["--json", "ps", "-a"], env);
    for (const i of ps.code === 0 ? (JSON.parse(ps.stdout) as { instance_id: string }[]) : [])
      await ovm(["rm", "-f", i.instance_id], env);
    process.kill(pid, "SIGTERM");
    await waitFor("the daemon to exit", async () => (isAlive(pid) ? undefined : true), 10_000).catch(() =>
      process.kill(pid, "SIGKILL"),
    );
  }
  await rm(dir, { recursive: true, force: true });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test("ovm run -d starts a daemon in the background when none answers, and prints the id", async () => {
  assert.equal(await answers(socket), false);
  const r = await ovm(
    ["run", "-d", "--name", "c1", "--accel", "tcg", "--cmdline", "ovms.mode=ivshmem", "demo/vm:1.0"],
    env,
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.trim(), /^[0-9a-f-]{36}$/);
  assert.match(r.stderr, /started ovmd \(pid \d+\)/);
  assert.ok(await answers(socket), "the daemon answers on the socket");
  assert.equal((await stat(socket)).mode & 0o777, 0o600);
  const log = await readFile(join(daemonStateDir(store), "ovmd.log"), "utf8");
  assert.match(log, /listening/);
  // A second run finds the daemon there: no second start.
  const again = await ovm(["run", "-d", "--accel", "tcg", "--memory", "128M", "demo/vm:1.0"], env);
  assert.equal(again.code, 0, again.stderr);
  assert.doesNotMatch(again.stderr, /started ovmd/);
  assert.equal((await ovm(["rm", "-f", again.stdout.trim()], env)).code, 0);
});

test("ps, status, logs, inject work on the instance by name", async () => {
  const ps = await ovm(["ps"], env);
  assert.equal(ps.code, 0, ps.stderr);
  const [head, row] = ps.stdout.trim().split("\n");
  assert.match(head, /^ID\s+NAME\s+STATE\s+ACCEL\s+UPTIME\s+ARTIFACT\s+PORTS$/);
  assert.match(row, /^[0-9a-f]{12}\s+c1\s+(starting|running)\s+tcg\s+\S+\s+demo\/vm:1\.0$/);

  const json = JSON.parse((await ovm(["ps", "--json"], env)).stdout) as {
    name: string;
    instance_id: string;
  }[];
  assert.deepEqual(
    json.map((i) => i.name),
    ["c1"],
  );
  const status = JSON.parse((await ovm(["status", "c1", "--json"], env)).stdout);
  assert.equal(status.instance_id, json[0].instance_id);
  assert.match((await ovm(["status", row.slice(0, 12)], env)).stdout, /Name:\s+c1/);

  await waitFor("OVMS-IVSHMEM on c1", async () =>
    (await ovm(["logs", "c1"], env)).stdout.includes("OVMS-IVSHMEM: ready") ? true : undefined,
  );
  const text = "from the cli";
  const msg = join(dir, "msg");
  await writeFile(msg, text);
  const len = join(dir, "len");
  const b = Buffer.alloc(4);
  b.writeUInt32LE(text.length);
  await writeFile(len, b);
  const i1 = await ovm(["inject", "c1", "--file", msg, "--offset", "4", "--device", "shm0"], env);
  assert.equal(i1.code, 0, i1.stderr);
  assert.equal(i1.stdout.trim(), `injected ${text.length} bytes into c1`);
  assert.equal((await ovm(["inject", "c1", "--file", len], env)).code, 0);
  await waitFor(
    "the injected text on the console",
    async () =>
      (await ovm(["logs", "--tail", "3", "c1"], env)).stdout.includes(`OVMS-INJECT: ${text}`)
        ? true
        : undefined,
    30_000,
  );
  const tail = await ovm(["logs", "--tail", "1", "c1"], env);
  assert.equal(tail.stdout.split("\n").filter(Boolean).length, 1);
});

test("ovm snapshot: an ivshmem guest is snapshotted (QEMU 7.2, without x-ignore-shared); a clear refusal for an unknown instance", async () => {
  const r = await ovm(["snapshot", "c1", "-t", "demo/vm:snap"], env);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /demo\/vm:snap/);
  assert.match(
    r.stdout,
    /^Guest paused [\d.]+ ms \((background|live|copy)\)$/m,
    "how long the guest was paused",
  );
  const bad = await ovm(["snapshot", "nope", "-t", "demo/vm:x"], env);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /no instance "nope"/);
});

test("unknown instances: a clear error and exit 1", async () => {
  const r = await ovm(["status", "nope"], env);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no instance "nope"/);
});

test("ovm stop, then ovm rm removes the instance; rm never touches artifacts, rmi does", async () => {
  const stop = await ovm(["stop", "--timeout", "5", "c1"], env);
  assert.equal(stop.code, 0, stop.stderr);
  assert.match((await ovm(["ps", "-a"], env)).stdout, /c1\s+exited/);
  assert.doesNotMatch((await ovm(["ps"], env)).stdout, /c1/);
  const rmi = await ovm(["rm", "c1"], env);
  assert.equal(rmi.code, 0, rmi.stderr);
  assert.doesNotMatch((await ovm(["ps", "-a"], env)).stdout, /c1/);
  // Not an instance: rm says so and points to rmi; the artifact stays.
  await ovm(["tag", "demo/vm:1.0", "demo/vm:extra"], env);
  const rma = await ovm(["rm", "demo/vm:extra"], env);
  assert.equal(rma.code, 1);
  assert.match(
    rma.stderr,
    /rm demo\/vm:extra: no such instance; an artifact is named demo\/vm:extra: `ovm rmi demo\/vm:extra` removes it/,
  );
  assert.equal((await ovm(["inspect", "demo/vm:extra"], env)).code, 0, "the artifact is still there");
  const rmia = await ovm(["rmi", "demo/vm:extra"], env);
  assert.equal(rmia.code, 0, rmia.stderr);
  assert.match(rmia.stdout, /Untagged: demo\/vm:extra/);
});

test("ovm run in the foreground streams the console and stops the instance on Ctrl-C", async () => {
  const child = spawn(
    process.execPath,
    [OVM, "run", "--name", "fg", "--accel", "tcg", "--memory", "128M", "demo/vm:1.0"],
    {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  const exit = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  await waitFor(
    "OVMS-READY on ovm run's stdout",
    async () => (stdout.includes("OVMS-READY") ? true : undefined),
    60_000,
  );
  assert.match(stdout, /OVMS-LAYER: hello from the diff layer/);
  child.kill("SIGINT");
  const code = await Promise.race([exit, new Promise<string>((r) => setTimeout(() => r("timeout"), 30_000))]);
  assert.equal(code, 0, `ovm run exited ${code}: ${stderr}`);
  assert.match(stderr, /stopping fg/);
  const st = JSON.parse((await ovm(["status", "fg", "--json"], env)).stdout);
  assert.equal(st.state, "exited");
  assert.equal((await ovm(["rm", "fg"], env)).code, 0);
});

test("ovm serve runs the daemon in the foreground until SIGTERM", async () => {
  const sock = join(dir, "serve.sock");
  const child = spawn(process.execPath, [OVM, "--store", join(dir, "store2"), "serve", "--socket", sock], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  child.stderr.on("data", (c: Buffer) => (err += c.toString()));
  await waitFor("ovm serve to answer", async () => ((await answers(sock)) ? true : undefined), 15_000).catch(
    (e) => {
      throw new Error(`${(e as Error).message}: ${err}`);
    },
  );
  child.kill("SIGTERM");
  await new Promise((r) => child.once("exit", r));
  await assert.rejects(stat(sock), "the socket is removed on SIGTERM");
});
