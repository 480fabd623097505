import { test } from "node:test";
import assert from "node:assert/strict";
import { checkManifest, checkArtifact } from "../../src/core/validate.js";
import { validateBootstrap } from "../../src/core/bootstrap.js";
import { MediaType } from "../../src/core/media-types.js";
import { ValidationError } from "../../src/core/errors.js";
import type { OvmsManifest } from "../../src/core/manifest.generated.js";
import type { ImageManifest } from "../../src/core/oci.js";

const d = (c: string) => `sha256:${c.repeat(64)}`;
const manifest = (more: Partial<OvmsManifest> = {}): OvmsManifest => ({
  schemaVersion: 1,
  mediaType: MediaType.OvmsManifest,
  name: "tools/busybox",
  version: "vm",
  kernel: { ref: d("1") },
  initrd: { ref: d("2") },
  diskLayers: [{ ref: d("3"), format: "qcow2", size: 1 }],
  bootstrap: { ref: d("4"), size: 10 },
  containerMode: true,
  ...more,
});

test("rule S9: containerMode needs its bootstrap config, OVMS-Init and a root disk; a bootstrap needs containerMode", () => {
  assert.deepEqual(checkManifest(manifest()), []);
  const bare = manifest({ bootstrap: undefined, initrd: undefined, diskLayers: [] });
  assert.deepEqual(
    checkManifest(JSON.parse(JSON.stringify(bare))).map((p) => p.path),
    ["bootstrap", "initrd", "diskLayers"],
  );
  const stray = checkManifest(manifest({ containerMode: false }));
  assert.deepEqual(
    stray.map((p) => p.path),
    ["bootstrap"],
  );
  assert.match(stray[0].message, /containerMode artifacts only \(rule S9\)/);
  assert.deepEqual(
    checkManifest({ ...manifest(), containerMode: "yes" }).map((p) => p.path),
    ["containerMode"],
  );
});

test("rule S6: the bootstrap ref is a layer of the bootstrap config media type, with the manifest's size", () => {
  const layer = (digest: string, mediaType: string, size = 10) => ({
    mediaType,
    digest: digest as `sha256:${string}`,
    size,
    annotations: {},
  });
  const oci = (bootType: string, size = 10) =>
    ({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: layer(d("9"), MediaType.OvmsManifest),
      layers: [
        layer(d("1"), MediaType.Kernel),
        layer(d("2"), MediaType.Initrd),
        { ...layer(d("3"), MediaType.DiskLayer), annotations: { "ovms.format": "qcow2" } },
        layer(d("4"), bootType, size),
      ],
    }) as ImageManifest;
  assert.deepEqual(checkArtifact(oci(MediaType.Bootstrap), manifest()), []);
  assert.deepEqual(
    checkArtifact(oci(MediaType.Initrd), manifest()).map((p) => p.path),
    ["bootstrap.ref"],
  );
  assert.match(
    checkArtifact(oci(MediaType.Bootstrap, 11), manifest())[0].message,
    /size 10 does not match the layer's 11/,
  );
});

test("the bootstrap config schema: closed, env as NAME=VALUE, absolute workdir, ports PORT/PROTO, numeric user", () => {
  const ok = {
    schemaVersion: 1,
    mediaType: MediaType.Bootstrap,
    entrypoint: ["/bin/sh"],
    cmd: ["-c", "echo"],
    env: ["A=1"],
    workdir: "/app",
    user: { uid: 1000, gid: 1000, name: "app" },
    exposedPorts: ["80/tcp"],
    stopSignal: "SIGINT",
  };
  assert.deepEqual(validateBootstrap(ok), ok);
  for (const [bad, path] of [
    [{ ...ok, env: ["NOEQUALS"] }, "env[0]"],
    [{ ...ok, workdir: "app" }, "workdir"],
    [{ ...ok, exposedPorts: ["80"] }, "exposedPorts[0]"],
    [{ ...ok, user: { uid: "root", gid: 0 } }, "user.uid"],
    [{ ...ok, stopSignal: "TERM" }, "stopSignal"],
    [{ ...ok, extra: 1 }, "extra"],
  ] as const) {
    assert.throws(
      () => validateBootstrap(bad),
      (e) => e instanceof ValidationError && e.problems.some((p) => p.path === path),
      path,
    );
  }
  assert.throws(() => validateBootstrap({ ...ok, cmd: ["a\0b"] }), /NUL/);
});
