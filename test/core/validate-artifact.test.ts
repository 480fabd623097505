import { test } from "node:test";
import assert from "node:assert/strict";
import { checkArtifact, validateArtifact } from "../../src/core/validate.js";
import { MediaType } from "../../src/core/media-types.js";
import type { ImageManifest } from "../../src/core/oci.js";
import type { OvmsManifest } from "../../src/core/manifest.generated.js";

const D = (c: string) => `sha256:${c.repeat(64)}` as const;

function pair(): { oci: ImageManifest; ovms: OvmsManifest } {
  const ovms: OvmsManifest = {
    schemaVersion: 1,
    mediaType: MediaType.OvmsManifest,
    name: "example/vm",
    version: "1",
    kernel: { ref: D("a"), size: 10 },
    diskLayers: [{ ref: D("b"), format: "qcow2", size: 4096 }],
  };
  const oci: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType: MediaType.OvmsManifest,
    config: { mediaType: MediaType.OvmsManifest, digest: D("c"), size: 100 },
    layers: [
      { mediaType: MediaType.Kernel, digest: D("a"), size: 10 },
      { mediaType: MediaType.DiskLayer, digest: D("b"), size: 5120, annotations: { "ovms.format": "qcow2" } },
    ],
  };
  return { oci, ovms };
}

test("checkArtifact (S6): an OVMS manifest and the OCI manifest carrying it agree", () => {
  const { oci, ovms } = pair();
  assert.deepEqual(checkArtifact(oci, ovms), [], "a disk's size is the image's, not the layer tar's");
});

test("checkArtifact names each disagreement by its path in the OVMS manifest", () => {
  const { oci, ovms } = pair();
  oci.layers[0] = { ...oci.layers[0], mediaType: MediaType.Initrd, size: 11 };
  oci.layers[1] = { ...oci.layers[1], annotations: { "ovms.format": "raw" } };
  ovms.initrd = { ref: D("d") };
  assert.deepEqual(
    checkArtifact(oci, ovms).map((p) => p.path),
    ["kernel.ref", "kernel.ref", "initrd.ref", "diskLayers[0].format"],
  );
  assert.deepEqual(
    checkArtifact({ ...oci, layers: undefined as never }, ovms).map((p) => p.path),
    ["kernel.ref", "initrd.ref", "diskLayers[0].ref"],
    "a manifest without layers has none of the parts",
  );
});

test("validateArtifact checks the schema first, then S6, and throws them all as MANIFEST_INVALID", () => {
  const { oci, ovms } = pair();
  assert.equal(validateArtifact(oci, ovms, "x"), ovms);
  assert.throws(
    () => validateArtifact(oci, { ...ovms, kernel: { ref: "nope" } }, "x"),
    (e: any) => {
      assert.equal(e.code, "MANIFEST_INVALID");
      assert.deepEqual(
        e.problems.map((p: { path: string }) => p.path),
        ["kernel.ref"],
      );
      assert.match(e.message, /^x: 1 problem/);
      return true;
    },
  );
  assert.throws(() => validateArtifact({ ...oci, layers: [] }, ovms, "y"), {
    code: "MANIFEST_INVALID",
    message: /y: 2 problem/,
  });
});
