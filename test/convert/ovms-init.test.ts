import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { ROOT, exec, tempDir } from "../helpers.js";

// The generic guest is built by the project, never fetched at run time, and reproducibly:
// two builds into two folders give the same bytes.
test("scripts/ovms-init/build.sh builds the same kernel and OVMS-Init initrd twice, with what the init needs", async (t) => {
  const dir = await tempDir(t);
  const build = async (out: string) =>
    (await exec("bash", [join(ROOT, "scripts/ovms-init/build.sh"), out])).trim().split("\n").pop()!;
  const a = await build(join(dir, "a"));
  const b = await build(join(dir, "b"));
  const sum = async (f: string) =>
    createHash("sha256")
      .update(await readFile(f))
      .digest("hex");
  assert.equal(await sum(join(a, "initrd.img")), await sum(join(b, "initrd.img")));
  assert.equal(await sum(join(a, "vmlinuz")), await sum(join(b, "vmlinuz")));
  const list = (await exec("sh", ["-c", `zcat ${join(a, "initrd.img")} | cpio -t --quiet`])).split("\n");
  for (const f of [
    "init",
    "ovms/init2",
    "ovms/power",
    "ovms/control",
    "bin/busybox",
    "etc/modules",
    "lib/modules/virtio_blk.ko",
    "lib/modules/virtio_mmio.ko",
    "lib/modules/button.ko",
  ])
    assert.ok(list.includes(f), `${f} in the initrd: ${list.join(" ")}`);
  assert.match(await readFile(join(a, "README.txt"), "utf8"), /Debian cloud kernel of linux-image-/);
  // A second run with everything in place does nothing.
  const again = await exec("bash", [
    "-c",
    `time bash ${join(ROOT, "scripts/ovms-init/build.sh")} ${join(dir, "a")} 2>&1`,
  ]);
  assert.match(again, new RegExp(`^${a}$`, "m"));
});
