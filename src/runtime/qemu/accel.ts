import { spawn } from "node:child_process";
import type { Accel } from "../types.js";

export const QEMU_BINARY = "qemu-system-x86_64";

let kvmProbe: Promise<boolean> | undefined;

/**
 * kvmWorks tells whether KVM really runs a guest here. `/dev/kvm` existing is not enough: on
 * nested hosts (e.g. a PVM host) it opens fine and then hangs the guest kernel. The probe boots
 * `kernel` with no root disk and `panic=-1`: a working KVM reaches the panic, reboots, and
 * QEMU exits (-no-reboot) in well under a second; a hang is cut at `timeoutMs`.
 * The answer is kept for the life of the process.
 */
export function kvmWorks(kernel: string, timeoutMs = 4000): Promise<boolean> {
  kvmProbe ??= new Promise<boolean>((resolve) => {
    const p = spawn(
      QEMU_BINARY,
      ["-machine", "microvm,x-option-roms=off,rtc=on", "-accel", "kvm", "-cpu", "host", "-m", "64M", "-nodefaults",
        "-no-user-config", "-display", "none", "-no-reboot", "-kernel", kernel, "-append", "panic=-1 console=none quiet"],
      { stdio: "ignore" },
    );
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.on("error", () => resolve(false));
    p.on("exit", (code) => {
      clearTimeout(timer);
      resolve(code === 0);
    });
  });
  return kvmProbe;
}

/** chooseAccel resolves `auto` by probing; `kvm` and `tcg` are taken as asked. */
export async function chooseAccel(want: "auto" | Accel | undefined, kernel: string): Promise<Accel> {
  if (want === "kvm" || want === "tcg") return want;
  return (await kvmWorks(kernel)) ? "kvm" : "tcg";
}
