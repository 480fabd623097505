import { test } from "node:test";
import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import { artifactParts, assembleArtifact, type PartBlob } from "../../src/artifact/assemble.js";
import { loadArtifactByDescriptor } from "../../src/artifact/artifact.js";
import { sha256, type Digest } from "../../src/core/digest.js";
import { MediaType } from "../../src/core/media-types.js";
import type { Descriptor } from "../../src/core/oci.js";
import type { OvmsManifest } from "../../src/core/manifest.generated.js";
import { tempDir } from "../helpers.js";

/** parts stores one blob per part and returns a manifest naming them, disks in chain order. */
async function parts(store: Store) {
  const kernel = await store.putBlob("kernel bytes");
  const initrd = await store.putBlob("initrd bytes");
  const base = await store.putBlob("base layer tar");
  const diff = await store.putBlob("diff layer tar");
  const ram = await store.putBlob("ramsnap bytes");
  const manifest: OvmsManifest = {
    schemaVersion: 1,
    mediaType: MediaType.OvmsManifest,
    name: "example/vm",
    version: "1",
    kernel: { ref: kernel.digest, size: kernel.size },
    initrd: { ref: initrd.digest, size: initrd.size },
    diskLayers: [
      { ref: base.digest, format: "raw", size: 1 << 20 },
      { ref: diff.digest, format: "qcow2", size: 4096, parent: base.digest },
    ],
    ramSnapshot: { ref: ram.digest, size: ram.size, compression: "lz4" },
    resources: { memory: 64 << 20, vcpus: 1 },
    metadata: { created: "2025-01-01T00:00:00Z" },
  };
  return { manifest, kernel, initrd, base, diff, ram };
}

const sizes = (store: Store) => async (p: { ref: Digest; path: string }) => ({
  size: (await store.blobSize(p.ref))!,
  title: p.path,
});

test("artifactParts lists the parts in the layer order of rfc §3.3", async (t) => {
  const { manifest } = await parts(await Store.open(await tempDir(t)));
  assert.deepEqual(
    artifactParts(manifest).map((p) => [p.role, p.path, p.index, p.format]),
    [
      ["kernel", "kernel", undefined, undefined],
      ["initrd", "initrd", undefined, undefined],
      ["disk", "diskLayers[0]", 0, "raw"],
      ["disk", "diskLayers[1]", 1, "qcow2"],
      ["ramsnap", "ramSnapshot", undefined, undefined],
    ],
  );
});

test("assembleArtifact writes config and OCI manifest (§3.2–3.5) and names nothing", async (t) => {
  const store = await Store.open(await tempDir(t));
  const p = await parts(store);
  const subject: Descriptor = { mediaType: MediaType.OciManifest, digest: sha256("source"), size: 6 };
  // A layer an existing artifact already has is kept as it is, extra annotations and all.
  const kept: Descriptor = {
    mediaType: MediaType.Kernel,
    digest: p.kernel.digest,
    size: p.kernel.size,
    annotations: { "org.opencontainers.image.title": "vmlinuz", "ovms.role": "kernel", "x.y": "z" },
  };
  const blob = async (part: { ref: Digest; path: string }): Promise<PartBlob> =>
    part.path === "kernel" ? kept : sizes(store)(part);
  const r = await assembleArtifact(store, p.manifest, { what: "test", blob, subject });
  const a = await loadArtifactByDescriptor(store, r.descriptor, "test");
  assert.equal(r.descriptor.artifactType, MediaType.OvmsManifest);
  assert.deepEqual(a.oci.layers[0], kept);
  assert.deepEqual(
    a.oci.layers.slice(1).map((l) => [l.mediaType, l.annotations]),
    [
      [MediaType.Initrd, { "ovms.role": "initrd", "org.opencontainers.image.title": "initrd" }],
      [
        MediaType.DiskLayer,
        { "ovms.role": "disk", "org.opencontainers.image.title": "diskLayers[0]", "ovms.format": "raw" },
      ],
      [
        MediaType.DiskLayer,
        { "ovms.role": "disk", "org.opencontainers.image.title": "diskLayers[1]", "ovms.format": "qcow2" },
      ],
      [MediaType.RamSnapshot, { "ovms.role": "ramsnap", "org.opencontainers.image.title": "ramSnapshot" }],
    ],
  );
  assert.deepEqual(a.oci.subject, subject);
  assert.deepEqual(a.oci.annotations, {
    "ovms.name": "example/vm",
    "org.opencontainers.image.version": "1",
    "org.opencontainers.image.created": "2025-01-01T00:00:00Z",
  });
  assert.equal(
    (await store.readBlob(a.oci.config.digest)).toString(),
    JSON.stringify(p.manifest, null, 2),
    "build and snapshot write the manifest as indented JSON",
  );
  assert.deepEqual(await store.entries(), []);

  const given = Buffer.from(JSON.stringify(p.manifest));
  const again = await assembleArtifact(store, JSON.parse(given.toString()), {
    what: "file",
    blob: sizes(store),
    config: given,
  });
  assert.equal(again.oci.config.digest, sha256(given), "given bytes are the config as they are");
});

test("assembleArtifact refuses a manifest or parts that do not check out, and writes nothing", async (t) => {
  const store = await Store.open(await tempDir(t));
  const p = await parts(store);
  const blobs = async () => (await readdir(join(store.root, "blobs", "sha256"))).sort();
  const before = await blobs();
  await assert.rejects(
    assembleArtifact(
      store,
      { ...p.manifest, kernel: { ref: "sha256:nothex" } },
      { what: "bad", blob: sizes(store) },
    ),
    (e: any) => {
      assert.equal(e.code, "MANIFEST_INVALID");
      assert.match(e.message, /^bad: /);
      assert.deepEqual(
        e.problems.map((x: { path: string }) => x.path),
        ["kernel.ref"],
      );
      return true;
    },
  );
  // The kernel's size is not its blob's: rule S6.
  await assert.rejects(
    assembleArtifact(store, p.manifest, {
      what: "sizes",
      blob: async (part) => ({
        ...(await sizes(store)(part)),
        ...(part.role === "kernel" ? { size: 1 } : {}),
      }),
    }),
    (e: any) => {
      assert.deepEqual(
        e.problems.map((x: { path: string }) => x.path),
        ["kernel.ref"],
      );
      assert.match(e.problems[0].message, /does not match the layer's 1/);
      return true;
    },
  );
  await assert.rejects(
    assembleArtifact(store, p.manifest, {
      what: "missing",
      blob: () => {
        throw new Error("no such part");
      },
    }),
    /no such part/,
  );
  assert.deepEqual(await blobs(), before);
});
