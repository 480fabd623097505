import { test } from "node:test";
import assert from "node:assert/strict";
import {
  clockArgs,
  fromCpuinfo,
  hostTscKhz,
  tscMessageKhz,
  withKernelArgs,
} from "../../../src/runtime/qemu/clock.js";

test("clockArgs adds the host's TSC rate for microvm under TCG, and only there", () => {
  const stock = "console=ttyS0 panic=-1";
  assert.deepEqual(clockArgs({ machine: "microvm", accel: "tcg", cmdline: stock, tscKhz: 2096015 }), [
    "tsc_early_khz=2096015",
  ]);
  assert.deepEqual(
    clockArgs({ machine: "q35", accel: "tcg", cmdline: stock, tscKhz: 2096015 }),
    [],
    "q35 has an HPET",
  );
  assert.deepEqual(
    clockArgs({ machine: "microvm", accel: "kvm", cmdline: stock, tscKhz: 2096015 }),
    [],
    "kvmclock",
  );
  assert.deepEqual(
    clockArgs({
      machine: "microvm",
      accel: "tcg",
      cmdline: `${stock} tsc_early_khz=2000000`,
      tscKhz: 2096015,
    }),
    [],
    "the artifact's own value wins",
  );
  assert.deepEqual(clockArgs({ machine: "microvm", accel: "tcg", cmdline: stock, tscKhz: undefined }), []);
  assert.deepEqual(
    clockArgs({ machine: "microvm", accel: "tcg", cmdline: "xtsc_early_khz=1", tscKhz: 5 }),
    ["tsc_early_khz=5"],
    "only a whole argument counts",
  );
});

test("the TSC rate is read from the kernel's calibration messages and from /proc/cpuinfo", () => {
  assert.deepEqual(tscMessageKhz("6,77,0,-;tsc: Detected 2096.015 MHz processor"), {
    khz: 2096015,
    refined: false,
  });
  assert.deepEqual(tscMessageKhz("6,420,1,-;tsc: Refined TSC clocksource calibration: 2304.001 MHz"), {
    khz: 2304001,
    refined: true,
  });
  assert.equal(tscMessageKhz("6,1,2,-;clocksource: Switched to clocksource tsc"), undefined);
  const cpuinfo = (flags: string) => `processor\t: 0\ncpu MHz\t\t: 2096.015\nflags\t\t: fpu ${flags} sse\n`;
  assert.equal(fromCpuinfo(cpuinfo("tsc constant_tsc nonstop_tsc")), 2096015);
  assert.equal(fromCpuinfo(cpuinfo("tsc")), undefined, "without constant_tsc the number is not the TSC's");
  assert.equal(fromCpuinfo("cpu MHz\t: 2400\nflags\t: constant_tsc\n"), 2400000);
});

test("hostTscKhz finds this host's rate", async () => {
  const khz = await hostTscKhz();
  // Every x86-64 host this runs on has a constant TSC; the rate is between 500 MHz and 10 GHz.
  assert.ok(khz && khz > 500_000 && khz < 10_000_000, `host TSC ${khz} kHz`);
});

test("added kernel arguments go before a standalone --, which starts init's arguments", () => {
  assert.equal(
    withKernelArgs("console=ttyS0 panic=-1", ["tsc_early_khz=1"]),
    "console=ttyS0 panic=-1 tsc_early_khz=1",
  );
  assert.equal(
    withKernelArgs("console=ttyS0 rdinit=/bin/busybox -- sleep 9", ["tsc_early_khz=1"]),
    "console=ttyS0 rdinit=/bin/busybox tsc_early_khz=1 -- sleep 9",
  );
  assert.equal(withKernelArgs("a --x b", ["c"]), "a --x b c");
  assert.equal(withKernelArgs("a", []), "a");
});
