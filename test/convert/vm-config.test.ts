import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { isOvmsError } from "../../src/core/errors.js";
import { Store } from "../../src/store/store.js";
import { loadArtifact } from "../../src/artifact/artifact.js";
import { convert } from "../../src/artifact/convert/index.js";
import { DEMO_CMDLINE, demoAssets, exec, tempDir } from "../helpers.js";
import { vmConfig } from "./vm-fixture.js";

test("a vm config becomes the VM it describes; every field that cannot be carried over is named, with the reason", async (t) => {
  const dir = await tempDir(t);
  const store = await Store.open(join(dir, "store"));
  const cfg = join(dir, "config.json");
  await writeFile(cfg, JSON.stringify(vmConfig(), null, 2));
  const r = await convert(store, cfg, { tag: "legacy/vm:1" });
  const a = await loadArtifact(store, "legacy/vm:1");
  assert.equal(a.descriptor.digest, r.descriptor.digest);
  assert.equal(a.ovms.containerMode, undefined);
  assert.equal(a.ovms.kernel.args, `${DEMO_CMDLINE} ovms.mode=poweroff "hello world"`);
  assert.ok(a.ovms.initrd);
  assert.equal(a.ovms.diskLayers?.length, 1);
  assert.deepEqual(a.ovms.resources, { memory: 201326592, vcpus: 1 });
  assert.deepEqual(a.ovms.metadata?.labels, { "com.example.key1": "value1" });
  assert.equal(a.ovms.runtimeHints, undefined, "an unknown VMM gives no runtime hint");
  const not = new Map(r.notCarried!.map((n) => [n.field, n.reason]));
  for (const f of [
    "vm.hypervisor.path",
    "vm.hypervisor.parameters[0]",
    "vm.hypervisor.parameters[1]",
    "process.args",
    "process.env",
    "process.terminal",
    "root",
    "hostname",
    "mounts",
    "linux.namespaces",
    "linux.resources.memory.reservation",
    "linux.resources.cpu.shares",
    "linux.resources.pids",
  ])
    assert.ok(not.get(f), `${f} is reported: ${[...not.keys()].join(", ")}`);
  assert.match(not.get("process.args")!, /no agent in such a guest.*ovm convert IMAGE/);
  assert.match(not.get("vm.hypervisor.parameters[0]")!, /not portable/);
  assert.ok(!not.has("linux.resources.memory.limit") && !not.has("vm.kernel.path"));
  assert.deepEqual(
    r.carried!.map((c) => `${c.field} → ${c.to}`),
    [
      "vm.kernel.path → kernel",
      "vm.kernel.parameters → kernel.args",
      "vm.kernel.initrd → initrd",
      "linux.resources.memory.limit → resources.memory",
      "linux.resources.cpu.quota → resources.vcpus",
      "vm.image → diskLayers[0]",
      "annotations → metadata.labels",
    ],
  );
  // Converting the same files again gives the same artifact.
  const again = await convert(store, cfg, { tag: "legacy/vm:1" });
  assert.equal(again.descriptor.digest, r.descriptor.digest);
});

test("a QEMU hypervisor becomes preferredRuntime; a vmdk image becomes qcow2; no console= gets console=ttyS0", async (t) => {
  const dir = await tempDir(t);
  const store = await Store.open(join(dir, "store"));
  const vmdk = join(dir, "disk.vmdk");
  await exec("qemu-img", ["convert", "-f", "qcow2", "-O", "vmdk", demoAssets().base, vmdk]);
  const doc = vmConfig({ image: { path: vmdk, format: "vmdk" }, hypervisor: "/usr/bin/qemu-system-x86_64" });
  doc.vm.kernel.parameters = ["quiet"];
  await writeFile(join(dir, "config.json"), JSON.stringify(doc));
  const r = await convert(store, join(dir, "config.json"), { tag: "legacy/vmdk:1" });
  assert.deepEqual(r.manifest.runtimeHints, { preferredRuntime: ["qemu"] });
  assert.equal(r.manifest.kernel.args, "quiet console=ttyS0");
  assert.equal(r.manifest.diskLayers![0].format, "qcow2");
  assert.match(r.carried!.find((c) => c.field === "vm.image")!.note!, /converted from vmdk to qcow2/);
  assert.ok(r.carried!.some((c) => c.field === "(added)" && /console=ttyS0/.test(c.note!)));
});

test("what is not a vm config, or names files that are not there, is refused saying what and where", async (t) => {
  const dir = await tempDir(t);
  const store = await Store.open(join(dir, "store"));
  await writeFile(
    join(dir, "plain.json"),
    JSON.stringify({ ociVersion: "1.0.2", process: { args: ["sh"] } }),
  );
  await assert.rejects(
    convert(store, join(dir, "plain.json"), { tag: "x/y:1" }),
    (e) =>
      isOvmsError(e, "IMAGE_UNSUPPORTED") &&
      /not a runtime-spec config.json with a vm section/.test(e.message),
  );
  const missing = vmConfig();
  missing.vm.kernel.initrd = join(dir, "nope.img");
  await writeFile(join(dir, "missing.json"), JSON.stringify(missing));
  await assert.rejects(
    convert(store, join(dir, "missing.json"), { tag: "x/y:1" }),
    (e) =>
      isOvmsError(e, "FILE_NOT_FOUND") &&
      /vm\.kernel\.initrd .*nope\.img is not a readable file/.test(e.message),
  );
  const wrong = vmConfig({ image: { path: demoAssets().base, format: "raw" } });
  await writeFile(join(dir, "wrong.json"), JSON.stringify(wrong));
  await assert.rejects(
    convert(store, join(dir, "wrong.json"), { tag: "x/y:1" }),
    (e) => isOvmsError(e, "IMAGE_UNSUPPORTED") && /is qcow2, not raw as vm.image.format says/.test(e.message),
  );
  assert.deepEqual(await store.entries(), []);
});
