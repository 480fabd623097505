import { open, readFile } from "node:fs/promises";
import { constants } from "node:fs";
import type { Accel, Machine } from "../types.js";

/**
 * clockArgs is what the runtime adds to a guest's kernel command line so that a stock kernel
 * boots on microvm under TCG (scripts/QEMU-NOTES.md): microvm has no HPET and no ACPI PM
 * timer, so the kernel can only calibrate its TSC against the PIT, which fails on a busy host
 * ("tsc: Unable to calibrate against PIT"), after which it hangs with an empty console.
 * `tsc_early_khz=<host TSC kHz>` skips the calibration: under TCG the guest's rdtsc is the
 * host's TSC, so the host's rate is the right one. Nothing is added under KVM (kvmclock gives
 * the rate), on q35 (it has an HPET), when the command line already sets `tsc_early_khz`, or
 * when the host's rate is unknown. Pure: tested without QEMU.
 */
export function clockArgs(c: {
  machine: Machine;
  accel: Accel;
  cmdline: string;
  tscKhz: number | undefined;
}): string[] {
  if (c.machine !== "microvm" || c.accel !== "tcg" || !c.tscKhz) return [];
  if (/(^|\s)tsc_early_khz=/.test(c.cmdline)) return [];
  return [`tsc_early_khz=${c.tscKhz}`];
}

/**
 * withKernelArgs puts `added` into a kernel command line, before a standalone `--`: the kernel
 * hands everything after it to init.
 */
export function withKernelArgs(cmdline: string, added: string[]): string {
  if (!added.length) return cmdline;
  const words = cmdline.split(" ");
  const end = words.indexOf("--");
  if (end < 0) return [cmdline, ...added].join(" ").trim();
  return [...words.slice(0, end), ...added, ...words.slice(end)].join(" ").trim();
}

let cached: Promise<number | undefined> | undefined;

/**
 * hostTscKhz is the host's TSC rate in kHz, read once: from sysfs where the kernel exports it,
 * else from the kernel's own calibration message in its log (root only), else from
 * /proc/cpuinfo's "cpu MHz" when the TSC runs at a constant rate (there it is the TSC rate
 * unless a cpufreq driver reports the current frequency instead). Undefined when none says.
 */
export function hostTscKhz(): Promise<number | undefined> {
  cached ??= (async () =>
    (await fromSysfs()) ?? (await fromKernelLog()) ?? fromCpuinfo(await readText("/proc/cpuinfo")))();
  return cached;
}

async function readText(path: string): Promise<string> {
  return readFile(path, "utf8").catch(() => "");
}

async function fromSysfs(): Promise<number | undefined> {
  const n = Number((await readText("/sys/devices/system/cpu/cpu0/tsc_freq_khz")).trim());
  return n > 0 ? n : undefined;
}

/**
 * fromKernelLog reads /dev/kmsg without blocking and takes the kernel's refined TSC
 * calibration (else its first estimate). The early messages may have left the ring buffer on
 * a host that has been up long; then this finds nothing.
 */
async function fromKernelLog(): Promise<number | undefined> {
  const fh = await open("/dev/kmsg", constants.O_RDONLY | constants.O_NONBLOCK).catch(() => undefined);
  if (!fh) return undefined;
  let detected: number | undefined;
  let refined: number | undefined;
  try {
    const buf = Buffer.alloc(8192);
    for (let i = 0; i < 100_000; i++) {
      // One record per read; EAGAIN once the buffer is drained.
      const { bytesRead } = await fh.read(buf, 0, buf.length, null).catch(() => ({ bytesRead: 0 }));
      if (bytesRead <= 0) break;
      const khz = tscMessageKhz(buf.subarray(0, bytesRead).toString("utf8"));
      if (khz?.refined) refined = khz.khz;
      else if (khz) detected ??= khz.khz;
      if (refined) break;
    }
  } finally {
    await fh.close();
  }
  return refined ?? detected;
}

/** tscMessageKhz reads the rate out of the kernel's "tsc: … MHz" calibration messages. */
export function tscMessageKhz(record: string): { khz: number; refined: boolean } | undefined {
  const m = /tsc: (?:(Refined) TSC clocksource calibration:|Detected) (\d+)\.(\d{3}) MHz/.exec(record);
  if (!m) return undefined;
  return { khz: Number(m[2]) * 1000 + Number(m[3]), refined: m[1] === "Refined" };
}

/**
 * fromCpuinfo takes "cpu MHz" × 1000 from /proc/cpuinfo when the CPU's TSC runs at a constant
 * rate (flag constant_tsc); otherwise that number says nothing about the TSC.
 */
export function fromCpuinfo(text: string): number | undefined {
  const flags = /^flags\s*:\s*(.*)$/m.exec(text)?.[1].split(/\s+/) ?? [];
  if (!flags.includes("constant_tsc")) return undefined;
  const mhz = /^cpu MHz\s*:\s*(\d+)(?:\.(\d+))?/m.exec(text);
  if (!mhz) return undefined;
  const khz = Number(mhz[1]) * 1000 + Number((mhz[2] ?? "").padEnd(3, "0").slice(0, 3));
  return khz > 0 ? khz : undefined;
}
