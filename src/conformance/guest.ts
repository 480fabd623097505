import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { OvmsError } from "../core/errors.js";

/**
 * The suite's contract with the guest it boots. The runtime suite judges a runtime partly by
 * what the guest sees (the disk chain, injected bytes, the ACPI power button, a counter that a
 * restore must continue), so the guest must print fixed markers on its serial console. The demo
 * guest's /init (scripts/guest/init, built into .cache/demo-assets-HASH by scripts/demo-assets.sh)
 * does; a custom initrd given with --initrd must implement the same protocol (docs/conformance.md).
 */

/**
 * GUEST_CMDLINE is the kernel command line of every fixture and of the demo guest
 * (scripts/demo-guest.ts re-exports it as DEMO_CMDLINE): serial console, quiet kernel, a fixed TSC rate (microvm under TCG has
 * no clock to calibrate against). `ovms.mode=…` is appended per fixture; `--cmdline` replaces it.
 */
export const GUEST_CMDLINE = "console=ttyS0 quiet panic=-1 tsc_early_khz=2000000 tsc=reliable no_timer_check";

/** Marker are the lines the guest prints (a regular expression each). */
export const Marker = {
  /** After the disk is mounted and read: init is done. A restored guest never prints it again. */
  ready: /^OVMS-READY$/,
  /** The file only the base layer has. */
  disk: /^OVMS-DISK: base layer$/,
  /** The file only the diff layer adds. */
  layer: /^OVMS-LAYER: hello from the diff layer$/,
  /** ovms.mode=counter: `OVMS-COUNTER: N`, N counting up every 0.2 s. */
  counter: /^OVMS-COUNTER: (\d+)$/,
  /** ovms.mode=ivshmem: the guest found the ivshmem BAR and polls it. */
  ivshmemReady: /^OVMS-IVSHMEM: ready/,
  /** The guest's ACPI power-button handler ran. */
  powerOff: /^OVMS-POWEROFF/,
} as const;

/**
 * IGNORE_ACPI is appended to a guest that must ignore the ACPI power button (to see a runtime
 * escalate a graceful stop): without the `button` driver the kernel never reports the press.
 */
export const IGNORE_ACPI = "module_blacklist=button";

/**
 * injectLength is the second write of the demo guest's inject protocol: the message goes at
 * offset 4, then its length (u32 LE, base64 here) at offset 0 tells the guest to print it.
 */
export function injectLength(n: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b.toString("base64");
}

/** GuestAssets are the parts the suite builds its artifacts from. */
export interface GuestAssets {
  kernel: string;
  initrd: string;
  /** base: an ext4 qcow2 holding /etc/ovms-base; diff: a qcow2 diff over it adding /etc/ovms-layer. */
  base: string;
  diff: string;
}

/** DEMO_SCRIPT builds the demo guest's parts in a checkout (once) and prints their folder last. */
const DEMO_SCRIPT = fileURLToPath(new URL("../../../scripts/demo-assets.sh", import.meta.url));

/**
 * demoAssetsDir asks scripts/demo-assets.sh for the demo guest's folder: the folder's name
 * carries the hash of the guest's recipe, so only the script knows it. The script builds the
 * parts when they are missing and returns at once when they are in place.
 */
function demoAssetsDir(): string {
  if (!existsSync(DEMO_SCRIPT)) {
    throw new OvmsError(
      "FILE_NOT_FOUND",
      `no demo guest here (${DEMO_SCRIPT} is missing): pass --assets DIR with vmlinuz, initrd.img, base.qcow2 and diff.qcow2`,
    );
  }
  let out: string;
  try {
    out = execFileSync("bash", [DEMO_SCRIPT], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    const stderr = String((e as { stderr?: unknown }).stderr ?? "").trim();
    throw new OvmsError(
      "FILE_NOT_FOUND",
      `could not build the demo guest with ${DEMO_SCRIPT}${stderr ? `: ${stderr.split("\n").pop()}` : ""}; pass --assets DIR instead`,
    );
  }
  return out.trim().split("\n").pop() ?? "";
}

/**
 * guestAssets names the parts in `dir` (default the demo assets), with `kernel`/`initrd`
 * replaced when given, and says what is missing.
 */
export function guestAssets(opts: { dir?: string; kernel?: string; initrd?: string } = {}): GuestAssets {
  const dir = opts.dir ?? demoAssetsDir();
  const a: GuestAssets = {
    kernel: opts.kernel ?? join(dir, "vmlinuz"),
    initrd: opts.initrd ?? join(dir, "initrd.img"),
    base: join(dir, "base.qcow2"),
    diff: join(dir, "diff.qcow2"),
  };
  const missing = Object.entries(a).filter(([, p]) => !existsSync(p));
  if (missing.length) {
    throw new OvmsError(
      "FILE_NOT_FOUND",
      `the guest's parts are missing (${missing.map(([k, p]) => `${k} ${p}`).join(", ")}): run scripts/demo-assets.sh [DIR] (or npm run demo) and pass --assets DIR`,
    );
  }
  return a;
}
