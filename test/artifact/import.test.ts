import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { cp, open, readFile, symlink, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import { build } from "../../src/artifact/build.js";
import { importPath } from "../../src/artifact/import.js";
import { indexTar } from "../../src/artifact/layout-tar-source.js";
import { digestHex, type Digest } from "../../src/core/digest.js";
import { MediaType } from "../../src/core/media-types.js";
import type { ImageManifest } from "../../src/core/oci.js";
import { exec, tempDir } from "../helpers.js";

type T = Parameters<typeof tempDir>[0];

/**
 * source makes a store holding two small artifacts (demo/vm:1.0 with a signature-like
 * referrer, and demo/vm:2.0) and a copy of it as a plain OCI layout folder.
 */
async function source(t: T) {
  const dir = await tempDir(t);
  const kernel = join(dir, "vmlinuz");
  const initrd = join(dir, "initrd.img");
  await writeFile(kernel, randomBytes(5000));
  await writeFile(initrd, randomBytes(700));
  const src = await Store.open(join(dir, "src"));
  const spec = {
    name: "demo/vm",
    version: "1.0",
    kernel: { path: kernel, args: "quiet" },
    initrd: { path: initrd },
  };
  const one = await build(src, spec, "demo/vm:1.0");
  const two = await build(src, { ...spec, version: "2.0" }, "demo/vm:2.0");
  const empty = await src.putBlob("{}");
  const sig = await src.putManifest({
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType: "application/example.signature",
    config: { mediaType: MediaType.OciEmpty, ...empty },
    layers: [],
    subject: one.descriptor,
  });
  await src.addUntagged(sig);
  const layout = join(dir, "layout");
  await cp(src.root, layout, { recursive: true, filter: (p) => !p.includes(".ovms") });
  return { dir, src, one, two, sig, layout, kernelDigest: one.manifest.kernel.ref as Digest };
}

test("a layout folder: PATH:NAME picks one artifact, and it comes with its referrers, untagged", async (t) => {
  const s = await source(t);
  const store = await Store.open(join(s.dir, "dst"));
  await assert.rejects(importPath(store, s.layout), {
    code: "BAD_REQUEST",
    message: /holds 2 artifacts .*name one as .*:NAME/,
  });
  const a = await importPath(store, `${s.layout}:1.0`);
  assert.equal(a.reference, `${s.layout}:1.0`);
  assert.equal(a.descriptor.digest, s.one.descriptor.digest);
  assert.equal(a.ovms.version, "1.0");
  const entries = await store.entries();
  assert.deepEqual(
    entries.map((e) => e.reference),
    [undefined, undefined],
    "an import names nothing",
  );
  assert.deepEqual(
    (await store.referrers(s.one.descriptor)).map((r) => r.digest),
    [s.sig.digest],
    "the referrer came along",
  );
  await assert.rejects(importPath(store, `${s.layout}:3.0`), { code: "ARTIFACT_NOT_FOUND", message: /3\.0/ });
  await assert.rejects(importPath(store, join(s.dir, "nowhere")), { code: "ARTIFACT_NOT_FOUND" });
  await assert.rejects(importPath(store, s.dir), {
    code: "MANIFEST_INVALID",
    message: /not an OCI image layout/,
  });
});

test("a relative path is relative to cwd", async (t) => {
  const s = await source(t);
  const store = await Store.open(join(s.dir, "dst"));
  const a = await importPath(store, "./layout:2.0", { cwd: s.dir });
  assert.equal(a.descriptor.digest, s.two.descriptor.digest);
  assert.equal(a.reference, "./layout:2.0");
});

test("tars are read in place: of the layout's content, of the folder itself (gnu, pax, ustar names), by skopeo", async (t) => {
  const s = await source(t);
  // Long enough that every blob path needs a long-name mechanism of its format.
  const long = join(s.dir, "l".repeat(90));
  await cp(s.layout, long, { recursive: true });
  const tars: [string, string[]][] = [
    ["content.tar", ["-C", s.layout, "."]],
    ["gnu.tar", ["--format=gnu", "-C", s.dir, "l".repeat(90)]],
    ["pax.tar", ["--format=pax", "-C", s.dir, "l".repeat(90)]],
    ["ustar.tar", ["--format=ustar", "-C", s.dir, "l".repeat(90)]],
  ];
  for (const [name, args] of tars) {
    const file = join(s.dir, name);
    await exec("tar", ["-cf", file, ...args]);
    const store = await Store.open(join(s.dir, `dst-${name}`));
    const a = await importPath(store, `${file}:1.0`);
    assert.equal(a.descriptor.digest, s.one.descriptor.digest, name);
    assert.equal(a.reference, `${file}:1.0`);
    assert.deepEqual(
      (await store.referrers(s.one.descriptor)).map((r) => r.digest),
      [s.sig.digest],
      `${name}: the referrer came along`,
    );
    assert.deepEqual(
      await readFile(store.blobPath(s.kernelDigest)),
      await readFile(s.src.blobPath(s.kernelDigest)),
    );
  }
  // Nothing was extracted beside the store.
  const store = await Store.open(join(s.dir, "dst-gnu.tar"));
  assert.deepEqual(
    (await exec("find", [store.workDir, "-mindepth", "1", "-not", "-path", "*/ingest*"])).trim(),
    "",
  );

  const archive = join(s.dir, "skopeo.tar");
  await exec("skopeo", [
    "copy",
    "--quiet",
    `oci:${s.src.root}:docker.io/demo/vm:2.0`,
    `oci-archive:${archive}`,
  ]);
  const a = await importPath(await Store.open(join(s.dir, "dst-skopeo")), archive);
  assert.equal(a.descriptor.digest, s.two.descriptor.digest);
});

test("tar refusals: a link, a `..` entry, a truncated tar, a blob whose bytes are not its digest", async (t) => {
  const s = await source(t);
  const store = await Store.open(join(s.dir, "dst"));
  const withLink = join(s.dir, "with-link");
  await cp(s.layout, withLink, { recursive: true });
  await symlink("oci-layout", join(withLink, "sneaky"));
  await exec("tar", ["-cf", join(s.dir, "link.tar"), "-C", withLink, "."]);
  await assert.rejects(importPath(store, join(s.dir, "link.tar")), {
    code: "MANIFEST_INVALID",
    message: /link\.tar: the tar holds "\.\/sneaky", which is not a plain file or folder/,
  });

  await writeFile(join(s.dir, "outside"), "x");
  await exec("tar", ["-cPf", join(s.dir, "climb.tar"), "-C", s.layout, ".", "../outside"]);
  await assert.rejects(importPath(store, join(s.dir, "climb.tar")), {
    code: "MANIFEST_INVALID",
    message: /climb\.tar: the tar holds "\.\.\/outside"/,
  });

  const good = join(s.dir, "good.tar");
  await exec("tar", ["-cf", good, "-C", s.layout, "."]);
  const cut = join(s.dir, "cut.tar");
  await cp(good, cut);
  const { files } = await indexTar(good);
  const kernel = files.get(`blobs/sha256/${digestHex(s.kernelDigest)}`)!;
  await truncate(cut, kernel.offset + 100);
  await assert.rejects(importPath(store, cut), {
    code: "MANIFEST_INVALID",
    message: /cut\.tar: not a readable tar/,
  });

  const bad = join(s.dir, "bad.tar");
  await cp(good, bad);
  const fh = await open(bad, "r+");
  const byte = Buffer.alloc(1);
  await fh.read(byte, 0, 1, kernel.offset + 10);
  await fh.write(Buffer.from([byte[0] ^ 0xff]), 0, 1, kernel.offset + 10);
  await fh.close();
  await assert.rejects(importPath(store, `${bad}:1.0`), (e: any) => {
    assert.equal(e.code, "DIGEST_MISMATCH");
    assert.ok(e.message.includes(s.kernelDigest), e.message);
    assert.ok(e.message.includes(bad), e.message);
    return true;
  });
  assert.deepEqual(await store.entries(), [], "nothing was recorded");
  assert.equal(await store.blobSize(s.kernelDigest), undefined, "the bad blob is not in the store");
});

test("a manifest.json: an OVMS manifest gets its OCI manifest assembled, an OCI one is kept as it is", async (t) => {
  const s = await source(t);
  const store = s.src;
  const oci = await store.readJson<ImageManifest>(s.one.descriptor.digest);
  const ovmsBytes = await store.readBlob(oci.config.digest);

  const ovmsFile = join(s.dir, "manifest.json");
  await writeFile(ovmsFile, ovmsBytes);
  const a = await importPath(store, ovmsFile);
  assert.equal(a.reference, ovmsFile);
  assert.equal(a.oci.config.digest, oci.config.digest, "the file's bytes are the config");
  assert.deepEqual(
    a.oci.layers.map((l) => [l.digest, l.annotations?.["org.opencontainers.image.title"]]),
    [
      [oci.layers[0].digest, "kernel"],
      [oci.layers[1].digest, "initrd"],
    ],
  );
  assert.notEqual(a.descriptor.digest, s.one.descriptor.digest, "other titles: another manifest");
  assert.ok((await store.entries()).some((e) => e.descriptor.digest === a.descriptor.digest && !e.reference));

  const ociFile = join(s.dir, "oci.json");
  await writeFile(ociFile, await store.readBlob(s.one.descriptor.digest));
  assert.equal((await importPath(store, ociFile)).descriptor.digest, s.one.descriptor.digest);

  // Checked before anything is recorded: a part missing, a size that is not the layer's.
  const other = await Store.open(join(s.dir, "other"));
  await assert.rejects(importPath(other, ovmsFile), {
    code: "ARTIFACT_NOT_FOUND",
    message: new RegExp(`kernel ${s.kernelDigest} is not in the store`),
  });
  const wrong = JSON.parse(ovmsBytes.toString());
  wrong.kernel.size += 1;
  await writeFile(ovmsFile, JSON.stringify(wrong));
  const before = await store.entries();
  await assert.rejects(importPath(store, ovmsFile), (e: any) => {
    assert.equal(e.code, "MANIFEST_INVALID");
    assert.deepEqual(
      e.problems.map((p: { path: string }) => p.path),
      ["kernel.ref"],
    );
    return true;
  });
  const notOvms = { ...oci, artifactType: "application/other", config: { ...oci.config, mediaType: "x/y" } };
  await writeFile(ociFile, JSON.stringify(notOvms));
  await assert.rejects(importPath(store, ociFile), { code: "NOT_AN_ARTIFACT" });
  assert.deepEqual(await store.entries(), before, "nothing was recorded");

  await writeFile(ovmsFile, "not json");
  await assert.rejects(importPath(store, ovmsFile), { code: "MANIFEST_INVALID", message: /not valid JSON/ });
});
