import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { Store } from "../../../src/store/store.js";
import { loadArtifact } from "../../../src/artifact/artifact.js";
import { PrepareCache, prepareArtifact, type PreparedArtifact } from "../../../src/artifact/prepare.js";
import { kvmWorks } from "../../../src/runtime/qemu/accel.js";
import { QemuRuntime } from "../../../src/runtime/qemu/qemu-runtime.js";
import { imageInfo } from "../../../src/artifact/qemu-img.js";
import { buildDemo } from "../../helpers.js";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";

// One store and one runtime for the file; guests are booted once per behaviour and shared
// where the assertions do not interfere (TCG boots take seconds).
let dir: string;
let store: Store;
let rt: QemuRuntime;
let withShm: PreparedArtifact;
let plain: PreparedArtifact;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-rt-"));
  await chmod(dir, 0o755); // QEMU runs as nobody when the tests run as root
  store = await Store.open(join(dir, "store"));
  await buildDemo(store, "demo/vm:shm", true);
  await buildDemo(store, "demo/vm:plain", false);
  const cache = new PrepareCache();
  withShm = await prepareArtifact(store, await loadArtifact(store, "demo/vm:shm"), { cache });
  plain = await prepareArtifact(store, await loadArtifact(store, "demo/vm:plain"), { cache });
  rt = await QemuRuntime.create({ stateDir: join(store.workDir) });
});

after(async () => {
  for (const i of await rt.list({ all: true })) await rt.remove(i.id, { force: true }).catch(() => undefined);
  await rt.close();
  await rm(dir, { recursive: true, force: true });
});

/** waitLine waits until a serial line matches `re` and returns it. */
async function waitLine(r: QemuRuntime, id: string, re: RegExp, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for await (const rec of await r.logs(id)) if (re.test(rec.line)) return rec.line;
    const s = await r.status(id);
    if (s.state === "exited" || s.state === "failed")
      throw new Error(`instance ${id} ${s.state} (${s.reason}) before ${re}`);
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`no line matching ${re} in ${timeoutMs} ms`);
}

const sha = async (p: string) =>
  createHash("sha256")
    .update(await readFile(p))
    .digest("hex");

test("boots the demo artifact on q35: the guest sees base + diff layers, and inject reaches it through IVSHMEM", async () => {
  const info = await rt.start(withShm, { cmdline: "ovms.mode=ivshmem", name: "shm-guest", accel: "auto" });
  assert.equal(info.machine, "q35", "ivshmem needs PCI");
  assert.equal(info.state, "running");
  // Whatever this host's KVM does, `auto` runs on what the probe found (a hanging nested KVM is refused).
  assert.equal(info.accel, (await kvmWorks(withShm.kernelPath)) ? "kvm" : "tcg");
  assert.match(await waitLine(rt, info.id, /^OVMS-DISK:/), /OVMS-DISK: base layer/);
  assert.match(await waitLine(rt, info.id, /^OVMS-LAYER:/), /OVMS-LAYER: hello from the diff layer/);
  await waitLine(rt, info.id, /^OVMS-IVSHMEM: ready/);

  const text = "hello from the host";
  const msg = Buffer.alloc(4 + text.length);
  msg.writeUInt32LE(text.length, 0);
  msg.write(text, 4);
  assert.equal(await rt.inject(info.id, { data: msg }), msg.length);
  assert.equal(await waitLine(rt, info.id, /^OVMS-INJECT:/, 20_000), `OVMS-INJECT: ${text}`);

  const st = await rt.status("shm-guest");
  assert.equal(st.id, info.id);
  assert.ok(st.pid && st.pid > 0);
  assert.ok(st.metrics.bootMs! > 0 && st.metrics.startMs! > 0);
  assert.ok(st.metrics.cpuTimeMs! > 0);
  assert.deepEqual(st.devices, [{ type: "ivshmem", name: "shm0", size: 1 << 20 }]);
  await assert.rejects(
    rt.inject(info.id, { data: Buffer.alloc(16), offset: (1 << 20) - 8 }),
    /does not fit device shm0/,
  );
  await assert.rejects(rt.inject(info.id, { device: "nope", data: Buffer.alloc(1) }), /has no device "nope"/);

  const stopped = await rt.stop(info.id, { timeoutMs: 3000 });
  assert.equal(stopped.state, "exited");
  assert.equal(stopped.pid, undefined);
  assert.throws(() => process.kill(st.pid!, 0), "no QEMU process is left behind");
});

test("an overlay write does not change the pulled layers", async () => {
  const before = await Promise.all(plain.disks.map((d) => sha(d.path)));
  for (const d of plain.disks)
    assert.equal((await stat(d.path)).mode & 0o222, 0, "unpacked layers are read-only");
  const info = await rt.start(plain, { cmdline: "ovms.mode=write", accel: "tcg" });
  assert.equal(info.machine, "microvm");
  await waitLine(rt, info.id, /^OVMS-WROTE/);
  await rt.stop(info.id, { timeoutMs: 2000 });
  assert.deepEqual(await Promise.all(plain.disks.map((d) => sha(d.path))), before);
  const overlay = join(store.workDir, "instances", info.id, "overlay.qcow2");
  const oi = await imageInfo(overlay);
  assert.equal(oi.backingFilename, plain.disks[plain.disks.length - 1].path);
  assert.ok(oi.actualSize > 200_000, `the guest's write landed in the overlay (${oi.actualSize} bytes)`);
  // The layers' blobs in the store are untouched too.
  for (const d of plain.disks) await store.readBlob(d.ref);
});

test("a restarted daemon re-attaches to a running instance and can stop it", async () => {
  // rtA plays the daemon that dies: it closes its connections and leaves QEMU running.
  const rtA = await QemuRuntime.create({ stateDir: store.workDir });
  const info = await rtA.start(plain, { accel: "tcg", name: "survivor" });
  await waitLine(rtA, info.id, /^OVMS-READY/);
  await rtA.close();
  const rtB = await QemuRuntime.create({ stateDir: store.workDir });
  await rtB.recover();
  const seen = await rtB.status("survivor");
  assert.equal(seen.state, "running");
  assert.equal(seen.pid, info.pid);
  const stopped = await rtB.stop("survivor", { timeoutMs: 3000 });
  assert.equal(stopped.state, "exited");
  assert.throws(() => process.kill(info.pid!, 0), "QEMU is gone after the stop");
  await rtB.close();
});

test("kill -9 of QEMU is reported failed, now and after a daemon restart", async () => {
  const info = await rt.start(plain, { accel: "tcg", name: "victim" });
  await waitLine(rt, info.id, /^OVMS-READY/);
  process.kill(info.pid!, "SIGKILL");
  for (let i = 0; i < 50 && (await rt.status("victim")).state === "running"; i++)
    await new Promise((r) => setTimeout(r, 100));
  const dead = await rt.status("victim");
  assert.equal(dead.state, "failed");
  assert.match(dead.reason ?? "", /killed by SIGKILL/);
  const rtC = await QemuRuntime.create({ stateDir: store.workDir });
  await rtC.recover();
  const later = await rtC.status("victim");
  assert.equal(later.state, "failed");
  assert.equal(later.pid, undefined);
  await rtC.close();
});

test("five instances at once each boot, get their own id, log and overlay", async () => {
  const infos = await Promise.all(
    [0, 1, 2, 3, 4].map((i) => rt.start(plain, { accel: "tcg", memory: 128 << 20, name: `five-${i}` })),
  );
  assert.equal(new Set(infos.map((i) => i.id)).size, 5);
  await Promise.all(infos.map((i) => waitLine(rt, i.id, /^OVMS-READY/, 120_000)));
  assert.equal((await rt.list()).filter((i) => i.name.startsWith("five-")).length, 5);
  const stopped = await Promise.all(infos.map((i) => rt.stop(i.id, { force: true })));
  assert.deepEqual(
    stopped.map((s) => s.state),
    Array(5).fill("exited"),
  );
});

test("bad input is refused before anything is created", async () => {
  const before = (await readdir(join(store.workDir, "instances"))).length;
  await assert.rejects(
    rt.start(plain, { memory: 2 ** 42 }),
    (e: any) => e.code === "INSUFFICIENT_RESOURCES" && /not enough memory/.test(e.message),
  );
  await assert.rejects(
    rt.start(withShm, { machine: "microvm" }),
    (e: any) => e.code === "INVALID_ARGUMENT" && /needs it: use q35/.test(e.message),
  );
  await assert.rejects(rt.start(plain, { name: "bad name!" }), (e: any) => e.code === "INVALID_ARGUMENT");
  await assert.rejects(rt.start(plain, { name: "five-0" }), (e: any) => e.code === "CONFLICT");
  await assert.rejects(rt.stop("no-such-instance"), (e: any) => e.code === "NOT_FOUND");
  assert.equal((await readdir(join(store.workDir, "instances"))).length, before);
});
