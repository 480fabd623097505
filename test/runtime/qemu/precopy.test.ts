import { test } from "node:test";
import assert from "node:assert/strict";
import { RAM_PAD, precopySound, soundMemory } from "../../../src/runtime/qemu/precopy.js";
import { defaultMethod } from "../../../src/runtime/qemu/snapshot-take.js";
import { qemuArgv } from "../../../src/runtime/qemu/argv.js";

const MiB = 1 << 20;

test("precopy is sound under KVM, from QEMU 9.0, or for RAM blocks off the 256 KiB grid (rfc §5.8)", () => {
  assert.equal(precopySound("kvm", "7.2.22", [192 * MiB]), true, "KVM tracks dirty pages without TCG's TLB");
  assert.equal(precopySound("tcg", "7.2.22", [192 * MiB]), false, "QEMU 7.2's fast sync path under TCG");
  assert.equal(precopySound("tcg", "8.2.2", [192 * MiB]), false);
  assert.equal(precopySound("tcg", "9.0.0", [192 * MiB]), true, "fixed in 9.0 (03bfc2188f061)");
  assert.equal(
    precopySound("tcg", "unknown", [192 * MiB]),
    false,
    "a version it cannot read is taken as old",
  );
  assert.equal(precopySound("tcg", "7.2.22", [192 * MiB + RAM_PAD]), true, "the slow, correct path");
  assert.equal(
    precopySound("tcg", "7.2.22", [192 * MiB + RAM_PAD, 4 * MiB]),
    false,
    "a device's shared memory on the grid is captured by the fast path too",
  );
  assert.equal(defaultMethod("tcg", "7.2.22", [192 * MiB + RAM_PAD]), "live");
  assert.equal(
    defaultMethod("tcg", "7.2.22", [192 * MiB]),
    "copy",
    "a snapshot restored from an older runtime",
  );
});

test("a new guest's RAM is lengthened by 8 KiB only where that makes precopy sound, and QEMU is told so in KiB", () => {
  assert.equal(soundMemory(192 * MiB, "tcg", "7.2.22"), 192 * MiB + RAM_PAD);
  assert.equal(soundMemory(192 * MiB, "kvm", "7.2.22"), 192 * MiB);
  assert.equal(soundMemory(192 * MiB, "tcg", "9.1.0"), 192 * MiB);
  assert.equal(soundMemory(100 * MiB + 4096, "tcg", "7.2.22"), 100 * MiB + 4096, "already off the grid");
  assert.equal(
    soundMemory(192 * MiB, "tcg", "7.2.22", [MiB]),
    192 * MiB,
    "a 1 MiB ivshmem device keeps the guest on copy: no pad that would not help",
  );
  assert.equal(soundMemory(192 * MiB, "tcg", "7.2.22", [MiB + 8192]), 192 * MiB + RAM_PAD);
  assert.equal(RAM_PAD % 8192, 0, "QEMU takes x86 RAM in 8 KiB steps");
  const argv = (memoryBytes: number) =>
    qemuArgv({
      id: "x",
      machine: "microvm",
      accel: "tcg",
      memoryBytes,
      vcpus: 1,
      kernel: "/k",
      cmdline: "",
      serialLog: "/l",
      qmpSocket: "/s",
      ramFile: "/shm/ram",
      devices: [],
    });
  const m = (a: string[]) => a[a.indexOf("-m") + 1];
  assert.equal(m(argv(192 * MiB)), "192M");
  assert.equal(m(argv(192 * MiB + RAM_PAD)), "196616K");
  assert.ok(argv(192 * MiB + RAM_PAD).some((x) => x.includes(`size=${192 * MiB + RAM_PAD}`)));
});
