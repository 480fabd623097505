import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { demoAssets, exec, ovm, ovmJson, tempDir, ROOT } from "../helpers.js";

test("ovm validate: exit 0 on valid files, 1 with path-named problems otherwise, --json", async (t) => {
  const dir = await tempDir(t);
  const bad = join(dir, "bad.json");
  await writeFile(
    bad,
    JSON.stringify({
      schemaVersion: 1,
      mediaType: "application/vnd.ovms.manifest.v1+json",
      name: "a/b",
      version: "1",
      kernel: { ref: "sha256:1" },
      diskLayers: [{ ref: `sha256:${"a".repeat(64)}`, format: "qcow2", size: -5 }],
    }),
  );
  const good = join(ROOT, "examples", "minimal-kernel-initrd.json");
  const ok = await ovm(["validate", good]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /valid/);
  const r = await ovm(["validate", good, bad]);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /kernel\.ref: must be a sha256 digest/);
  assert.match(r.stdout, /diskLayers\[0\]\.size: must be >= 0/);
  const j = await ovm(["--json", "validate", bad]);
  assert.equal(j.code, 1);
  const body = JSON.parse(j.stdout);
  assert.equal(body.valid, false);
  assert.deepEqual(body.files[0].problems.map((p: { path: string }) => p.path).sort(), [
    "diskLayers[0].size",
    "kernel.ref",
  ]);
});

test("ovm build → ls → inspect → tag → rmi → gc, and skopeo reads the store", async (t) => {
  const a = demoAssets();
  const dir = await tempDir(t);
  const env = { OVM_STORE: join(dir, "store") };
  const built = await ovmJson(
    [
      "build",
      "-t",
      "demo/vm:1.0",
      "--kernel",
      a.kernel,
      "--initrd",
      a.initrd,
      "--disk",
      a.base,
      "--disk",
      `${a.diff}:qcow2`,
      "--cmdline",
      "console=ttyS0",
      "--device",
      "type=ivshmem,name=shm0,size=1M",
      "--memory",
      "256M",
      "--cpus",
      "1",
    ],
    env,
  );
  assert.match(built.digest, /^sha256:[a-f0-9]{64}$/);
  assert.equal(built.manifest.resources.memory, 256 << 20);

  const ls = await ovmJson(["ls"], env);
  assert.deepEqual(
    ls.map((r: { reference: string }) => r.reference),
    ["docker.io/demo/vm:1.0"],
  );
  const table = await ovm(["ls"], env);
  assert.match(table.stdout, /^REFERENCE\s+DIGEST/);
  assert.match(table.stdout, /demo\/vm:1\.0/);

  const info = await ovmJson(["inspect", "demo/vm:1.0"], env);
  assert.equal(info.digest, built.digest);
  assert.equal(info.artifactType, "application/vnd.ovms.manifest.v1+json");
  assert.equal(info.manifest.diskLayers.length, 2);
  assert.equal(info.oci.layers.length, 4);
  const text = await ovm(["inspect", "demo/vm:1.0"], env);
  assert.match(text.stdout, /Disk 1: .* diff/);

  // skopeo finds the artifact by its full reference and copies it byte for byte.
  const raw = JSON.parse(
    await exec("skopeo", ["inspect", "--raw", `oci:${env.OVM_STORE}:docker.io/demo/vm:1.0`]),
  );
  assert.equal(raw.artifactType, "application/vnd.ovms.manifest.v1+json");
  await exec("skopeo", [
    "copy",
    "--preserve-digests",
    `oci:${env.OVM_STORE}:docker.io/demo/vm:1.0`,
    `oci:${join(dir, "copy")}:x`,
  ]);
  const copied = JSON.parse(await exec("skopeo", ["inspect", "--raw", `oci:${join(dir, "copy")}:x`]));
  assert.deepEqual(copied, raw);

  const tagged = await ovm(["tag", "demo/vm:1.0", "127.0.0.1:5000/demo/vm:latest"], env);
  assert.equal(tagged.code, 0, tagged.stderr);
  assert.equal((await ovmJson(["ls"], env)).length, 2);

  const gone = await ovm(["rmi", "demo/vm:1.0"], env);
  assert.equal(gone.code, 0, gone.stderr);
  let gc = await ovmJson(["gc"], env);
  assert.equal(gc.blobsRemoved, 0, "the other name still holds every blob");
  await ovm(["rmi", "127.0.0.1:5000/demo/vm:latest"], env);
  gc = await ovmJson(["gc"], env);
  assert.equal(gc.blobsRemoved, 6, "manifest, config, kernel, initrd, two disks");
  assert.ok(gc.bytesFreed > 1_000_000);
  const text2 = await ovm(["gc"], env);
  assert.match(text2.stdout, /freed 0 B/);
});

test("errors: unknown reference, bad reference, missing kernel — non-zero exit, store untouched", async (t) => {
  const dir = await tempDir(t);
  const env = { OVM_STORE: join(dir, "store") };
  const r0 = await ovm(["inspect", "nope/nothing:1"], env);
  assert.equal(r0.code, 1);
  assert.match(r0.stderr, /no store at .* \(nothing was built or pulled there\)/);
  await ovm(["build", "-t", "x/y:1", "--kernel", demoAssets().kernel], env);
  await ovm(["rmi", "x/y:1"], env);
  const r1 = await ovm(["inspect", "nope/nothing:1"], env);
  assert.equal(r1.code, 1);
  assert.match(r1.stderr, /nope\/nothing:1: not in the store/);
  const r2 = await ovm(["inspect", "Bad/Ref"], env);
  assert.equal(r2.code, 2);
  assert.match(r2.stderr, /invalid reference "Bad\/Ref": repository name must be lowercase/);
  const r3 = await ovm(["build", "-t", "x/y:1", "--kernel", join(dir, "missing")], env);
  assert.equal(r3.code, 1);
  assert.match(r3.stderr, /kernel: .*missing is not a readable file/);
  const r4 = await ovm(["--json", "inspect", "nope:1"], env);
  assert.equal(JSON.parse(r4.stderr).error.code, "NOT_FOUND");
  assert.deepEqual(await ovmJson(["ls"], env), []);
  const r5 = await ovm(["build"], env);
  assert.equal(r5.code, 2);
  assert.match(r5.stderr, /required option '-t, --tag <ref>'/);
});
