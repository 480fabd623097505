import { stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { OvmsError } from "../../core/errors.js";

/**
 * CONTAINER_CMDLINE is the kernel command line of a converted image: the kernel's console on
 * the second serial port (the runtime's control channel, rfc §6.7), so that the first port
 * carries the program's output alone; a quiet kernel; and the fixed TSC rate that keeps a
 * microvm guest under TCG from stalling (scripts/QEMU-NOTES.md).
 */
export const CONTAINER_CMDLINE =
  "console=ttyS1 quiet panic=-1 tsc_early_khz=2000000 tsc=reliable no_timer_check";

/** GuestAssets are the generic kernel and the OVMS-Init initrd that converted images boot with. */
export interface GuestAssets {
  kernel: string;
  initrd: string;
}

/** PACKAGE_ROOT is the folder of the ovms package (dist/src/artifact/convert/ is four below it). */
const PACKAGE_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));

/**
 * guestAssets finds the kernel and initrd a conversion adds: the given paths, else the folder
 * `$OVMS_GUEST_DIR`, else `<package>/.cache/ovms-init` (what scripts/ovms-init/build.sh,
 * run by scripts/setup.sh, builds). They are built ahead, never fetched while converting; a
 * missing one says how to build it.
 */
export async function guestAssets(
  given: Partial<GuestAssets> = {},
  env: NodeJS.ProcessEnv = process.env,
): Promise<GuestAssets> {
  const dir = env.OVMS_GUEST_DIR || join(PACKAGE_ROOT, ".cache", "ovms-init");
  const out = {
    kernel: given.kernel ?? join(dir, "vmlinuz"),
    initrd: given.initrd ?? join(dir, "initrd.img"),
  };
  for (const [what, path] of Object.entries(out)) {
    const st = await stat(path).catch(() => undefined);
    if (!st?.isFile())
      throw new OvmsError(
        "FILE_NOT_FOUND",
        `the generic guest ${what} ${path} is missing: build it with scripts/ovms-init/build.sh (npm run setup does), or name one with --${what}`,
      );
  }
  return out;
}
