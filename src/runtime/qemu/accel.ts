import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { run } from "../../artifact/exec.js";
import { RuntimeError } from "../runtime-error.js";
import type { Accel } from "../types.js";

/** QEMU_BINARY is the QEMU the runtime runs, found on PATH. */
export const QEMU_BINARY = "qemu-system-x86_64";

let version: Promise<string> | undefined;

/** qemuVersion is the QEMU version, read once (`qemu-system-x86_64 --version`); RUNTIME_UNAVAILABLE without QEMU. */
export function qemuVersion(): Promise<string> {
  version ??= run(QEMU_BINARY, ["--version"]).then(
    (out) => /version (\S+)/.exec(out)?.[1] ?? "unknown",
    (e) => {
      version = undefined;
      throw new RuntimeError("RUNTIME_UNAVAILABLE", `QEMU is not available: ${(e as Error).message}`, {
        cause: e,
      });
    },
  );
  return version;
}

/** PROBE_TIMEOUT_MS bounds the KVM probe: a working KVM reaches the panic in well under a second. */
const PROBE_TIMEOUT_MS = 3000;

let kvmProbe: Promise<boolean> | undefined;

/**
 * kvmWorks tells whether KVM really runs a guest kernel here. `/dev/kvm` opening is not
 * enough, nor is QEMU exiting cleanly: on a nested PVM host the guest either hangs or
 * resets in its real-mode setup code. The probe boots `kernel` with no root disk and
 * `panic=-1`; only a kernel that prints its "Kernel panic" (it ran all the way to mounting
 * root) and exits counts. The answer is cached per host boot and QEMU binary, so only the
 * first start after a reboot pays for it.
 */
export function kvmWorks(kernel: string): Promise<boolean> {
  kvmProbe ??= (async () => {
    if (!existsSync("/dev/kvm")) return false;
    const key = cacheKey();
    const file = join(cacheDir(), "kvm-probe.json");
    try {
      const cached = JSON.parse(await readFile(file, "utf8")) as { key: string; kvm: boolean };
      if (cached.key === key) return cached.kvm;
    } catch {
      // no cache yet
    }
    const kvm = await probe(kernel);
    await mkdir(cacheDir(), { recursive: true }).catch(() => undefined);
    await writeFile(file, JSON.stringify({ key, kvm })).catch(() => undefined);
    return kvm;
  })();
  return kvmProbe;
}

function probe(kernel: string): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const p = spawn(
      QEMU_BINARY,
      [
        "-machine",
        "microvm,x-option-roms=off,rtc=on",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "128M",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        kernel,
        "-append",
        "panic=-1 console=ttyS0 quiet",
        "-serial",
        "stdio",
        // The artifact's kernel runs here outside the instance sandbox: under seccomp at least.
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
      ],
      { stdio: ["ignore", "pipe", "ignore"] },
    );
    let out = "";
    p.stdout.on("data", (d: Buffer) => {
      if (out.length < 1 << 20) out += d.toString("latin1");
    });
    const timer = setTimeout(() => p.kill("SIGKILL"), PROBE_TIMEOUT_MS);
    p.on("error", () => resolve(false));
    p.on("close", (code) => {
      clearTimeout(timer);
      resolve(code === 0 && out.includes("Kernel panic"));
    });
  });
}

function cacheDir(): string {
  if (process.getuid?.() === 0) return "/var/cache/ovms";
  return join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "ovms");
}

function cacheKey(): string {
  let boot = "";
  try {
    boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    // not Linux /proc: the key still changes with the binary
  }
  return `${boot}:probe-v2`;
}

/** chooseAccel resolves `auto` by probing; `kvm` and `tcg` are taken as asked. */
export async function chooseAccel(want: "auto" | Accel | undefined, kernel: string): Promise<Accel> {
  if (want === "kvm" || want === "tcg") return want;
  return (await kvmWorks(kernel)) ? "kvm" : "tcg";
}
