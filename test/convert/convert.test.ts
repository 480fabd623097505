import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isOvmsError } from "../../src/core/errors.js";
import { validateArtifact } from "../../src/core/validate.js";
import { MediaType } from "../../src/core/media-types.js";
import type { ImageManifest } from "../../src/core/oci.js";
import { Store } from "../../src/store/store.js";
import { convert } from "../../src/artifact/convert/index.js";
import { loadArtifact } from "../../src/artifact/artifact.js";
import { OVM, exec } from "../helpers.js";
import { spawn } from "node:child_process";
import { startRegistry, type RegistryServer } from "../registry-server.js";
import { baseLayer, topLayer, writeImageLayout, type ImageConfigFields } from "./image-fixture.js";

// Conversions without a VM: the root filesystem a container image becomes, read back with
// debugfs; the same image twice gives the same digests; shared base layers come from the
// cache; the registry and layout sources; the images that cannot be converted.
let dir: string;
let layout: string;
let registry: RegistryServer;
const config: ImageConfigFields = {
  Env: ["PATH=/bin", "GREETING=hello"],
  Cmd: ["sh", "-c", "echo $GREETING"],
  WorkingDir: "/home/app",
  User: "app",
  ExposedPorts: { "8080/tcp": {}, "53/udp": {}, "9000": {} },
  StopSignal: "INT",
  Labels: { "org.opencontainers.image.title": "fixture" },
};

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-convert-"));
  layout = join(dir, "layout");
  await writeImageLayout(layout, "1.0", [baseLayer(), topLayer()], config);
  registry = await startRegistry();
  await exec("skopeo", [
    "copy",
    "-q",
    "--dest-tls-verify=false",
    `oci:${layout}:1.0`,
    `docker://${registry.host}/fixture/busybox:1.0`,
  ]);
});

after(async () => {
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** diskOf extracts the root filesystem of a converted artifact and returns a debugfs reader of it. */
async function diskOf(
  store: Store,
  ref: string,
): Promise<{ raw: string; fs: (req: string) => Promise<string> }> {
  const a = await loadArtifact(store, ref);
  const raw = join(dir, `disk-${a.descriptor.digest.slice(7, 19)}.raw`);
  const layer = store.blobPath(a.ovms.diskLayers![0].ref as `sha256:${string}`);
  await exec("sh", [
    "-c",
    `tar -xOf ${layer} disk.qcow2 > ${raw}.qcow2 && qemu-img convert -O raw ${raw}.qcow2 ${raw}`,
  ]);
  return { raw, fs: (req) => exec("debugfs", ["-R", req, raw]) };
}

test("an image becomes a containerMode artifact whose ext4 root holds the merged layers with their metadata", async (t) => {
  const store = await Store.open(join(dir, "s1"));
  t.after(() => rm(store.root, { recursive: true, force: true }));
  const lines: string[] = [];
  const r = await convert(store, `oci:${layout}:1.0`, {
    tag: "fixture/bb:vm",
    progress: (l) => lines.push(l),
  });
  const a = await loadArtifact(store, "fixture/bb:vm");
  assert.equal(a.descriptor.digest, r.descriptor.digest);
  assert.equal(a.ovms.containerMode, true);
  assert.deepEqual(validateArtifact(a.oci, a.ovms), a.ovms);
  assert.deepEqual(
    a.oci.layers.map((l) => l.annotations?.["ovms.role"]),
    ["kernel", "initrd", "disk", "bootstrap"],
  );
  assert.equal(a.oci.layers[3].mediaType, MediaType.Bootstrap);
  assert.equal(a.oci.annotations?.["org.opencontainers.image.base.name"], `oci:${layout}:1.0`);
  assert.match(a.oci.annotations?.["org.opencontainers.image.base.digest"] ?? "", /^sha256:/);
  assert.equal(a.ovms.metadata?.created, "2026-01-02T03:04:05Z", "the image's own time, not the clock");
  assert.deepEqual(a.ovms.metadata?.labels, { "org.opencontainers.image.title": "fixture" });
  assert.match(a.ovms.kernel.args ?? "", /console=ttyS1/);
  assert.deepEqual(
    JSON.parse((await store.readBlob(a.ovms.bootstrap!.ref as `sha256:${string}`)).toString()),
    {
      schemaVersion: 1,
      mediaType: MediaType.Bootstrap,
      cmd: ["sh", "-c", "echo $GREETING"],
      env: ["PATH=/bin", "GREETING=hello"],
      workdir: "/home/app",
      user: { uid: 1000, gid: 1000, name: "app" },
      exposedPorts: ["53/udp", "8080/tcp", "9000/tcp"],
      stopSignal: "SIGINT",
    },
  );
  assert.ok(
    lines.some((l) => /layer 1\/2 .*downloaded and unpacked/.test(l)),
    lines.join("\n"),
  );
  assert.ok(lines.some((l) => /^mke2fs: /.test(l)));

  const { raw, fs } = await diskOf(store, "fixture/bb:vm");
  const etc = await fs("ls -l /etc");
  assert.doesNotMatch(etc, /removed/, "the whiteout of layer 2 removed /etc/removed");
  assert.match(etc, /100644 \(1\)\s+0\s+0\s+19 .* greeting/);
  assert.match(etc, /100600 \(1\)\s+0\s+0\s+21 .* secret/);
  assert.deepEqual(
    (await fs("ls /opt/old")).match(/\b(hidden|new)\b/g),
    ["new"],
    "the opaque folder hides layer 1's file",
  );
  assert.match(await fs("ls -l /home"), /40750 \(2\)\s+1000\s+1000 .* app/);
  assert.match(await fs("ls -l /usr/bin"), /104755 \(1\)\s+0\s+0\s+\d+ .* setuid-tool/);
  const bin = await fs("ls -l /bin");
  const ino = (name: string) => new RegExp(`^\\s*(\\d+)\\s+\\S+ \\(\\d\\).* ${name}$`, "m").exec(bin)?.[1];
  assert.equal(ino("busybox"), ino("busybox-hardlink"), "a hard link is one inode");
  assert.match(bin, /120777 \(7\).* sh$/m);
  assert.match(await fs("stat /bin/sh"), /Fast link dest: "busybox"/);
  assert.match(await fs("ls -l /dev"), /20666 \(3\)\s+0\s+0 .* null/);
  assert.match(await fs("stat /dev/null"), /Device major\/minor number: 01:03/);
  assert.match(await fs("ls -l /run"), /10640 \(5\).* fifo/);
  const attrs = await fs("ea_list /usr/bin/tagged");
  assert.match(attrs, /user\.ovms \(6\) = "tagged"/);
  assert.match(attrs, /security\.capability \(8\) = 01 00 00 02 00 20 00 00/);
  assert.match(await fs("stat /etc/kept"), /mtime: 0x6553f100/, "times come from the tar headers");
  assert.equal((await exec("sh", ["-c", `e2fsck -fn ${raw} >/dev/null; echo $?`])).trim(), "0");
});

test("the same image converted twice, into two stores, from a layout and from a registry, gives the same disk and bootstrap", async (t) => {
  const s1 = await Store.open(join(dir, "r1"));
  const s2 = await Store.open(join(dir, "r2"));
  t.after(() =>
    Promise.all([
      rm(s1.root, { recursive: true, force: true }),
      rm(s2.root, { recursive: true, force: true }),
    ]),
  );
  const a = await convert(s1, `oci:${layout}:1.0`, { tag: "fixture/bb:vm" });
  const b = await convert(s2, `oci:${layout}:1.0`, { tag: "fixture/bb:vm" });
  assert.equal(a.descriptor.digest, b.descriptor.digest, "the whole artifact is reproducible");
  const c = await convert(s2, `docker://${registry.host}/fixture/busybox:1.0`, {
    tag: "fixture/bb:from-registry",
  });
  assert.deepEqual(c.manifest.diskLayers, a.manifest.diskLayers);
  assert.deepEqual(c.manifest.bootstrap, a.manifest.bootstrap);
  // skopeo re-encodes the manifest and gzips the plain layer on its way to the registry: other
  // blob digests, the same diff_ids, so the cache (keyed by diff_id) already has both layers.
  assert.notEqual(c.layers![1].digest, a.layers![1].digest);
  assert.deepEqual(
    c.layers!.map((l) => l.cached),
    [true, true],
  );
  // A plain reference (no docker://) is a registry too.
  const d = await convert(s2, `${registry.host}/fixture/busybox:1.0`, { tag: "fixture/bb:plain" });
  assert.deepEqual(d.manifest.diskLayers, a.manifest.diskLayers);
});

test("a second image on the same base layer takes the base from the cache; a zstd layer and a multi-platform index are read", async (t) => {
  const store = await Store.open(join(dir, "shared"));
  t.after(() => rm(store.root, { recursive: true, force: true }));
  await convert(store, `oci:${layout}:1.0`, { tag: "fixture/bb:1" });
  // Image 2: the same base layer, another top layer, compressed with zstd, behind an index.
  const other = join(dir, "other");
  await writeImageLayout(other, "2.0", [baseLayer(), [{ path: "etc/second", data: "two\n" }]], {
    Cmd: ["true"],
  });
  const idx = JSON.parse(await readFile(join(other, "index.json"), "utf8"));
  const mdesc = idx.manifests[0];
  const m = JSON.parse(
    await readFile(join(other, "blobs/sha256", mdesc.digest.slice(7)), "utf8"),
  ) as ImageManifest;
  const top = m.layers[1];
  const zst = join(dir, "top.zst");
  await exec("sh", ["-c", `zstd -q -c ${join(other, "blobs/sha256", top.digest.slice(7))} > ${zst}`]);
  const zbytes = await readFile(zst);
  const zdig = `sha256:${createHash("sha256").update(zbytes).digest("hex")}`;
  await writeFile(join(other, "blobs/sha256", zdig.slice(7)), zbytes);
  m.layers[1] = {
    mediaType: "application/vnd.oci.image.layer.v1.tar+zstd",
    digest: zdig as `sha256:${string}`,
    size: zbytes.length,
  };
  const mbytes = Buffer.from(JSON.stringify(m));
  const mdig = `sha256:${createHash("sha256").update(mbytes).digest("hex")}`;
  await writeFile(join(other, "blobs/sha256", mdig.slice(7)), mbytes);
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: [
        {
          mediaType: MediaType.OciManifest,
          digest: `sha256:${"a".repeat(64)}`,
          size: 1,
          platform: { os: "linux", architecture: "arm64" },
        },
        {
          mediaType: MediaType.OciManifest,
          digest: mdig,
          size: mbytes.length,
          platform: { os: "linux", architecture: "amd64" },
        },
      ],
    }),
  );
  const idig = `sha256:${createHash("sha256").update(index).digest("hex")}`;
  await writeFile(join(other, "blobs/sha256", idig.slice(7)), index);
  await writeFile(
    join(other, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: MediaType.OciIndex,
          digest: idig,
          size: index.length,
          annotations: { "org.opencontainers.image.ref.name": "2.0" },
        },
      ],
    }),
  );
  const r = await convert(store, `oci:${other}:2.0`, { tag: "fixture/other:1" });
  assert.equal(r.source.digest, mdig, "the linux/amd64 entry of the index");
  assert.deepEqual(
    r.layers!.map((l) => l.cached),
    [true, false],
    "the base layer came from the cache",
  );
  const arm = convert(store, `oci:${other}:2.0`, {
    tag: "fixture/other:arm",
    platform: { os: "linux", architecture: "riscv64" },
  });
  await assert.rejects(
    arm,
    (e) => isOvmsError(e, "IMAGE_UNSUPPORTED") && /no manifest for linux\/riscv64/.test(e.message),
  );
});

test("images that cannot be converted are refused with IMAGE_UNSUPPORTED saying why, and name nothing", async (t) => {
  const store = await Store.open(join(dir, "bad"));
  t.after(() => rm(store.root, { recursive: true, force: true }));
  const arm = join(dir, "arm");
  await writeImageLayout(arm, "1", [baseLayer()], { Cmd: ["sh"] }, "arm64");
  await assert.rejects(
    convert(store, `oci:${arm}:1`, { tag: "x/arm:1" }),
    (e) =>
      isOvmsError(e, "IMAGE_UNSUPPORTED") &&
      /is for linux\/arm64, and OVMS v0.1 runs linux\/amd64 guests only/.test(e.message),
  );
  const empty = join(dir, "empty");
  await writeImageLayout(empty, "1", [], { Cmd: ["sh"] });
  await assert.rejects(
    convert(store, `oci:${empty}:1`, { tag: "x/empty:1" }),
    (e) => isOvmsError(e, "IMAGE_UNSUPPORTED") && /has no layers/.test(e.message),
  );
  await assert.rejects(
    convert(store, `oci:${layout}:1.0`, { tag: "x/big:1", maxSize: 64 << 20 }),
    (e) =>
      isOvmsError(e, "IMAGE_UNSUPPORTED") &&
      /would be \d+ MiB .* more than the limit of 64 MiB \(--max-size\)/.test(e.message),
  );
  const climb = join(dir, "climb");
  await writeImageLayout(climb, "1", [[{ path: "../../etc/evil", data: "x" }]], { Cmd: ["sh"] });
  await assert.rejects(
    convert(store, `oci:${climb}:1`, { tag: "x/climb:1" }),
    (e) => isOvmsError(e, "IMAGE_UNSUPPORTED") && /climbs out of the root/.test(e.message),
  );
  const baduser = join(dir, "baduser");
  await writeImageLayout(baduser, "1", [baseLayer()], { Cmd: ["sh"], User: "nobody-here" });
  await assert.rejects(
    convert(store, `oci:${baduser}:1`, { tag: "x/user:1" }),
    (e) => isOvmsError(e, "IMAGE_UNSUPPORTED") && /no user nobody-here in its \/etc\/passwd/.test(e.message),
  );
  // An OVMS artifact is not an image to convert (the converted one, copied out as a layout).
  await convert(store, `oci:${layout}:1.0`, { tag: "x/ok:1" });
  await exec("skopeo", [
    "copy",
    "-q",
    `oci:${store.root}:docker.io/x/ok:1`,
    `oci:${join(dir, "vmlayout")}:vm`,
  ]);
  await assert.rejects(
    convert(store, `oci:${join(dir, "vmlayout")}:vm`, { tag: "x/again:1" }),
    (e) => isOvmsError(e, "IMAGE_UNSUPPORTED") && /already an OVMS artifact/.test(e.message),
  );
  const names = (await store.entries()).map((e) => e.reference);
  assert.deepEqual(names, ["docker.io/x/ok:1"]);
  // A layer blob changed on disk fails its digest while it streams; nothing enters the cache.
  const broken = join(dir, "broken");
  await exec("cp", ["-r", layout, broken]);
  const idx = JSON.parse(await readFile(join(broken, "index.json"), "utf8"));
  const m = JSON.parse(
    await readFile(join(broken, "blobs/sha256", idx.manifests[0].digest.slice(7)), "utf8"),
  ) as ImageManifest;
  const blob = join(broken, "blobs/sha256", m.layers[1].digest.slice(7));
  const bytes = await readFile(blob);
  bytes[600] ^= 0xff;
  await writeFile(blob, bytes);
  const fresh = await Store.open(join(dir, "fresh"));
  await assert.rejects(convert(fresh, `oci:${broken}:1.0`, { tag: "x/broken:1" }), (e) =>
    isOvmsError(e, "DIGEST_MISMATCH"),
  );
  const cfg = JSON.parse(await readFile(join(broken, "blobs/sha256", m.config.digest.slice(7)), "utf8"));
  const cached = await readFile(
    join(fresh.workDir, "convert/layers/sha256", cfg.rootfs.diff_ids[1].slice(7), "entries.json"),
  ).catch(() => undefined);
  assert.equal(cached, undefined);
});

test("Ctrl-C stops ovm convert cleanly: exit 130, nothing named, no temp files left", async (t) => {
  const big = join(dir, "big");
  // Enough data that the conversion is still running when the signal comes.
  const files = Array.from({ length: 64 }, (_, i) => ({
    path: `data/f${i}`,
    data: createHash("sha512").update(String(i)).digest().toString("hex").repeat(8192),
  }));
  await writeImageLayout(big, "1", [baseLayer(), files], { Cmd: ["sh"] });
  const storeDir = join(dir, "interrupted");
  t.after(() => rm(storeDir, { recursive: true, force: true }));
  const child = spawn(process.execPath, [OVM, "convert", `oci:${big}:1`, "-t", "x/big:1"], {
    env: { ...process.env, OVM_STORE: storeDir },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let err = "";
  let sent = false;
  const code = await new Promise<number | null>((resolve) => {
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
      // Once: a second Ctrl-C means "exit now".
      if (!sent && /layer 2\/2 .*downloading and unpacking/.test(err)) {
        sent = true;
        child.kill("SIGINT");
      }
    });
    child.on("close", (c) => resolve(c));
  });
  assert.equal(code, 130, err);
  assert.match(err, /conversion of oci:.* interrupted \(SIGINT\); nothing half-written was kept/);
  const store = await Store.open(storeDir);
  assert.deepEqual(await store.entries(), []);
  const left = await exec("find", [join(storeDir, ".ovms"), "-name", "work-*", "-o", "-name", ".unpack-*"]);
  assert.equal(left.trim(), "");
});
