import { test } from "node:test";
import assert from "node:assert/strict";
import type { PreparedArtifact } from "../../../src/artifact/prepare.js";
import {
  DEFAULT_MEMORY,
  checkHost,
  defaultName,
  draftPlan,
  finishPlan,
  qemuConfig,
  type Draft,
  type HostFacts,
} from "../../../src/runtime/qemu/plan.js";
import { qemuArgv } from "../../../src/runtime/qemu/argv.js";

const D = `sha256:${"a".repeat(64)}` as const;
const S = `sha256:${"b".repeat(64)}` as const;

/** artifact is a prepared artifact as prepareArtifact would hand it over, without any file. */
function artifact(manifest: Record<string, unknown> = {}, snap?: Record<string, unknown>): PreparedArtifact {
  const a = {
    reference: "demo/vm:1.0",
    digest: D,
    manifest: { name: "demo/vm", version: "1.0", kernel: { ref: D, args: "console=ttyS0" }, ...manifest },
    kernelPath: "/store/kernel",
    initrdPath: "/store/initrd",
    disks: [{ path: "/layers/base/disk.qcow2", format: "qcow2", ref: D }],
  } as unknown as PreparedArtifact;
  if (snap) {
    a.ramSnapshot = {
      memoryFile: "/preload/memory",
      deviceStateFile: "/preload/device-state",
      digest: S,
      metadata: {
        runtime: { name: "qemu", version: "7.2.0" },
        machine: "microvm",
        memoryBytes: 192 << 20,
        vcpus: 2,
        cpuModel: "max",
        accel: "tcg",
        ...snap,
      },
    } as unknown as PreparedArtifact["ramSnapshot"];
  }
  return a;
}

const ctx = { runtime: "qemu", name: "vm-1" };
const plenty: HostFacts = { memAvailable: 2 ** 36, shm: { path: "/dev/shm/ovms", freeBytes: 2 ** 36 } };
const code = (c: string, re: RegExp) => (e: any) => e.code === c && re.test(e.message);

test("a cold boot takes its shape from the overrides, then the manifest, then the defaults", () => {
  const d = draftPlan(artifact(), {}, ctx);
  assert.deepEqual(d, {
    name: "vm-1",
    memory: DEFAULT_MEMORY,
    vcpus: 1,
    machine: "microvm",
    cmdline: "console=ttyS0",
    devices: [],
    memLock: false,
  });
  const m = draftPlan(
    artifact({ resources: { memory: 512 << 20, vcpus: 4 }, runtimeHints: { machine: "q35" } }),
    {},
    ctx,
  );
  assert.equal(m.memory, 512 << 20);
  assert.equal(m.vcpus, 4);
  assert.equal(m.machine, "q35", "the manifest's hint");
  const o = draftPlan(
    artifact({ resources: { memory: 512 << 20 } }),
    { memory: 128 << 20, cpus: 2, cmdline: "x=1", machine: "q35" },
    ctx,
  );
  assert.deepEqual([o.memory, o.vcpus, o.cmdline, o.machine], [128 << 20, 2, "console=ttyS0 x=1", "q35"]);
  assert.equal(o.accel, undefined, "a cold boot's accelerator is chosen later");
});

test("a device that needs PCI picks q35, and microvm asked with one is refused", () => {
  const shm = artifact({ devices: [{ type: "ivshmem", name: "shm0", size: 1 << 20 }] });
  assert.equal(draftPlan(shm, {}, ctx).machine, "q35");
  assert.throws(
    () => draftPlan(shm, { machine: "microvm" }, ctx),
    code("INVALID_ARGUMENT", /shm0 \(ivshmem\) needs it: use q35/),
  );
});

test("bad names, names in use and too little memory are refused", () => {
  assert.throws(
    () => draftPlan(artifact(), {}, { ...ctx, name: "bad name!" }),
    code("INVALID_ARGUMENT", /bad name!/),
  );
  assert.throws(() => draftPlan(artifact(), {}, { ...ctx, name: "-x" }), code("INVALID_ARGUMENT", /-x/));
  assert.throws(
    () => draftPlan(artifact(), {}, { ...ctx, owner: { id: "1234", state: "exited" } }),
    code("CONFLICT", /already used by instance 1234 \(exited\); remove it first/),
  );
  assert.throws(
    () => draftPlan(artifact(), { memory: 8 << 20 }, ctx),
    code("INVALID_ARGUMENT", /at least 16 MiB/),
  );
  assert.equal(draftPlan(artifact(), { memory: 16 << 20 }, ctx).memory, 16 << 20);
  assert.equal(draftPlan(artifact(), { memory: (192 << 20) + 8192 }, ctx).memory, (192 << 20) + 8192);
  assert.throws(
    () => draftPlan(artifact(), { memory: (192 << 20) + 4096 }, ctx),
    code("INVALID_ARGUMENT", /whole number of 8 KiB/),
  );
});

test("defaultName is the manifest name's last part and a suffix", () => {
  assert.equal(defaultName("library/demo/vm", "abc123"), "vm-abc123");
  assert.equal(defaultName("x".repeat(80), "s").length, 52);
});

test("a restore takes its shape from the snapshot and names every contradicting override (§5.6)", () => {
  const a = artifact({ resources: { memory: 192 << 20 } }, {});
  const d = draftPlan(a, {}, ctx);
  assert.deepEqual(
    [d.memory, d.vcpus, d.machine, d.accel, d.cpuModel],
    [192 << 20, 2, "microvm", "tcg", "max"],
  );
  assert.equal(
    draftPlan(a, { accel: "auto", memory: 192 << 20, cpus: 2, machine: "microvm" }, ctx).accel,
    "tcg",
  );
  assert.throws(
    () => draftPlan(a, { memory: 256 << 20, cpus: 1, machine: "q35", accel: "kvm", cmdline: "x=1" }, ctx),
    (e: any) =>
      e.code === "MANIFEST_INVALID" &&
      e.message.startsWith("cannot restore demo/vm:1.0: ") &&
      [
        "machine: snapshot microvm, asked q35",
        "memory: snapshot 201326592, asked 268435456",
        "vcpus: snapshot 2, asked 1",
        "accel: snapshot tcg, asked kvm",
        "cmdline: a restored kernel",
      ].every((p) => e.message.includes(p)),
  );
  assert.throws(
    () => draftPlan(artifact({}, { runtime: { name: "firecracker", version: "1" } }), {}, ctx),
    code("MANIFEST_INVALID", /runtime: snapshot firecracker, this runtime qemu/),
  );
  assert.throws(
    () => draftPlan(artifact({}, { machine: "pc" }), {}, ctx),
    code("MANIFEST_INVALID", /machine: pc is not supported/),
  );
});

test("mlock_required applies to restores only", () => {
  assert.equal(draftPlan(artifact({ ramSnapshot: { mlock_required: true } }), {}, ctx).memLock, false);
  assert.equal(draftPlan(artifact({ ramSnapshot: { mlock_required: true } }, {}), {}, ctx).memLock, true);
});

test("checkHost refuses what memory, tmpfs space or the memlock limit cannot hold", () => {
  const d: Draft = {
    ...draftPlan(
      artifact({ devices: [{ type: "ivshmem", name: "s", size: 1 << 20 }] }),
      { memory: 256 << 20 },
      ctx,
    ),
  };
  checkHost(d, plenty);
  checkHost(d, { memAvailable: 257 << 20 });
  assert.throws(
    () => checkHost(d, { memAvailable: 256 << 20 }),
    code("INSUFFICIENT_RESOURCES", /needs 257 MiB, 256 MiB are available/),
  );
  assert.throws(
    () => checkHost(d, { memAvailable: 2 ** 40, shm: { path: "/dev/shm/ovms", freeBytes: 100 << 20 } }),
    code(
      "INSUFFICIENT_RESOURCES",
      /not enough space on \/dev\/shm\/ovms for guest memory: need 257 MiB, 100 MiB free/,
    ),
  );
  const locked: Draft = { ...d, memLock: true };
  const limit = 64 << 20;
  assert.throws(
    () => checkHost(locked, { ...plenty, memlockLimit: limit }),
    code("INSUFFICIENT_RESOURCES", /256 MiB locked in RAM \(mlock_required\) but RLIMIT_MEMLOCK is 64 MiB/),
  );
  checkHost(locked, { ...plenty, memlockLimit: limit, ipcLock: true });
  checkHost(locked, { ...plenty, memlockLimit: Infinity });
  checkHost(d, { ...plenty, memlockLimit: limit });
});

test("finishPlan: the chosen accelerator and its CPU model, unless the snapshot fixed them", () => {
  const cold = draftPlan(artifact(), {}, ctx);
  assert.deepEqual([finishPlan(cold, "kvm").accel, finishPlan(cold, "kvm").cpuModel], ["kvm", "host"]);
  assert.deepEqual([finishPlan(cold, "tcg").accel, finishPlan(cold, "tcg").cpuModel], ["tcg", "max"]);
  const restore = draftPlan(artifact({}, { accel: "kvm", cpuModel: "Skylake-Server" }), {}, ctx);
  assert.deepEqual(
    [finishPlan(restore, "tcg").accel, finishPlan(restore, "tcg").cpuModel],
    ["kvm", "Skylake-Server"],
  );
});

test("qemuConfig puts files in the instance folder and memory on tmpfs; a restore maps the preload privately", () => {
  const at = { id: "i-1", dir: "/state/instances/i-1", shmDir: "/dev/shm/ovms/i-1", vmgenid: "g-1" };
  const shm = artifact({ devices: [{ type: "ivshmem", name: "shm0", size: 1 << 20 }] });
  const cfg = qemuConfig(shm, finishPlan(draftPlan(shm, {}, ctx), "tcg"), at);
  assert.equal(cfg.disk, "/state/instances/i-1/overlay.qcow2");
  assert.equal(cfg.serialLog, "/state/instances/i-1/serial.log");
  assert.equal(cfg.qmpSocket, "/dev/shm/ovms/i-1/qmp.sock");
  assert.equal(cfg.ramFile, "/dev/shm/ovms/i-1/ram");
  assert.deepEqual(cfg.devices, [
    { type: "ivshmem", name: "shm0", size: 1 << 20, path: "/dev/shm/ovms/i-1/ivshmem-shm0" },
  ]);
  assert.equal(cfg.restore, false);
  assert.equal(cfg.runAs, undefined);
  assert.ok(qemuArgv(cfg).includes("ivshmem-plain,memdev=shm-shm0,master=on"));

  const snap = artifact({}, {});
  const r = qemuConfig(snap, finishPlan(draftPlan(snap, {}, ctx), "kvm"), { ...at, runAs: "nobody" });
  assert.equal(r.ramFile, "/preload/memory");
  assert.equal(r.restore, true);
  assert.equal(r.runAs, "nobody");
  assert.equal(r.accel, "tcg", "the snapshot's accelerator");
  assert.ok(qemuArgv(r).join(" ").includes("mem-path=/preload/memory,size=201326592,share=off"));
  const diskless = { ...snap, disks: [] };
  assert.equal(qemuConfig(diskless, finishPlan(draftPlan(diskless, {}, ctx), "tcg"), at).disk, undefined);
});
