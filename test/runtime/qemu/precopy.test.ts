import { test } from "node:test";
import assert from "node:assert/strict";
import { precopySound } from "../../../src/runtime/qemu/precopy.js";
import { defaultMethod } from "../../../src/runtime/qemu/snapshot-take.js";
import { qemuArgv } from "../../../src/runtime/qemu/argv.js";

const MiB = 1 << 20;
const OFF_GRID = 192 * MiB + 8192;

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
  assert.equal(precopySound("tcg", "7.2.22", [OFF_GRID]), true, "the slow, correct path");
  assert.equal(
    precopySound("tcg", "7.2.22", [OFF_GRID, 4 * MiB]),
    false,
    "a device's shared memory on the grid is captured by the fast path too",
  );
  assert.equal(defaultMethod("tcg", "7.2.22", [OFF_GRID]), "live");
  assert.equal(defaultMethod("tcg", "7.2.22", [192 * MiB]), "copy");
  assert.equal(defaultMethod("kvm", "7.2.22", [192 * MiB]), "live");
});

test("a RAM size that is not a whole MiB reaches QEMU in KiB (as QEMU wants -m and the backend to agree)", () => {
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
  assert.equal(m(argv(OFF_GRID)), "196616K");
  assert.ok(argv(OFF_GRID).some((x) => x.includes(`size=${OFF_GRID}`)));
});
