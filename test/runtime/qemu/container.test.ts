import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import type { PreparedArtifact } from "../../../src/artifact/prepare.js";
import { isOvmsError } from "../../../src/core/errors.js";
import { qemuArgv } from "../../../src/runtime/qemu/argv.js";
import { readProgramExit, writeLaunchInitrd } from "../../../src/runtime/qemu/container.js";
import { draftPlan, finishPlan, qemuConfig } from "../../../src/runtime/qemu/plan.js";
import { InstanceRecords, type InstanceRecord } from "../../../src/runtime/qemu/records.js";
import { toInstance } from "../../../src/runtime/qemu/record-views.js";
import { checkRuntimeChoice } from "../../../src/runtime/adapters.js";
import { tempDir } from "../../helpers.js";

// The runtime's half of the OVMS-Init profile (rfc §6.7), without a VM: the launch file in
// the plan, the control port on the command line, the instance's own initrd, the program's
// exit status read back, and the runtime choice.
const D = `sha256:${"c".repeat(64)}` as const;

function container(bootstrap: Record<string, unknown> = { cmd: ["sh", "-c", "echo hi"] }): PreparedArtifact {
  return {
    reference: "tools/busybox:vm",
    digest: D,
    manifest: {
      name: "tools/busybox",
      version: "vm",
      kernel: { ref: D, args: "console=ttyS1 quiet" },
      containerMode: true,
    },
    kernelPath: "/store/kernel",
    initrdPath: "/store/ovms-init",
    disks: [{ path: "/layers/rootfs/disk.qcow2", format: "qcow2", ref: D }],
    bootstrap: { schemaVersion: 1, mediaType: "application/vnd.ovms.bootstrap.config.v1+json", ...bootstrap },
  } as unknown as PreparedArtifact;
}

const ctx = { runtime: "qemu", name: "web-1" };

test("a container's plan holds its launch file: OCI argv, overrides, the instance name as hostname", () => {
  const draft = draftPlan(
    container({ entrypoint: ["/bin/tool"], cmd: ["default"], env: ["A=1"] }),
    { args: ["x y"], env: ["A=2"] },
    ctx,
  );
  assert.match(draft.launch!, /^ovms_hostname='web-1'$/m);
  assert.match(draft.launch!, / -- '\/bin\/tool' 'x y'$/m);
  assert.match(draft.launch!, / 'A=2' /);
  assert.doesNotMatch(draft.launch!, /'A=1'/);
  assert.throws(
    () => draftPlan(container({}), {}, ctx),
    (e) => isOvmsError(e, "INVALID_ARGUMENT") && /after `--`/.test(e.message),
  );
  const vm = {
    ...container(),
    bootstrap: undefined,
    manifest: { ...container().manifest, containerMode: undefined },
  } as PreparedArtifact;
  assert.throws(
    () => draftPlan(vm, { env: ["A=1"] }, ctx),
    (e) => isOvmsError(e, "INVALID_ARGUMENT") && /not a container image/.test(e.message),
  );
  assert.equal(draftPlan(vm, {}, ctx).launch, undefined);
});

test("a container boots with its own initrd and OVMS-Init's control port (COM2): a socket for the runtime's commands, logged into control.log", () => {
  const a = container();
  const plan = finishPlan(draftPlan(a, {}, ctx), "tcg");
  const cfg = qemuConfig(a, plan, { id: "i1", dir: "/inst/i1", shmDir: "/shm/i1", vmgenid: "g" });
  assert.equal(cfg.initrd, "/inst/i1/initrd.img");
  assert.equal(cfg.controlLog, "/inst/i1/control.log");
  const argv = qemuArgv(cfg);
  const i = argv.indexOf("isa-serial,chardev=control0,index=1");
  assert.ok(i > 0 && argv[i - 1] === "-device", argv.join(" "));
  assert.equal(cfg.controlSocket, "/shm/i1/control.sock");
  assert.ok(
    argv.includes(
      "socket,id=control0,path=/shm/i1/control.sock,server=on,wait=off,logfile=/inst/i1/control.log",
    ),
    argv.join(" "),
  );
  assert.ok(
    qemuArgv({ ...cfg, controlSocket: undefined }).includes("file,id=control0,path=/inst/i1/control.log"),
  );
  assert.ok(argv.indexOf("chardev:serial0") < i, "the program's console stays the first port");
  // The program's stderr: a virtio-serial port named ovms.stderr into stderr.log, after every
  // other virtio device (their microvm slots do not move).
  assert.equal(cfg.stderrLog, "/inst/i1/stderr.log");
  const port = argv.indexOf("virtserialport,bus=vser0.0,chardev=stderr0,name=ovms.stderr");
  assert.ok(port > 0 && argv[port - 1] === "-device", argv.join(" "));
  assert.ok(argv.includes("file,id=stderr0,path=/inst/i1/stderr.log"));
  assert.equal(argv[port - 2], "virtio-serial-device,id=vser0", "virtio-mmio on microvm");
  assert.ok(argv.indexOf("virtio-blk-device,drive=disk0") < port, "after the disk");
  assert.ok(qemuArgv({ ...cfg, machine: "q35" }).includes("virtio-serial-pci,id=vser0"), "PCI on q35");
  const plain = qemuArgv({ ...cfg, controlLog: undefined, stderrLog: undefined });
  assert.ok(!plain.some((x) => x.includes("control0") || x.includes("vser0")));
});

test("the instance's initrd is OVMS-Init with /ovms/launch appended; the kernel's cpio reader finds it", async (t) => {
  const dir = await tempDir(t);
  const base = gzipSync(Buffer.from("stands in for OVMS-Init's gzip cpio"));
  await writeFile(join(dir, "base"), base);
  await writeLaunchInitrd(join(dir, "base"), join(dir, "initrd.img"), "ovms_workdir='/'\n");
  const out = await readFile(join(dir, "initrd.img"));
  assert.deepEqual(out.subarray(0, base.length), base);
  const at = Math.ceil(base.length / 4) * 4;
  await mkdir(join(dir, "x"));
  await new Promise<void>((resolve, reject) => {
    const c = execFile("cpio", ["-i", "-d", "--quiet"], { cwd: join(dir, "x") }, (e) =>
      e ? reject(e) : resolve(),
    );
    c.stdin!.end(out.subarray(at));
  });
  assert.equal(await readFile(join(dir, "x/ovms/launch"), "utf8"), "ovms_workdir='/'\n");
});

test("readProgramExit finds OVMS-Init's report among kernel lines; without one it gives the console's last lines", async (t) => {
  const dir = await tempDir(t);
  const f = join(dir, "control.log");
  await writeFile(
    f,
    "[    0.8] PCI: Fatal: No config space access function found\r\nOVMS-EXIT: 3\r\n[    5.8] reboot: Power down\r\n",
  );
  assert.deepEqual(await readProgramExit(f), {
    status: 3,
    tail: "[    0.8] PCI: Fatal: No config space access function found | [    5.8] reboot: Power down",
  });
  await writeFile(f, "[ 1.0] Kernel panic - not syncing: VFS\r\n");
  assert.deepEqual(await readProgramExit(f), { tail: "[ 1.0] Kernel panic - not syncing: VFS" });
  assert.deepEqual(await readProgramExit(join(dir, "missing")), { tail: "" });
});

test("recordExit of a container: the program's status is kept; a guest that ends without a report failed", async (t) => {
  const dir = await tempDir(t);
  const records = new InstanceRecords(dir);
  const rec = (id: string, state: InstanceRecord["state"]): InstanceRecord => ({
    instance_id: id,
    name: id,
    state,
    artifact: { reference: "tools/busybox:vm", digest: D },
    accel: "tcg",
    machine: "microvm",
    created_at: "2024-01-01T00:00:00.000Z",
    memory_bytes: 128 << 20,
    vcpus: 1,
    devices: [],
    ram_file: "/nowhere/ram",
    shm_dir: join(dir, "shm", id),
    argv: [],
    container: true,
  });
  const log = async (r: InstanceRecord, text: string) => {
    await mkdir(records.dir(r.instance_id), { recursive: true });
    await writeFile(join(records.dir(r.instance_id), "control.log"), text);
  };
  const ok = rec("ok", "running");
  await log(ok, "OVMS-EXIT: 7\r\n");
  await records.recordExit(ok, 0, null, false);
  assert.deepEqual(
    [ok.state, ok.program_exit_code, ok.reason],
    ["exited", 7, "the program exited with status 7"],
  );
  assert.equal(toInstance(ok).programExitCode, 7);
  const silent = rec("silent", "running");
  await log(silent, "[ 1.0] Kernel panic - not syncing: no init\r\n");
  await records.recordExit(silent, 0, null, false);
  assert.equal(silent.state, "failed");
  assert.match(
    silent.reason!,
    /without reporting the program's exit status; its console said: \[ 1\.0\] Kernel panic/,
  );
  const stopped = rec("stopped", "stopping");
  await log(stopped, "OVMS-EXIT: 143\r\n");
  await records.recordExit(stopped, 0, null, true);
  assert.deepEqual([stopped.state, stopped.program_exit_code, stopped.reason], ["exited", 143, "stopped"]);
  const killed = rec("killed", "stopping");
  await log(killed, "");
  await records.recordExit(killed, null, "SIGKILL", true);
  assert.deepEqual([killed.state, killed.program_exit_code, killed.reason], ["exited", undefined, "stopped"]);
});

test("checkRuntimeChoice: the asked runtime must be this one; else preferredRuntime must name it or generic", () => {
  checkRuntimeChoice("qemu", "qemu", ["firecracker"], "x");
  checkRuntimeChoice("qemu", undefined, undefined, "x");
  checkRuntimeChoice("qemu", undefined, ["firecracker", "qemu"], "x");
  checkRuntimeChoice("qemu", undefined, ["generic"], "x");
  assert.throws(
    () => checkRuntimeChoice("qemu", "firecracker", undefined, "x"),
    (e) =>
      isOvmsError(e, "RUNTIME_NOT_INSTALLED") &&
      /runtime firecracker is not installed here: this runtime runs qemu/.test(e.message),
  );
  assert.throws(
    () => checkRuntimeChoice("qemu", undefined, ["firecracker", "cloud-hypervisor"], "legacy/vm:1"),
    (e) =>
      isOvmsError(e, "RUNTIME_NOT_INSTALLED") &&
      e.message ===
        "legacy/vm:1 prefers runtime firecracker, then cloud-hypervisor (runtimeHints.preferredRuntime), and none of them is installed here: this runtime runs qemu; run it anyway with --runtime=qemu",
  );
});
