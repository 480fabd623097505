import { test } from "node:test";
import assert from "node:assert/strict";
import { qemuArgv, sandboxOption, type QemuConfig } from "../../../src/runtime/qemu/argv.js";

const base: QemuConfig = {
  id: "abc",
  machine: "microvm",
  accel: "tcg",
  memoryBytes: 256 << 20,
  vcpus: 2,
  kernel: "/k",
  initrd: "/i",
  cmdline: "console=ttyS0",
  disk: "/d/overlay.qcow2",
  serialLog: "/d/serial.log",
  qmpSocket: "/d/qmp.sock",
  ramFile: "/shm/ram",
  devices: [],
};

const after = (argv: string[], flag: string) => argv.filter((_, i) => argv[i - 1] === flag);

test("microvm: virtio-mmio disk, RAM from a file on tmpfs, strict sandbox", () => {
  const a = qemuArgv(base);
  assert.match(after(a, "-machine")[0], /^microvm,.*memory-backend=ram0/);
  assert.deepEqual(after(a, "-device"), ["virtio-blk-device,drive=disk0"]);
  assert.ok(
    after(a, "-object").includes(`memory-backend-file,id=ram0,mem-path=/shm/ram,size=${256 << 20},share=on`),
  );
  assert.deepEqual(after(a, "-sandbox"), [
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
  ]);
  assert.deepEqual(after(a, "-smp"), ["2"]);
  assert.deepEqual(after(a, "-cpu"), ["max"]);
  assert.ok(!a.includes("-runas"));
});

test("q35 with ivshmem: PCI disk and ivshmem-plain with master=on", () => {
  const a = qemuArgv({
    ...base,
    machine: "q35",
    accel: "kvm",
    devices: [{ type: "ivshmem", name: "shm0", size: 1 << 20, path: "/shm/iv" }],
    runAs: "nobody",
  });
  assert.ok(after(a, "-device").includes("virtio-blk-pci,drive=disk0"));
  assert.ok(after(a, "-device").includes("ivshmem-plain,memdev=shm-shm0,master=on"));
  assert.ok(
    after(a, "-object").includes(`memory-backend-file,id=shm-shm0,mem-path=/shm/iv,size=${1 << 20},share=on`),
  );
  assert.deepEqual(after(a, "-cpu"), ["host"]);
  assert.deepEqual(after(a, "-runas"), ["nobody"]);
  // Dropping root with -runas needs one setuid, so only then is elevateprivileges allowed.
  assert.equal(
    sandboxOption("nobody"),
    "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny",
  );
});

test("serial input: a socket chardev QEMU serves, logging every byte to the serial log; without it a file", () => {
  const a = qemuArgv({ ...base, serialSocket: "/shm/serial.sock" });
  assert.deepEqual(after(a, "-chardev"), [
    "socket,id=serial0,path=/shm/serial.sock,server=on,wait=off,logfile=/d/serial.log",
  ]);
  assert.deepEqual(after(a, "-serial"), ["chardev:serial0"]);
  assert.deepEqual(after(qemuArgv(base), "-chardev"), ["file,id=serial0,path=/d/serial.log"]);
});
