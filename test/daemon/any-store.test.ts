import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import { daemonStateDir } from "../../src/store/paths.js";
import { spawn } from "node:child_process";
import { OVM, buildDemo, ovm } from "../helpers.js";
import { ContractChecker } from "./openapi-check.js";
import { serialLine, startDaemon, waitFor, type DaemonProc } from "./harness.js";

// ovmd as a user starts it: the store wherever the user keeps it — here in a folder only root
// may enter (mkdtemp, mode 0700), which QEMU's unprivileged user could never reach by path.
// The daemon keeps its instances in a state folder of its own (daemonStateDir), and QEMU gets
// its files through the sandbox. Also: the boot watchdog through the API.
const checker = new ContractChecker();
let hidden: string;
let dir: string;
let store: string;
let d: DaemonProc;

before(async () => {
  hidden = await mkdtemp(join(tmpdir(), "ovms-hidden-"));
  dir = await mkdtemp(join(tmpdir(), "ovms-daemon-any-"));
  store = join(hidden, "store");
  await buildDemo(await Store.open(store), "demo/vm:plain", false);
  d = await startDaemon(join(dir, "d"), checker, ["--boot-timeout", "20"], store);
});

after(async () => {
  for (const i of (await d?.api.get("/instances?all=1").catch(() => undefined))?.body.instances ?? [])
    await d.api.request("DELETE", `/instances/${i.instance_id}?force=1`).catch(() => undefined);
  await d?.stop();
  await rm(hidden, { recursive: true, force: true });
  await rm(dir, { recursive: true, force: true });
});

test("a store in a 0700 folder: cold boot, snapshot and restore work, and the store is left as it was", async () => {
  assert.equal((await stat(hidden)).mode & 0o777, 0o700);
  let r = await d.api.post("/start", {
    manifest: "demo/vm:plain",
    overrides: { name: "counter", cmdline: "ovms.mode=counter", accel: "tcg" },
  });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const id = r.body.instance_id as string;
  await serialLine(d.api, "counter", /^OVMS-COUNTER: 3$/, 120_000);
  const s = (await d.api.get("/status/counter")).body;
  assert.equal(s.boot.phase, "booted");
  assert.equal(s.boot.timeout_ms, 20_000, "ovmd --boot-timeout 20");
  if (process.getuid?.() === 0) assert.equal(s.confinement.user, "nobody");
  // Instance state lives with the daemon, not in the user's store.
  assert.ok(existsSync(join(daemonStateDir(store), "instances", id, "state.json")));
  assert.ok(!existsSync(join(store, ".ovms", "instances")));
  r = await d.api.post("/snapshot", { instance_id: "counter", tag: "demo/vm:snap", stop: true });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  r = await d.api.post("/start", { manifest: "demo/vm:snap", overrides: { name: "clone" } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const first = Number((await serialLine(d.api, "clone", /^OVMS-COUNTER: \d+$/)).split(" ")[1]);
  assert.ok(first >= 3, `the clone counts on (${first})`);
  assert.equal((await d.api.get("/status/clone")).body.boot.phase, "unwatched");
  for (const n of ["clone", "counter"]) await d.api.request("DELETE", `/instances/${n}?force=1`);
  assert.equal((await stat(hidden)).mode & 0o777, 0o700, "the store's folder keeps its mode");
  assert.equal((await stat(store)).uid, 0);
});

test("a boot whose console stays silent is `stalled` in GET /status, with a hint; stop ends it", async () => {
  const r = await d.api.post("/start", {
    manifest: "demo/vm:plain",
    overrides: {
      name: "silent",
      accel: "tcg",
      cmdline: "loglevel=0 rdinit=/bin/busybox -- sleep 3600",
      boot_timeout_ms: 3000,
    },
  });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const s = await waitFor(
    "the instance to stall",
    async () => {
      const b = (await d.api.get("/status/silent")).body;
      return b.state === "stalled" ? b : undefined;
    },
    60_000,
  );
  assert.equal(s.boot.phase, "stalled");
  assert.ok(Array.isArray(s.boot.console_tail));
  assert.match(s.reason, /^boot stalled: .*(console=ttyS0|TSC)/);
  assert.ok(s.pid > 0, "the VMM still runs");
  const listed = (await d.api.get("/instances")).body.instances.find(
    (i: { name: string }) => i.name === "silent",
  );
  assert.equal(listed.state, "stalled");
  // What a person sees.
  const st = await ovm(["status", "silent"], d.env);
  assert.equal(st.code, 0, st.stderr);
  assert.match(st.stdout, /State:\s+stalled \(boot stalled: /);
  assert.match(st.stdout, /Boot watch:\s+stalled \(silence allowed 3s\)/);
  if (process.getuid?.() === 0) assert.match(st.stdout, /Confined:\s+(namespaces|user) as nobody/);
  // What the QEMU keeps is said beside it (cap_sys_ptrace for background snapshots, when confined).
  const caps = (await d.api.get("/status/silent")).body.confinement?.capabilities as string[] | undefined;
  if (caps) assert.match(st.stdout, new RegExp(`keeps ${caps.map((c) => `cap_${c}`).join(",")}`));
  assert.match((await ovm(["ps"], d.env)).stdout, /\ssilent\s+stalled\s/);
  assert.deepEqual((await d.api.post("/stop", { instance_id: "silent", force: true })).body, {
    status: "exited",
    instance_id: r.body.instance_id,
    name: "silent",
  });
});

test("boot_timeout_ms is checked by the contract: a negative one is 400 naming it", async () => {
  const r = await d.api.post("/start", { manifest: "demo/vm:plain", overrides: { boot_timeout_ms: -1 } });
  assert.equal(r.status, 400);
  assert.equal(r.body.error.code, "BAD_REQUEST");
  assert.match(JSON.stringify(r.body.error.details), /boot_timeout_ms/);
});

test("ovm run in the foreground says when the boot stalls, and Ctrl-C still stops the instance", async () => {
  const child = spawn(
    process.execPath,
    [
      OVM,
      "run",
      "--name",
      "fg-silent",
      "--accel",
      "tcg",
      "--boot-timeout",
      "2",
      "--cmdline",
      "loglevel=0 rdinit=/bin/busybox -- sleep 3600",
      "demo/vm:plain",
    ],
    { env: { ...process.env, ...d.env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  child.stdout.resume();
  const exit = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  await waitFor(
    "the stall notice",
    async () => (/fg-silent: boot stalled: /.test(stderr) ? true : undefined),
    60_000,
  );
  child.kill("SIGINT");
  const code = await Promise.race([exit, new Promise<string>((r) => setTimeout(() => r("timeout"), 30_000))]);
  assert.equal(code, 0, `ovm run exited ${code}: ${stderr}`);
  assert.equal((await d.api.get("/status/fg-silent")).body.state, "exited");
});
