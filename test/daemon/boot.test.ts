import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildDemo, exec, ovm } from "../helpers.js";
import { startRegistry, type RegistryServer } from "../registry-server.js";
import { ContractChecker } from "./openapi-check.js";
import { buildDemoCli, serialLine, startDaemon, waitFor, type DaemonProc } from "./harness.js";

// One real ovmd with the demo artifact (built with `ovm build`), and one guest booted on real
// QEMU shared by the tests that only look at it (a TCG boot takes seconds); tests that start
// more instances stop them at once. Test order matters: the last test stops the shared guest.
const checker = new ContractChecker();
let dir: string;
let d: DaemonProc;
let digest: string;
let guest: { instance_id: string; name: string };

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-daemon-boot-"));
  d = await startDaemon(join(dir, "a"), checker);
  digest = await buildDemoCli(d.env);
  const r = await d.api.post("/start", {
    manifest: "demo/vm:1.0",
    overrides: { name: "guest", cmdline: "ovms.mode=ivshmem", accel: "auto" },
  });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  guest = r.body;
});

after(async () => {
  for (const i of (await d?.api.get("/instances?all=1").catch(() => undefined))?.body.instances ?? []) {
    await d.api.request("DELETE", `/instances/${i.instance_id}?force=1`).catch(() => undefined);
  }
  await d?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** startAndStop starts `manifest`, checks what it runs, and force-stops it. */
async function startAndStop(daemon: DaemonProc, manifest: string, wantDigest = digest) {
  const r = await daemon.api.post("/start", { manifest, overrides: { accel: "tcg", memory: 128 << 20 } });
  assert.equal(r.status, 202, `${manifest}: ${JSON.stringify(r.body)}`);
  const s = await daemon.api.get(`/status/${r.body.instance_id}`);
  assert.equal(s.body.artifact.digest, wantDigest);
  assert.ok(["starting", "running"].includes(s.body.state), s.body.state);
  const stop = await daemon.api.post("/stop", { instance_id: r.body.instance_id, force: true });
  assert.deepEqual(stop.body, { status: "exited", instance_id: r.body.instance_id, name: r.body.name });
  assert.equal((await daemon.api.request("DELETE", `/instances/${r.body.instance_id}`)).status, 200);
  return s.body;
}

test("POST /start answers 202, and the guest boots from the layered disk", async () => {
  assert.equal(guest.name, "guest");
  assert.match(guest.instance_id, /^[0-9a-f-]{36}$/);
  assert.match(await serialLine(d.api, "guest", /^OVMS-DISK:/), /base layer/);
  assert.match(await serialLine(d.api, "guest", /^OVMS-LAYER:/), /hello from the diff layer/);
  await serialLine(d.api, "guest", /^OVMS-IVSHMEM: ready/);
  const s = await d.api.get("/status/guest");
  assert.equal(s.status, 200);
  assert.equal(s.body.instance_id, guest.instance_id);
  assert.equal(s.body.state, "running");
  assert.equal(s.body.machine, "q35", "ivshmem needs PCI");
  assert.equal(s.body.artifact.digest, digest);
  assert.equal(s.body.artifact.reference, "demo/vm:1.0");
  assert.ok(s.body.pid > 0 && s.body.metrics.boot_ms > 0 && s.body.metrics.start_ms > 0);
  assert.deepEqual(s.body.devices, [{ type: "ivshmem", name: "shm0", size: 1 << 20 }]);
});

test("an instance is found by id, name and the short id `ovm ps` shows", async () => {
  const short = guest.instance_id.replace(/-/g, "").slice(0, 12);
  for (const ref of [guest.instance_id, "guest", short]) {
    const r = await d.api.get(`/status/${ref}`);
    assert.equal(r.status, 200, ref);
    assert.equal(r.body.instance_id, guest.instance_id);
  }
  const list = await d.api.get("/instances");
  assert.deepEqual(
    list.body.instances.map((i: { name: string }) => i.name),
    ["guest"],
  );
});

test("a name in use is 409 CONFLICT, and nothing is created", async () => {
  const r = await d.api.post("/start", { manifest: "demo/vm:1.0", overrides: { name: "guest" } });
  assert.equal(r.status, 409);
  assert.equal(r.body.error.code, "CONFLICT");
  assert.equal((await d.api.get("/instances?all=1")).body.instances.length, 1);
});

test("inject (utf8 and base64) reaches the guest through IVSHMEM, seen on a followed log", async () => {
  const text = "hello from the daemon";
  const seen = d.api.follow(
    `/logs/guest?follow=1&tail=1`,
    (rec) => rec.line === `OVMS-INJECT: ${text}`,
    30_000,
  );
  // Demo protocol: the bytes at offset 4, then their length (u32 LE) at offset 0.
  let r = await d.api.post("/inject", {
    instance_id: "guest",
    content: { mmio: { device: "shm0", offset: 4, data: text, encoding: "utf8" } },
  });
  assert.deepEqual(r.body, { status: "ok", bytes: text.length });
  const len = Buffer.alloc(4);
  len.writeUInt32LE(text.length);
  r = await d.api.post("/inject", {
    instance_id: guest.instance_id,
    content: { mmio: { data: len.toString("base64") } },
  });
  assert.deepEqual(r.body, { status: "ok", bytes: 4 });
  const records = await seen;
  assert.equal(records[records.length - 1].line, `OVMS-INJECT: ${text}`);
  assert.ok(!records.some((x) => /^OVMS-READY/.test(x.line)), "tail=1 starts with the last line only");
});

test("inject refusals: unknown device, bad base64, past the region's end", async () => {
  for (const mmio of [
    { device: "nope", data: "aGk=" },
    { data: "not base64!" },
    { offset: (1 << 20) - 2, data: "aGVsbG8=" },
  ]) {
    const r = await d.api.post("/inject", { instance_id: "guest", content: { mmio } });
    assert.equal(r.status, 400, JSON.stringify(mmio));
    assert.equal(r.body.error.code, "BAD_REQUEST");
  }
});

test("GET /logs: whole log, tail=N", async () => {
  const all = await d.api.get("/logs/guest");
  assert.ok(all.body.length > 3);
  assert.ok(all.body.some((x: { line: string }) => x.line === "OVMS-READY"));
  const tail = await d.api.get("/logs/guest?tail=2");
  assert.deepEqual(
    tail.body.map((x: { line: string }) => x.line),
    all.body.slice(-2).map((x: { line: string }) => x.line),
  );
  assert.deepEqual((await d.api.get("/logs/guest?tail=0")).body, [], "tail=0: no old lines");
});

test("POST /start takes an OCI layout folder, a tar of one, PATH:NAME and a manifest.json", async () => {
  const layout = join(dir, "layout");
  await exec("skopeo", ["copy", "--quiet", `oci:${d.store}:docker.io/demo/vm:1.0`, `oci:${layout}:demo`]);
  const tarFile = join(dir, "layout.tar");
  await exec("tar", ["-cf", tarFile, "-C", layout, "."]);
  assert.equal((await startAndStop(d, layout)).artifact.reference, layout);
  assert.equal((await startAndStop(d, tarFile)).artifact.reference, tarFile);
  await startAndStop(d, `${layout}:demo`);

  const inspect = JSON.parse((await ovm(["--json", "inspect", "demo/vm:1.0"], d.env)).stdout);
  const file = join(dir, "manifest.json");
  await writeFile(file, JSON.stringify(inspect.manifest));
  // A manifest.json (the OVMS manifest) gets its OCI manifest made in the store: a new digest.
  const r = await d.api.post("/start", {
    manifest: file,
    overrides: { accel: "tcg", memory: 128 << 20, name: "from-json" },
  });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const st = await d.api.get("/status/from-json");
  assert.equal(st.body.artifact.reference, file);
  assert.notEqual(st.body.artifact.digest, digest);
  assert.deepEqual((await d.api.request("DELETE", "/instances/from-json?force=1")).body, {
    status: "removed",
    instance_id: st.body.instance_id,
    name: "from-json",
  });
});

test("a registry reference is pulled when missing; daemons of different stores do not see each other", async () => {
  let registry: RegistryServer | undefined;
  let b: DaemonProc | undefined;
  try {
    registry = await startRegistry();
    const ref = `${registry.host}/demo/vm:1.0`;
    assert.equal((await ovm(["tag", "demo/vm:1.0", ref], d.env)).code, 0);
    const push = await ovm(["push", ref], d.env);
    assert.equal(push.code, 0, push.stderr);
    b = await startDaemon(join(dir, "b"), checker);
    assert.deepEqual(
      (await b.api.get("/instances?all=1")).body,
      { instances: [] },
      "B does not see A's guest",
    );
    assert.equal((await b.api.get("/status/guest")).status, 404);
    assert.equal((await b.api.get(`/status/${guest.instance_id}`)).status, 404);

    const info = await startAndStop(b, ref);
    assert.equal(info.artifact.reference, ref);
    const ls = JSON.parse((await ovm(["--json", "ls"], b.env)).stdout) as { reference: string }[];
    assert.deepEqual(
      ls.map((x) => x.reference),
      [ref],
      "B's store now holds the pulled artifact",
    );
    assert.deepEqual(
      (await d.api.get("/instances")).body.instances.map((i: { name: string }) => i.name),
      ["guest"],
      "A does not see B's",
    );
  } finally {
    await b?.stop();
    await registry?.stop();
  }
});

test("after the daemon is killed (SIGKILL), a new one re-attaches to the running guest", async () => {
  const before = await d.api.get("/status/guest");
  d.proc.kill("SIGKILL");
  await new Promise((r) => d.proc.once("exit", r));
  assert.doesNotThrow(() => process.kill(before.body.pid, 0), "QEMU outlives its daemon");
  d = await startDaemon(join(dir, "a"), checker);
  const s = await d.api.get("/status/guest");
  assert.equal(s.body.state, "running");
  assert.equal(s.body.pid, before.body.pid);
  assert.match(
    await serialLine(d.api, "guest", /^OVMS-INJECT:/),
    /hello from the daemon/,
    "its log is still there",
  );
});

test("POST /snapshot of an instance with an ivshmem device; its clone takes injections through its own region", async () => {
  // Captured without x-ignore-shared (QEMU 7.2 cannot restore a skipped ivshmem BAR): the RAM
  // comes out of the stream, the region's pages stay in the device state.
  let r = await d.api.post("/snapshot", { instance_id: "guest", tag: "demo/vm:ivsnap" });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  // As root with bubblewrap QEMU keeps CAP_SYS_PTRACE for userfaultfd: the guest's RAM and the
  // region are written after the pause, from write-protected memory (rfc §5.8).
  const confined = process.getuid?.() === 0 && existsSync("/usr/bin/bwrap");
  assert.equal(r.body.pause_mode, confined ? "background" : "copy", JSON.stringify(r.body));
  assert.equal((await d.api.get("/status/guest")).body.state, "running", "the guest keeps running");
  r = await d.api.post("/start", { manifest: "demo/vm:ivsnap", overrides: { name: "ivclone" }, wait: true });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.equal(r.body.state, "running");
  const text = "hello to the clone";
  const seen = d.api.follow(`/logs/ivclone?follow=1`, (rec) => rec.line === `OVMS-INJECT: ${text}`, 60_000);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(text.length);
  for (const [offset, data] of [
    [4, Buffer.from(text)],
    [0, len],
  ] as const) {
    const w = await d.api.post("/inject", {
      instance_id: "ivclone",
      content: { mmio: { device: "shm0", offset, data: data.toString("base64") } },
    });
    assert.equal(w.status, 200, JSON.stringify(w.body));
  }
  const records = await seen;
  assert.ok(!records.some((x) => /^OVMS-READY/.test(x.line)), "the clone did not boot again");
  await d.api.post("/stop", { instance_id: "ivclone", force: true });
  await d.api.request("DELETE", "/instances/ivclone");
});

test("POST /snapshot of a counting guest, then POST /start of the snapshot: the clone counts on", async () => {
  // A second artifact without devices, built into the daemon's store by this process.
  const { Store } = await import("../../src/store/store.js");
  await buildDemo(await Store.open(join(dir, "a", "store")), "demo/vm:plain", false);
  let r = await d.api.post("/start", {
    manifest: "demo/vm:plain",
    overrides: { name: "counter", cmdline: "ovms.mode=counter", accel: "tcg" },
  });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await serialLine(d.api, "counter", /^OVMS-COUNTER: 3$/);
  r = await d.api.post("/snapshot", { instance_id: "counter", tag: "demo/vm:snap", stop: true });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.match(r.body.snapshot_ref, /^sha256:[a-f0-9]{64}$/);
  const snap1 = r.body.snapshot_ref as string;
  assert.equal(r.body.reference, "docker.io/demo/vm:snap");
  assert.ok(r.body.size > 0);
  assert.equal((await d.api.get("/status/counter")).body.state, "exited", "stop: true stops the source");
  r = await d.api.post("/start", { manifest: "demo/vm:snap", overrides: { name: "clone" } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.equal(
    r.body.state,
    "running",
    "the answer carries the state reached: a restore runs when it answers",
  );
  const st = await d.api.get("/status/clone");
  assert.equal(st.body.state, "running");
  assert.ok(st.body.metrics.start_ms >= 0);
  const first = Number((await serialLine(d.api, "clone", /^OVMS-COUNTER: \d+$/)).split(" ")[1]);
  assert.ok(first >= 3, `the clone continues the count (${first}), it does not start from 0`);
  const logs = await d.api.get<{ line: string }[]>("/logs/clone");
  assert.ok(!logs.body.some((x) => x.line === "OVMS-READY"), "a restore does not boot again");
  // Generation 2: a snapshot of the clone, whose subject is the snapshot it came from.
  await serialLine(d.api, "clone", new RegExp(`^OVMS-COUNTER: ${first + 2}$`));
  const again = await d.api.post("/snapshot", { instance_id: "clone", tag: "demo/vm:snap2", stop: true });
  assert.equal(again.status, 200, JSON.stringify(again.body));
  const { Store: S } = await import("../../src/store/store.js");
  const oci = await (
    await S.open(join(dir, "a", "store"))
  ).readJson<{ subject?: { digest: string } }>(again.body.snapshot_ref);
  assert.equal(oci.subject?.digest, snap1, "generation 2's subject is generation 1");
  r = await d.api.post("/start", { manifest: "demo/vm:snap2", overrides: { name: "clone2" }, wait: true });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.equal(r.body.state, "running");
  const second = Number((await serialLine(d.api, "clone2", /^OVMS-COUNTER: \d+$/)).split(" ")[1]);
  assert.ok(second >= first + 2, `generation 2 counts on from the clone (${second} >= ${first + 2})`);
  for (const n of ["clone2", "clone", "counter"]) {
    await d.api.post("/stop", { instance_id: n, force: true });
    await d.api.request("DELETE", `/instances/${n}`);
  }
});

test("stop, then remove: exited instances leave the default list and DELETE removes them", async () => {
  let r = await d.api.request("DELETE", "/instances/guest");
  assert.equal(r.status, 409, "a running instance is not removed without force");
  r = await d.api.post("/kill", { instance_id: "guest", signal: 10 });
  assert.equal(r.status, 501, "no program to signal in a VM that is not a container");
  assert.equal(r.body.error.code, "NOT_IMPLEMENTED");
  assert.match(r.body.error.message, /is not a container .* only SIGKILL \(9\) and SIGTERM \(15\)/);
  r = await d.api.post("/kill", { instance_id: "guest", signal: 0 });
  assert.equal(r.status, 400, "signal 0 is not a signal");
  r = await d.api.post("/stdin", { instance_id: "guest", data: "aGk=" });
  assert.equal(r.status, 409, "no program stdin in a VM that is not a container");
  assert.match(r.body.error.message, /was not started with stdin/);
  r = await d.api.post("/stdin", { instance_id: "guest", data: "%%%" });
  assert.equal(r.status, 400, "bad base64");
  assert.equal((await d.api.get("/status/guest")).body.state, "running", "a refused signal changes nothing");
  r = await d.api.post("/stop", { instance_id: "guest", timeout_ms: 5000 });
  assert.equal(r.status, 200);
  const id = r.body.instance_id;
  assert.deepEqual(r.body, { status: "exited", instance_id: id, name: "guest" }, "the answer names the id");
  const s = await d.api.get("/status/guest");
  assert.equal(s.body.instance_id, id);
  assert.equal(s.body.state, "exited");
  assert.equal(s.body.pid, undefined);
  assert.deepEqual((await d.api.get("/instances")).body.instances, []);
  assert.equal((await d.api.get("/instances?all=1")).body.instances.length, 1);
  r = await d.api.post("/inject", { instance_id: "guest", content: { mmio: { data: "aGk=" } } });
  assert.equal(r.status, 409, "inject into an exited instance");
  r = await d.api.post("/kill", { instance_id: "guest", signal: 15 });
  assert.equal(r.status, 409, "a signal to an exited instance");
  assert.deepEqual(
    (await d.api.post("/stop", { instance_id: "guest" })).body,
    { status: "exited", instance_id: id, name: "guest" },
    "stopping twice is fine",
  );
  r = await d.api.request("DELETE", "/instances/guest");
  assert.deepEqual(r.body, { status: "removed", instance_id: id, name: "guest" });
  assert.equal((await d.api.get("/status/guest")).status, 404);
  await waitFor(
    "the daemon's log to record the removal",
    async () => (/instance removed/.test(d.output()) ? true : undefined),
    5000,
  );
});
