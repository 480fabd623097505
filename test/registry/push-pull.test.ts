import { test } from "node:test";
import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import { MediaType } from "../../src/core/media-types.js";
import type { Descriptor, ImageIndex, ImageManifest } from "../../src/core/oci.js";
import { RegistryClient } from "../../src/registry/client.js";
import { copy } from "../../src/registry/copy.js";
import { referrersTag } from "../../src/registry/referrers.js";
import { OVM, buildDemo, exec, ovm, ovmJson, tempDir } from "../helpers.js";
import { registry } from "../registry-server.js";
import { buildArtifact, makeDisks } from "./fixtures.js";

/** addSignature stores a small sigstore-bundle-like referrer of `subject`, untagged, as `ovm sign` will. */
async function addSignature(store: Store, subject: Descriptor, text = "signature"): Promise<Descriptor> {
  const empty = await store.putBlob("{}");
  const bundle = await store.putBlob(JSON.stringify({ mediaType: MediaType.SigstoreBundle, note: text }));
  const m: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType: MediaType.SigstoreBundle,
    config: { mediaType: MediaType.OciEmpty, digest: empty.digest, size: empty.size },
    layers: [{ mediaType: MediaType.SigstoreBundle, digest: bundle.digest, size: bundle.size }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations: { "org.opencontainers.image.created": "2026-01-01T00:00:00Z" },
  };
  const desc = await store.putManifest(m);
  await store.addUntagged(desc);
  return desc;
}

test("push → pull of the demo artifact into a fresh store: identical digests, inspect works, referrers travel via the tag schema (and stay behind with --referrers=false)", async (t) => {
  const reg = await registry(t);
  const dir = await tempDir(t);
  const src = await Store.open(join(dir, "src"));
  const ref = `${reg.host}/demo/vm:1.0`;
  const built = await buildDemo(src, ref);
  const sig = await addSignature(src, built.descriptor);
  const env = { DOCKER_CONFIG: join(dir, "docker") };

  const pushed = await ovmJson(["--store", src.root, "push", ref], env);
  assert.equal(pushed.digest, built.descriptor.digest);
  assert.equal(pushed.blobs, 7, "config, kernel, initrd, two disks, and the signature's config and bundle");
  assert.equal(pushed.referrers, 1);
  assert.ok(pushed.bytesTransferred > 10 << 20);
  assert.equal(pushed.bytesSkipped, 0);
  assert.deepEqual(Object.keys(pushed).slice(0, 6), [
    "reference",
    "digest",
    "bytesTransferred",
    "bytesSkipped",
    "blobs",
    "blobsTransferred",
  ]);
  assert.equal(typeof pushed.seconds, "number");

  // The registry has no Referrers API: the signature is listed under the sha256-<hex> tag.
  const client = new RegistryClient({ credentials: async () => undefined });
  t.after(() => client.close());
  const repo = client.repository(ref);
  const fallback = await repo.fetchManifest(referrersTag(built.descriptor.digest));
  assert.deepEqual(
    (fallback.manifest as ImageIndex).manifests.map((d) => [d.digest, d.artifactType]),
    [[sig.digest, MediaType.SigstoreBundle]],
  );
  assert.deepEqual(
    (await repo.referrers(built.descriptor, MediaType.SigstoreBundle)).map((d) => d.digest),
    [sig.digest],
  );
  assert.deepEqual(await repo.referrers(built.descriptor, "application/x-other"), []);

  // A second push moves nothing.
  const again = await ovmJson(["--store", src.root, "push", ref], env);
  assert.equal(again.bytesTransferred, 0);

  const dst = join(dir, "dst");
  const pulled = await ovmJson(["--store", dst, "pull", ref], env);
  assert.equal(pulled.digest, built.descriptor.digest);
  assert.equal(pulled.reference, ref);
  assert.equal(pulled.referrers, 1);
  const info = await ovmJson(["--store", dst, "inspect", ref], env);
  assert.equal(info.digest, built.descriptor.digest);
  assert.equal(info.artifactType, MediaType.OvmsManifest);
  assert.deepEqual(info.manifest, built.manifest);
  assert.deepEqual(
    info.referrers.map((r: Descriptor) => r.digest),
    [sig.digest],
  );
  // Every blob of the source is in the destination, byte for byte (names are the digests).
  const blobs = async (root: string) => (await readdir(join(root, "blobs", "sha256"))).sort();
  assert.deepEqual(await blobs(dst), await blobs(src.root));

  const bare = join(dir, "bare");
  const noRefs = await ovmJson(["--store", bare, "pull", "--referrers=false", ref], env);
  assert.equal(noRefs.referrers, 0);
  const info2 = await ovmJson(["--store", bare, "inspect", ref], env);
  assert.deepEqual(info2.referrers, []);
  assert.equal(await (await Store.open(bare)).exists(sig), false);

  // Pull by digest: recorded untagged, found by digest.
  const byDigest = join(dir, "by-digest");
  const d = await ovmJson(
    ["--store", byDigest, "pull", "--referrers=false", `${reg.host}/demo/vm@${built.descriptor.digest}`],
    env,
  );
  assert.equal(d.digest, built.descriptor.digest);
  const s3 = await Store.open(byDigest);
  assert.equal((await s3.resolve(built.descriptor.digest)).digest, built.descriptor.digest);

  // Deleting the signature takes it out of the referrers index too.
  await client.repository(ref, { push: true }).deleteManifest(sig);
  assert.deepEqual(await client.repository(ref).referrers(built.descriptor), []);
});

test("progress bars only on a terminal; quiet in pipes", async (t) => {
  const reg = await registry(t);
  const dir = await tempDir(t);
  const disks = await makeDisks(dir, 1);
  const src = await Store.open(join(dir, "src"));
  const ref = `${reg.host}/progress/vm:1`;
  await buildArtifact(src, ref, disks);
  const piped = await ovm(["--store", src.root, "push", ref]);
  assert.equal(piped.code, 0, piped.stderr);
  assert.equal(piped.stderr, "");
  assert.match(
    piped.stdout,
    /^Pushed 127\.0\.0\.1:\d+\/progress\/vm:1 sha256:[a-f0-9]{64}\n {2}4 blob\(s\) transferred/,
  );
  // A repeat push finds the manifest there, and says its blobs are there too.
  const again = await ovm(["--store", src.root, "--json", "push", ref]);
  assert.equal(again.code, 0, again.stderr);
  const sum = JSON.parse(again.stdout);
  assert.deepEqual([sum.blobs, sum.blobsTransferred, sum.blobsSkipped], [4, 0, 4]);
  assert.ok(sum.bytesSkipped > 96 * 1024);
  assert.match(
    (await ovm(["--store", src.root, "push", ref])).stdout,
    /0 blob\(s\) transferred \(0 B\), 4 already there/,
  );
  // `script` runs the CLI on a pseudo-terminal, as a person would.
  const tty = await exec("script", [
    "-qec",
    `${process.execPath} ${OVM} --store ${join(dir, "dst")} pull ${ref}`,
    "/dev/null",
  ]);
  assert.match(tty, /vmlinuz\s+█+\s+96\.0 KiB\/96\.0 KiB\s+done/);
  assert.match(tty, /config [a-f0-9]{8}\s+█+/);
  assert.match(tty, /Pulled 127\.0\.0\.1/);
  const quiet = await exec("script", [
    "-qec",
    `${process.execPath} ${OVM} -q --store ${join(dir, "dst2")} pull ${ref}`,
    "/dev/null",
  ]);
  assert.match(quiet.trim(), /^sha256:[a-f0-9]{64}$/);
});

test("pulling a new version that shares the base disk transfers only the new layers", async (t) => {
  const reg = await registry(t);
  const dir = await tempDir(t);
  const disks = await makeDisks(dir, 3);
  const src = await Store.open(join(dir, "src"));
  const v1 = await buildArtifact(src, `${reg.host}/test/vm:1`, disks, 1);
  const v2 = await buildArtifact(src, `${reg.host}/test/vm:2`, disks, 2);
  const client = new RegistryClient({ credentials: async () => undefined });
  t.after(() => client.close());
  const repo = client.repository(`${reg.host}/test/vm`, { push: true });
  await copy(src, `${reg.host}/test/vm:1`, repo, "1");
  const p2 = await copy(src, `${reg.host}/test/vm:2`, repo, "2");
  assert.equal(p2.blobsSkipped, 1, "the base layer is already in the registry");

  const dst = await Store.open(join(dir, "dst"));
  const r1 = await copy(repo, "1", dst, `${reg.host}/test/vm:1`);
  assert.equal(r1.blobsTransferred, 4);
  const r2 = await copy(repo, "2", dst, `${reg.host}/test/vm:2`);
  const oci2 = await dst.readJson<ImageManifest>(v2.descriptor.digest);
  const base = oci2.layers[1];
  assert.equal(
    base.digest,
    (await dst.readJson<ImageManifest>(v1.descriptor.digest)).layers[1].digest,
    "both versions share the base layer",
  );
  assert.equal(r2.blobsSkipped, 1);
  assert.equal(r2.bytesSkipped, base.size);
  assert.equal(r2.blobsTransferred, 3, "config, kernel 2, diff 2");
  assert.equal(
    r2.bytesTransferred,
    oci2.config.size + oci2.layers[0].size + oci2.layers[2].size + v2.descriptor.size,
  );
});

test("interop: skopeo copies and inspects what ovm pushed; ovm pulls what skopeo pushed from an OCI layout, same digests", async (t) => {
  const reg = await registry(t);
  const dir = await tempDir(t);
  const disks = await makeDisks(dir);
  const src = await Store.open(join(dir, "src"));
  const ref = `${reg.host}/interop/vm:1`;
  const built = await buildArtifact(src, ref, disks);
  const client = new RegistryClient({ credentials: async () => undefined });
  t.after(() => client.close());
  await copy(src, ref, client.repository(ref, { push: true }), "1");

  const raw = JSON.parse(await exec("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${ref}`]));
  assert.equal(raw.artifactType, MediaType.OvmsManifest);
  assert.equal(raw.config.mediaType, MediaType.OvmsManifest);
  const out = join(dir, "skopeo-out");
  await exec("skopeo", ["copy", "-q", "--src-tls-verify=false", `docker://${ref}`, `oci:${out}:copied`]);
  const index = JSON.parse(await exec("cat", [join(out, "index.json")])) as ImageIndex;
  assert.equal(index.manifests[0].digest, built.descriptor.digest, "skopeo keeps the manifest byte for byte");

  // The other way: skopeo pushes straight from the OVMS store (an OCI layout), ovm pulls.
  const ref2 = `${reg.host}/interop/from-skopeo:2`;
  await exec("skopeo", [
    "copy",
    "-q",
    "--dest-tls-verify=false",
    `oci:${src.root}:${ref}`,
    `docker://${ref2}`,
  ]);
  const dst = join(dir, "dst");
  const pulled = await ovmJson(["--store", dst, "pull", ref2]);
  assert.equal(pulled.digest, built.descriptor.digest);
  const info = await ovmJson(["--store", dst, "inspect", ref2]);
  assert.equal(info.manifest.kernel.ref, built.manifest.kernel.ref);
});

test("ovm copy between repositories of one registry mounts the blobs; ovm tags lists the tags", async (t) => {
  const reg = await registry(t);
  const dir = await tempDir(t);
  const disks = await makeDisks(dir);
  const src = await Store.open(join(dir, "src"));
  const ref = `${reg.host}/team-a/vm:1`;
  const built = await buildArtifact(src, ref, disks);
  await addSignature(src, built.descriptor);
  await ovmJson(["--store", src.root, "push", ref]);

  const copied = await ovmJson(["copy", ref, `${reg.host}/team-b/vm:stable`]);
  assert.equal(copied.digest, built.descriptor.digest);
  assert.equal(copied.blobsMounted, 6, "every blob mounted, none sent");
  assert.equal(copied.blobsTransferred, 0);
  assert.equal(copied.referrers, 1);
  const pulled = await ovmJson(["--store", join(dir, "b"), "pull", `${reg.host}/team-b/vm:stable`]);
  assert.equal(pulled.digest, built.descriptor.digest);
  assert.equal(pulled.referrers, 1, "the signature was copied with its subject");

  const tags = await ovmJson(["tags", `${reg.host}/team-b/vm`]);
  assert.deepEqual(tags.tags.sort(), [`sha256-${built.descriptor.digest.slice(7)}`, "stable"].sort());
  const text = await ovm(["tags", `${reg.host}/team-a/vm`]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^1$/m);

  const missing = await ovm(["pull", "--store", join(dir, "x"), `${reg.host}/team-a/vm:nope`]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /MANIFEST_UNKNOWN/);
  assert.match(missing.stderr, /manifests\/nope/);
});

test("multi-platform index: push copies every platform; pull picks the host's, or --platform's", async (t) => {
  const reg = await registry(t);
  const dir = await tempDir(t);
  const disks = await makeDisks(dir, 1);
  const src = await Store.open(join(dir, "src"));
  const amd = await buildArtifact(src, `${reg.host}/multi/vm:amd64`, disks, 1);
  const arm = await buildArtifact(src, `${reg.host}/multi/vm:arm64`, disks, 2);
  const entry = (d: Descriptor, architecture: string): Descriptor => ({
    mediaType: d.mediaType,
    digest: d.digest,
    size: d.size,
    platform: { os: "linux", architecture },
  });
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.OciIndex,
    manifests: [entry(amd.descriptor, "amd64"), entry(arm.descriptor, "arm64")],
  };
  const indexDesc = await src.putManifest(index);
  const ref = `${reg.host}/multi/vm:1`;
  await src.tag(indexDesc, ref);
  const pushed = await ovmJson(["--store", src.root, "push", ref]);
  assert.equal(pushed.digest, indexDesc.digest);
  assert.equal(pushed.blobs, 7, "two configs, two kernels, two diffs and the base they share");

  const host = await ovmJson(["--store", join(dir, "a"), "pull", ref]);
  assert.equal(host.digest, process.arch === "arm64" ? arm.descriptor.digest : amd.descriptor.digest);
  const other = await ovmJson(["--store", join(dir, "b"), "pull", "--platform", "linux/arm64", ref]);
  assert.equal(other.digest, arm.descriptor.digest);
  const info = await ovmJson(["--store", join(dir, "b"), "inspect", ref]);
  assert.equal(info.manifest.version, "2");
  const none = await ovm(["--store", join(dir, "c"), "pull", "--platform", "linux/s390x", ref]);
  assert.equal(none.code, 1);
  assert.match(
    none.stderr,
    /no manifest for linux\/s390x in the index \(it has: linux\/amd64, linux\/arm64\)/,
  );
  const bad = await ovm(["pull", "--platform", "s390x", ref]);
  assert.equal(bad.code, 2);
});
