import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  backgroundRefusal,
  mappingsOf,
  populate,
  unallocated,
} from "../../../src/runtime/qemu/background.js";
import { defaultMethod } from "../../../src/runtime/qemu/snapshot-take.js";

const MiB = 1 << 20;

test("background is the default wherever QEMU may use userfaultfd, whatever precopy would do", () => {
  assert.equal(defaultMethod("tcg", "7.2.22", [192 * MiB], true), "background");
  assert.equal(defaultMethod("kvm", "9.2.0", [192 * MiB], true), "background");
  assert.equal(defaultMethod("tcg", "7.2.22", [192 * MiB], false), "copy", "no userfaultfd: as before");
  assert.equal(defaultMethod("tcg", "7.2.22", [192 * MiB + 8192], false), "live");
});

test("mappingsOf finds the ranges that map the guest's memory files in /proc/PID/maps", () => {
  const maps = [
    "55d0c0000000-55d0c0400000 r-xp 00000000 fe:01 1234 /usr/bin/qemu-system-x86_64",
    "7f2a40000000-7f2a4c000000 rw-s 00000000 00:19 77 /dev/shm/ovms/i/ram",
    "7f2a4c000000-7f2a4c100000 rw-s 00000000 00:19 78 /dev/shm/ovms/i/ivshmem-shared region",
    "7f2a50000000-7f2a50200000 rw-p 00000000 00:00 0 ",
    "7f2a60000000-7f2a6c000000 rw-p 00000000 00:19 79 /dev/shm/ovms-snapshots/x/memory (deleted)",
    "",
  ].join("\n");
  assert.deepEqual(mappingsOf(maps, ["/dev/shm/ovms/i/ram", "/dev/shm/ovms/i/ivshmem-shared region"]), [
    { start: 0x7f2a40000000, end: 0x7f2a4c000000, path: "/dev/shm/ovms/i/ram" },
    { start: 0x7f2a4c000000, end: 0x7f2a4c100000, path: "/dev/shm/ovms/i/ivshmem-shared region" },
  ]);
  assert.deepEqual(
    mappingsOf(maps, ["/dev/shm/ovms-snapshots/x/memory"]),
    [],
    "a removed file is not the file",
  );
});

test("backgroundRefusal: memory on tmpfs can be write-protected, a file on disk cannot (named)", async () => {
  const shm = await mkdtemp("/dev/shm/ovms-bg-test-");
  const disk = await mkdtemp(join(tmpdir(), "ovms-bg-test-"));
  try {
    await writeFile(join(shm, "ram"), "");
    await writeFile(join(disk, "ram"), "");
    assert.equal(await backgroundRefusal([join(shm, "ram")]), undefined);
    const why = await backgroundRefusal([join(shm, "ram"), join(disk, "ram")]);
    // /tmp is tmpfs on some hosts: then it is as good as /dev/shm.
    if (why) assert.match(why, new RegExp(`${join(disk, "ram")} is not on tmpfs`));
    assert.match((await backgroundRefusal([join(shm, "missing")]))!, /missing is not on tmpfs/);
  } finally {
    await rm(shm, { recursive: true, force: true });
    await rm(disk, { recursive: true, force: true });
  }
});

test("unallocated counts the holes of a sparse memory file", async () => {
  const shm = await mkdtemp("/dev/shm/ovms-bg-test-");
  try {
    const f = join(shm, "ram");
    const fh = await open(f, "w");
    await fh.truncate(8 * MiB);
    await fh.write(Buffer.alloc(MiB, 1), 0, MiB, 2 * MiB);
    await fh.close();
    assert.equal(await unallocated([f]), 7 * MiB);
  } finally {
    await rm(shm, { recursive: true, force: true });
  }
});

test("populate reads a process's mapping of a file through /proc/PID/mem; nothing when it maps none", async () => {
  // This process maps its own node binary: reading that mapping back gives the file's bytes.
  const maps = await import("node:fs/promises").then((f) => f.readFile("/proc/self/maps", "utf8"));
  const exe = mappingsOf(maps, [process.execPath]);
  assert.ok(exe.length > 0, "node maps its own executable");
  const n = await populate(process.pid, [process.execPath]);
  assert.equal(
    n,
    exe.reduce((s, m) => s + (m.end - m.start), 0),
  );
  assert.equal(await populate(process.pid, ["/no/such/file"]), 0);
});
