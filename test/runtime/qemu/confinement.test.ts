import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, readlink, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Store } from "../../../src/store/store.js";
import { loadArtifact, type Artifact } from "../../../src/artifact/artifact.js";
import { PrepareCache, prepareArtifact, type PreparedArtifact } from "../../../src/artifact/prepare.js";
import { packSnapshot } from "../../../src/artifact/snapshot.js";
import { QemuRuntime } from "../../../src/runtime/qemu/qemu-runtime.js";
import { isAlive } from "../../../src/runtime/qemu/supervisor.js";
import { MEMORY_OVERHEAD, tcgCodeCache } from "../../../src/runtime/qemu/cgroup.js";
import type { Instance } from "../../../src/runtime/types.js";
import { buildDemo } from "../../helpers.js";

// RFC §8.4 on real QEMU: as root with bubblewrap every QEMU runs as nobody in namespaces of its
// own and sees only its own files. The store and the state folder are both in 0700 folders
// (mkdtemp), which QEMU as nobody could never reach by path: the sandbox's bind mounts are how
// it gets its files, so any store path works. Two guests are shared by the tests; order matters.
let dir: string;
let store: Store;
let source: Artifact;
let plain: PreparedArtifact;
let rt: QemuRuntime;
let a: Instance;
let b: Instance;
const cache = new PrepareCache();
const skip = process.getuid?.() !== 0 ? "needs root" : undefined;

async function lines(r: QemuRuntime, id: string, re: RegExp): Promise<string[]> {
  const out: string[] = [];
  for await (const x of await r.logs(id)) if (re.test(x.line)) out.push(x.line);
  return out;
}

async function waitCounting(r: QemuRuntime, id: string, n = 3, timeoutMs = 90_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const c = (await lines(r, id, /^OVMS-COUNTER: \d+$/)).map((l) => Number(l.split(" ")[1]));
    if (c.length >= n) return c;
    const s = await r.status(id);
    if (s.state === "exited" || s.state === "failed") throw new Error(`${id} ${s.state}: ${s.reason}`);
    if (Date.now() > deadline) throw new Error(`${id} did not count to ${n} in ${timeoutMs} ms`);
    await new Promise((res) => setTimeout(res, 200));
  }
}

const statusOf = async (pid: number) =>
  Object.fromEntries(
    (await readFile(`/proc/${pid}/status`, "utf8"))
      .split("\n")
      .map((l) => l.split(":\t"))
      .filter((p) => p.length === 2)
      .map(([k, v]) => [k, v.trim()]),
  ) as Record<string, string>;

before(async () => {
  if (skip) return;
  dir = await mkdtemp(join(tmpdir(), "ovms-confine-"));
  assert.equal((await stat(dir)).mode & 0o777, 0o700);
  store = await Store.open(join(dir, "store"));
  await buildDemo(store, "demo/vm:1.0", false);
  source = await loadArtifact(store, "demo/vm:1.0");
  plain = await prepareArtifact(store, source, { cache });
  rt = await QemuRuntime.create({ stateDir: join(dir, "state") });
  if (rt.confinement !== "namespaces") return;
  [a, b] = await Promise.all(
    ["conf-a", "conf-b"].map((name) => rt.start(plain, { accel: "tcg", cmdline: "ovms.mode=counter", name })),
  );
  await Promise.all([waitCounting(rt, a.id), waitCounting(rt, b.id)]);
});

after(async () => {
  if (!rt) return;
  for (const i of await rt.list({ all: true })) await rt.remove(i.id, { force: true }).catch(() => undefined);
  await rt.close();
  await rm(dir, { recursive: true, force: true });
});

const why = () => skip ?? (rt.confinement !== "namespaces" ? "bubblewrap is not installed" : undefined);

// CAP_SYS_PTRACE is bit 19: what a confined QEMU keeps for userfaultfd (background snapshots).
const SYS_PTRACE = (1 << 19).toString(16).padStart(16, "0");

test("QEMU runs as nobody in namespaces of its own, with seccomp, no_new_privs and no capability but CAP_SYS_PTRACE for userfaultfd", async (t) => {
  if (why()) return t.skip(why());
  const s = await statusOf(a.pid!);
  assert.equal(s.Uid, "65534\t65534\t65534\t65534");
  assert.equal(s.Gid, "65534\t65534\t65534\t65534");
  assert.equal(s.NSpid, `${a.pid}\t1`, "QEMU is pid 1 of its own PID namespace");
  const uffdCap =
    rt.backgroundSnapshots &&
    (await readFile("/proc/sys/vm/unprivileged_userfaultfd", "utf8")).trim() === "0";
  const caps = uffdCap ? SYS_PTRACE : "0000000000000000";
  assert.equal(s.CapEff, caps);
  assert.equal(s.CapBnd, caps);
  assert.equal(s.NoNewPrivs, "1");
  assert.equal(s.Seccomp, "2", "the -sandbox filter is on");
  for (const ns of ["mnt", "pid", "ipc", "uts", "net", "cgroup"]) {
    const mine = await readlink(`/proc/self/ns/${ns}`);
    assert.notEqual(await readlink(`/proc/${a.pid}/ns/${ns}`), mine, `${ns} namespace of its own`);
    assert.notEqual(await readlink(`/proc/${a.pid}/ns/${ns}`), await readlink(`/proc/${b.pid}/ns/${ns}`));
  }
  const cmd = (await readFile(`/proc/${a.pid}/cmdline`, "utf8")).split("\0");
  assert.ok(!cmd.includes("-runas"), "no setuid in QEMU");
  assert.ok(cmd.join(" ").includes("elevateprivileges=deny,spawn=deny"));
  const info = await rt.status(a.id);
  assert.equal(info.confinement?.mode, "namespaces");
  assert.equal(info.confinement?.user, "nobody");
  assert.deepEqual(info.confinement?.namespaces, ["mnt", "pid", "ipc", "uts", "cgroup", "net"]);
  assert.deepEqual(info.confinement?.capabilities, uffdCap ? ["sys_ptrace"] : undefined);
});

test("with background snapshots off (ovmd --background-snapshots off) a confined QEMU keeps no capability", async (t) => {
  if (why()) return t.skip(why());
  const off = await QemuRuntime.create({ stateDir: join(dir, "state-off"), backgroundSnapshots: false });
  try {
    assert.equal(off.backgroundSnapshots, false);
    const i = await off.start(plain, { accel: "tcg", name: "no-uffd" });
    const s = await statusOf(i.pid!);
    assert.equal(s.CapEff, "0000000000000000");
    assert.equal(s.CapBnd, "0000000000000000");
    assert.equal((await off.status(i.id)).confinement?.capabilities, undefined);
  } finally {
    for (const i of await off.list({ all: true }))
      await off.remove(i.id, { force: true }).catch(() => undefined);
    await off.close();
  }
});

test("it sees only its kernel, initrd, layers, overlay, log and memory folder; nothing of B, the store or the host", async (t) => {
  if (why()) return t.skip(why());
  const root = `/proc/${a.pid}/root`;
  const inside = (p: string) => existsSync(join(root, p));
  const dirA = join(dir, "state", "instances", a.id);
  const dirB = join(dir, "state", "instances", b.id);
  for (const p of [plain.kernelPath, plain.initrdPath!, ...plain.disks.map((d) => d.path)])
    assert.ok(inside(p), `${p} is there`);
  assert.ok(inside(join(dirA, "overlay.qcow2")) && inside(join(dirA, "serial.log")));
  assert.ok(inside(`/dev/shm/ovms/${a.id}/qmp.sock`) && inside(`/dev/shm/ovms/${a.id}/ram`));
  assert.ok(!inside(join(dirA, "state.json")), "not even its own state.json");
  assert.ok(!inside(dirB) && !inside(`/dev/shm/ovms/${b.id}`), "nothing of the other instance");
  // The store: its index, layout file and every blob but the kernel and initrd stay out of sight.
  assert.ok(!inside(join(store.root, "index.json")) && !inside(join(store.root, "oci-layout")));
  const blobs = await readdir(join(store.root, "blobs", "sha256"));
  const seen = blobs.filter((h) => inside(join(store.root, "blobs", "sha256", h)));
  assert.deepEqual(seen.sort(), [plain.kernelPath, plain.initrdPath!].map((p) => p.split("/").pop()).sort());
  assert.ok(blobs.length > seen.length + 3, `${blobs.length} blobs in the store, ${seen.length} visible`);
  for (const p of ["/etc/passwd", "/etc/shadow", "/root", "/home", "/var", "/sys", "/run"])
    assert.ok(!inside(p), `${p} is not there`);
  assert.deepEqual(
    (await readdir(join(root, "proc"))).filter((e) => /^\d+$/.test(e)),
    ["1"],
    "its /proc shows one process: itself",
  );
  // The store and its folder keep the modes the user gave them.
  assert.equal((await stat(dir)).mode & 0o777, 0o700);
});

test("its cgroup holds QEMU with the instance's limits, or status says why there are none", async (t) => {
  if (why()) return t.skip(why());
  const limits = (await rt.status(a.id)).confinement!.limits;
  if (!limits.enforced) {
    assert.ok(limits.note);
    return t.skip(`no limits on this host: ${limits.note}`);
  }
  assert.equal(
    limits.memoryMax,
    (192 << 20) + MEMORY_OVERHEAD + tcgCodeCache(),
    "guest + QEMU + TCG's cache",
  );
  assert.equal(limits.cpuMax, 1);
  const cg = await readFile(`/proc/${a.pid}/cgroup`, "utf8");
  assert.ok(
    cg.split("\n").filter((l) => l.endsWith(`/ovms/${a.id}`) || l.endsWith(`/${a.id}`)).length >= 1,
    cg,
  );
});

test("a restarted runtime re-attaches to the confined QEMU, and its stop reaches QEMU and the sandbox", async (t) => {
  if (why()) return t.skip(why());
  await rt.close();
  rt = await QemuRuntime.create({ stateDir: join(dir, "state") });
  await rt.recover();
  const seen = await rt.status("conf-a");
  assert.equal(seen.state, "running");
  assert.equal(seen.pid, a.pid, "QEMU's own pid, not the sandbox's");
  const launcher = JSON.parse(await readFile(join(dir, "state", "instances", a.id, "state.json"), "utf8"))
    .launcher_pid as number;
  assert.ok(launcher && launcher !== a.pid && isAlive(launcher), "the sandbox process is recorded");
  const stopped = await rt.stop("conf-a", { timeoutMs: 5000 });
  assert.equal(stopped.state, "exited");
  assert.equal(isAlive(a.pid!), false);
  for (let i = 0; i < 50 && isAlive(launcher); i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(isAlive(launcher), false, "bwrap ends with QEMU");
});

test("kill -9 of a confined QEMU is reported failed, killed by SIGKILL", async (t) => {
  if (why()) return t.skip(why());
  const c = await rt.start(plain, { accel: "tcg", name: "conf-victim" });
  process.kill(c.pid!, "SIGKILL");
  for (let i = 0; i < 100 && !["failed", "exited"].includes((await rt.status(c.id)).state); i++)
    await new Promise((r) => setTimeout(r, 100));
  const dead = await rt.status(c.id);
  assert.equal(dead.state, "failed");
  assert.match(dead.reason ?? "", /killed by SIGKILL/);
});

test("snapshot, restore and the warm pool work confined, from a store in a 0700 folder", async (t) => {
  if (why()) return t.skip(why());
  const before = Math.max(...(await waitCounting(rt, b.id)));
  await rt.snapshot(b.id, { stop: true }, (c) => packSnapshot(store, source, c, "demo/vm:snap"));
  const snap = await prepareArtifact(store, await loadArtifact(store, "demo/vm:snap"), { cache });
  const clone = await rt.start(snap, { name: "conf-clone" });
  assert.equal(clone.state, "running");
  assert.ok((await waitCounting(rt, clone.id, 1))[0] >= before, "the clone counts on from the snapshot");
  assert.equal(clone.boot?.phase, "unwatched", "a restored kernel is not booting");
  const root = `/proc/${clone.pid}/root`;
  assert.ok(existsSync(join(root, snap.ramSnapshot!.memoryFile)), "its preloaded memory is there");
  assert.ok(!existsSync(join(root, snap.ramSnapshot!.deviceStateFile)), "the device state is the daemon's");
  assert.equal((await statusOf(clone.pid!)).Uid, "65534\t65534\t65534\t65534");
  await rt.pool.configure(snap, 1);
  assert.equal(rt.pool.status()[0].ready, 1);
  const pooled = await rt.start(snap, { name: "conf-pooled" });
  assert.equal(pooled.state, "running");
  await waitCounting(rt, pooled.id, 1);
  assert.equal((await rt.status(pooled.id)).confinement?.mode, "namespaces");
  await rt.pool.configure(snap, 0);
  for (const i of [clone, pooled]) assert.equal((await rt.stop(i.id, { force: true })).state, "exited");
  assert.equal((await stat(dirname(store.root))).mode & 0o777, 0o700, "the store's folder is untouched");
});

test("without namespaces (-runas), a state folder QEMU cannot reach is refused at once, naming the folder", async (t) => {
  if (why()) return t.skip(why());
  const hidden = await mkdtemp(join(tmpdir(), "ovms-legacy-"));
  try {
    await assert.rejects(
      QemuRuntime.create({ stateDir: join(hidden, "state"), confine: "off" }),
      (e: any) =>
        e.code === "RUNTIME_UNAVAILABLE" &&
        e.message.includes(`${hidden} (mode 700) is not reachable by the QEMU user nobody`) &&
        /install bubblewrap/.test(e.message),
    );
  } finally {
    await rm(hidden, { recursive: true, force: true });
  }
});
