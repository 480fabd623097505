import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, writeFile, copyFile, symlink } from "node:fs/promises";
import { createReadStream } from "node:fs";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import { build } from "../../src/artifact/build.js";
import { loadArtifact } from "../../src/artifact/artifact.js";
import { loadBuildFile } from "../../src/artifact/build-file.js";
import { unpackDiskLayer } from "../../src/artifact/disk-layer.js";
import { imageInfo } from "../../src/artifact/qemu-img.js";
import { MediaType } from "../../src/core/media-types.js";
import { demoAssets, exec, tempDir } from "../helpers.js";

test("build packs the demo parts into an OVMS artifact with the OCI 1.1 mapping", async (t) => {
  const a = demoAssets();
  const store = await Store.open(join(await tempDir(t), "s"));
  const r = await build(
    store,
    {
      name: "demo/vm",
      version: "1.0",
      kernel: { path: a.kernel, args: "console=ttyS0" },
      initrd: { path: a.initrd },
      disks: [{ path: a.base }, { path: a.diff, format: "qcow2" }],
      devices: [{ type: "ivshmem", name: "shm0", size: 1 << 20 }],
    },
    "demo/vm:1.0",
  );
  assert.equal(r.reference, "docker.io/demo/vm:1.0");
  const art = await loadArtifact(store, "demo/vm:1.0");
  assert.equal(art.oci.artifactType, MediaType.OvmsManifest);
  assert.equal(art.oci.config.mediaType, MediaType.OvmsManifest);
  assert.deepEqual(
    art.oci.layers.map((l) => l.mediaType),
    [MediaType.Kernel, MediaType.Initrd, MediaType.DiskLayer, MediaType.DiskLayer],
  );
  assert.deepEqual(
    art.oci.layers.slice(2).map((l) => l.annotations?.["ovms.format"]),
    ["qcow2", "qcow2"],
  );
  const [base, diff] = art.ovms.diskLayers!;
  assert.equal(base.ref, art.oci.layers[2].digest);
  assert.equal(diff.parent, base.ref, "the diff names its parent by digest");
  assert.equal(art.ovms.kernel.ref, art.oci.layers[0].digest);
  assert.equal(art.ovms.kernel.size, (await readFile(a.kernel)).length);

  // Inside the diff layer, the qcow2 backing file is the parent's digest, never a host path.
  const out = await tempDir(t);
  const file = await unpackDiskLayer(
    createReadStream(store.blobPath(diff.ref as `sha256:${string}`)),
    "qcow2",
    out,
  );
  const info = await imageInfo(file);
  assert.equal(info.backingFilename, base.ref);
  assert.ok(!info.backingFilename!.includes("/"));
  // The user's diff file is left as it was.
  assert.equal((await imageInfo(a.diff)).backingFilename, "base.qcow2");
});

test("layer digests are reproducible: two builds share their base layer", async (t) => {
  const a = demoAssets();
  const store = await Store.open(join(await tempDir(t), "s"));
  const spec = {
    name: "demo/vm",
    version: "1",
    kernel: { path: a.kernel },
    disks: [{ path: a.base }, { path: a.diff }],
  };
  const one = await build(store, spec, "demo/vm:1");
  const two = await build(
    store,
    { ...spec, version: "2", kernel: { path: a.kernel, args: "quiet" } },
    "demo/vm:2",
  );
  assert.deepEqual(
    two.manifest.diskLayers!.map((d) => d.ref),
    one.manifest.diskLayers!.map((d) => d.ref),
  );
  assert.notEqual(two.descriptor.digest, one.descriptor.digest);
});

test("disks given as symlinks are packed as the files they point to: the same layers", async (t) => {
  const a = demoAssets();
  const dir = await tempDir(t);
  const store = await Store.open(join(dir, "s"));
  await symlink(a.base, join(dir, "base.qcow2"));
  await symlink(a.diff, join(dir, "diff.qcow2"));
  const direct = await build(
    store,
    {
      name: "demo/vm",
      version: "1",
      kernel: { path: a.kernel },
      disks: [{ path: a.base }, { path: a.diff }],
    },
    "demo/vm:1",
  );
  const linked = await build(
    store,
    {
      name: "demo/vm",
      version: "1",
      kernel: { path: a.kernel },
      disks: [{ path: join(dir, "base.qcow2") }, { path: join(dir, "diff.qcow2") }],
    },
    "demo/vm:links",
  );
  assert.deepEqual(
    linked.manifest.diskLayers!.map((d) => d.ref),
    direct.manifest.diskLayers!.map((d) => d.ref),
  );
});

test("bad disks are refused with the disk named, and nothing is tagged", async (t) => {
  const a = demoAssets();
  const dir = await tempDir(t);
  const store = await Store.open(join(dir, "s"));
  const other = join(dir, "other.qcow2");
  await exec("qemu-img", ["create", "-q", "-f", "qcow2", other, "16M"]);
  const cases: [object[], RegExp][] = [
    [[{ path: a.diff }], /disk 0 .*has a backing file/],
    [[{ path: other }, { path: a.diff }], /disk 1 .*is backed by base.qcow2, not by the previous disk/],
    [[{ path: a.base }, { path: other }], /disk 1 .*needs a backing file/],
    [[{ path: a.base, format: "raw" }], /declared raw but the file is qcow2/],
    [[{ path: join(dir, "missing.qcow2") }], /not a readable file/],
  ];
  for (const [disks, why] of cases) {
    await assert.rejects(
      build(store, { name: "x/y", version: "1", kernel: { path: a.kernel }, disks } as never, "x/y:1"),
      why,
    );
  }
  await assert.rejects(
    build(store, { name: "x/y", version: "1", kernel: { path: join(dir, "nokernel") } }, "x/y:1"),
    /kernel: .*not a readable file/,
  );
  assert.deepEqual(await store.entries(), []);
});

test("a build file (YAML) with relative paths builds the same layers as flags", async (t) => {
  const a = demoAssets();
  const dir = await tempDir(t);
  for (const f of ["vmlinuz", "initrd.img", "base.qcow2", "diff.qcow2"])
    await copyFile(join(a.dir, f), join(dir, f));
  await mkdir(join(dir, "sub"));
  await writeFile(
    join(dir, "sub", "ovm.yaml"),
    [
      "name: demo/vm",
      "version: 2.0",
      "kernel: { path: ../vmlinuz, args: console=ttyS0 }",
      "initrd: { path: ../initrd.img }",
      "disks:",
      "  - path: ../base.qcow2",
      "  - { path: ../diff.qcow2, format: qcow2 }",
      "devices: [{ type: ivshmem, name: shm0, size: 1M }]",
      "resources: { memory: 256M, vcpus: 1 }",
    ].join("\n"),
  );
  const spec = await loadBuildFile(join(dir, "sub", "ovm.yaml"));
  assert.equal(spec.kernel.path, join(dir, "vmlinuz"));
  assert.equal(spec.version, "2.0");
  assert.equal(spec.resources?.memory, 256 << 20);
  assert.equal(spec.devices?.[0].size, 1 << 20);
  const store = await Store.open(join(dir, "s"));
  const r = await build(store, spec, "demo/vm:2.0");
  assert.equal(r.manifest.diskLayers?.length, 2);

  await writeFile(
    join(dir, "bad.yaml"),
    "name: x\nversion: 1\nkernel: { path: k, cmdline: oops }\ndisk: []\n",
  );
  await assert.rejects(loadBuildFile(join(dir, "bad.yaml")), (e: any) => {
    const paths = e.problems.map((p: { path: string }) => p.path);
    assert.ok(paths.includes("kernel.cmdline") && paths.includes("disk"), paths.join(","));
    return true;
  });
});

test("ovm build records what the guest expects of the network: --expose, --network-required", async (t) => {
  const a = demoAssets();
  const dir = await tempDir(t);
  const { ovmJson } = await import("../helpers.js");
  const r = await ovmJson([
    "--store",
    join(dir, "s"),
    "build",
    "-t",
    "demo/web:1",
    "--kernel",
    a.kernel,
    "--expose",
    "80/tcp",
    "--expose",
    "53/udp",
    "--network-required",
  ]);
  assert.deepEqual(r.manifest.network, { exposedPorts: ["80/tcp", "53/udp"], required: true });
  // The build file says the same in YAML; a bad port is refused by its JSON path.
  const file = join(dir, "ovm.yaml");
  await writeFile(
    file,
    `name: demo/web\nversion: "1"\nkernel: { path: ${a.kernel} }\nnetwork: { exposedPorts: ["80/tcp", "80"] }\n`,
  );
  const { ovm } = await import("../helpers.js");
  const bad = await ovm(["--store", join(dir, "s"), "build", "-f", file, "-t", "demo/web:2"]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /network\.exposedPorts\[1\]: 80\/tcp is listed twice/);
});
