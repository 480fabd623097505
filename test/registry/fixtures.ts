import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { build, type BuildResult } from "../../src/artifact/build.js";
import type { Store } from "../../src/store/store.js";
import { exec } from "../helpers.js";

/** Disks are small but real parts of a VM: a kernel-sized file, a qcow2 base and two qcow2 diffs on it. */
export interface Disks {
  dir: string;
  kernel: string;
  kernel2: string;
  base: string;
  diff1: string;
  diff2: string;
}

/**
 * makeDisks writes the parts into `dir`: random (incompressible) kernel files and a base disk
 * of `baseMiB` random MiB converted to qcow2, and two diffs backed by it that differ.
 */
export async function makeDisks(dir: string, baseMiB = 2): Promise<Disks> {
  const d: Disks = {
    dir,
    kernel: join(dir, "vmlinuz"),
    kernel2: join(dir, "vmlinuz-2"),
    base: join(dir, "base.qcow2"),
    diff1: join(dir, "diff1.qcow2"),
    diff2: join(dir, "diff2.qcow2"),
  };
  await writeFile(d.kernel, randomBytes(96 << 10));
  await writeFile(d.kernel2, randomBytes(96 << 10));
  const raw = join(dir, "base.raw");
  await writeFile(raw, randomBytes(baseMiB << 20));
  await exec("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, d.base]);
  for (const [file, pattern] of [
    [d.diff1, "0x11"],
    [d.diff2, "0x22"],
  ]) {
    await exec("qemu-img", ["create", "-q", "-f", "qcow2", "-b", d.base, "-F", "qcow2", file]);
    await exec("qemu-io", ["-f", "qcow2", "-c", `write -P ${pattern} 0 256k`, file]);
  }
  return d;
}

/** buildArtifact builds an OVMS artifact of the disks into `store` as `tag` (version 1 uses diff1, version 2 diff2 and kernel2). */
export function buildArtifact(store: Store, tag: string, d: Disks, version: 1 | 2 = 1): Promise<BuildResult> {
  return build(
    store,
    {
      name: "test/vm",
      version: String(version),
      kernel: { path: version === 1 ? d.kernel : d.kernel2, args: "console=ttyS0" },
      disks: [{ path: d.base }, { path: version === 1 ? d.diff1 : d.diff2 }],
      resources: { memory: 128 << 20, vcpus: 1 },
      metadata: { created: "2026-01-01T00:00:00Z" },
    },
    tag,
  );
}
