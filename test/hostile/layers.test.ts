import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, readdir, writeFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { isOvmsError } from "../../src/core/errors.js";
import type { Digest } from "../../src/core/digest.js";
import { Store } from "../../src/store/store.js";
import { assembleArtifact } from "../../src/artifact/assemble.js";
import { loadArtifactByDescriptor } from "../../src/artifact/artifact.js";
import { packDiskLayer } from "../../src/artifact/disk-layer.js";
import { layersDir, prepareArtifact } from "../../src/artifact/prepare.js";
import { tempDir } from "../helpers.js";

// Hostile disk layers through the real preparation path (store → verified stream → tar
// extraction → qcow2 header check → qemu-img): every one is refused before QEMU or qemu-img
// opens anything it names, and nothing is written outside the store's own folders.

/** ustar builds one tar header block (POSIX ustar), checksum included. */
function ustar(name: string, type: string, size: number, linkname = ""): Buffer {
  const b = Buffer.alloc(512);
  b.write(name, 0, 100);
  b.write("0000644\0", 100);
  b.write("0000000\0", 108);
  b.write("0000000\0", 116);
  b.write(size.toString(8).padStart(11, "0") + "\0", 124);
  b.write("00000000000\0", 136);
  b.fill(" ", 148, 156);
  b.write(type, 156);
  b.write(linkname, 157, 100);
  b.write("ustar\0", 257);
  b.write("00", 263);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  return b;
}

/** tarOf concatenates entries (header, body padded to 512) and the end-of-archive blocks. */
function tarOf(
  entries: { name: string; type?: string; data?: Buffer; link?: string; size?: number }[],
): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = e.data ?? Buffer.alloc(0);
    parts.push(ustar(e.name, e.type ?? "0", e.size ?? data.length, e.link));
    parts.push(data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** artifactWith stores an artifact whose disk chain is `layers` (tar blobs) and returns it loaded. */
async function artifactWith(store: Store, layers: { tar: Buffer; size: number }[]) {
  const kernel = await store.putBlob("not really a kernel");
  const refs: { digest: Digest; size: number; file: number }[] = [];
  for (const l of layers) refs.push({ ...(await store.ingest(Readable.from([l.tar]))), file: l.size });
  const manifest = {
    schemaVersion: 1,
    mediaType: "application/vnd.ovms.manifest.v1+json",
    name: "hostile/vm",
    version: "1",
    kernel: { ref: kernel.digest },
    diskLayers: refs.map((r, i) => ({
      ref: r.digest,
      format: "qcow2",
      size: r.file,
      ...(i > 0 ? { parent: refs[i - 1].digest } : {}),
    })),
  };
  const sizes = new Map<string, number>([
    [kernel.digest, kernel.size],
    ...refs.map((r) => [r.digest, layers[refs.indexOf(r)].tar.length] as [string, number]),
  ]);
  const { descriptor } = await assembleArtifact(store, manifest, {
    what: "hostile",
    blob: (p) => ({ size: sizes.get(p.ref)!, title: p.path }),
  });
  return loadArtifactByDescriptor(store, descriptor, "hostile/vm:1");
}

/** tree lists every path under `dir`. */
async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    out.push(p);
    if (e.isDirectory()) out.push(...(await tree(p)));
  }
  return out;
}

test("layer tars with ../, absolute paths, symlinks and hard links out, device nodes, a second file, a folder, an oversize header: refused, nothing written", async (t) => {
  const dir = await tempDir(t);
  const qcow = join(dir, "ok.qcow2");
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", qcow, "1M"]);
  const { readFile } = await import("node:fs/promises");
  const disk = await readFile(qcow);
  const outside = join(dir, "outside");
  await mkdir(outside);
  const cases: [string, Buffer][] = [
    [
      "../ in a name",
      tarOf([
        { name: "../../../../../../outside/evil", data: Buffer.from("x") },
        { name: "disk.qcow2", data: disk },
      ]),
    ],
    [
      "an absolute path",
      tarOf([
        { name: join(outside, "abs-evil"), data: Buffer.from("x") },
        { name: "disk.qcow2", data: disk },
      ]),
    ],
    ["a symlink named disk.qcow2", tarOf([{ name: "disk.qcow2", type: "2", link: "/etc/passwd" }])],
    ["a hard link named disk.qcow2", tarOf([{ name: "disk.qcow2", type: "1", link: "/etc/passwd" }])],
    [
      "a symlink out, then a file through it",
      tarOf([
        { name: "sub", type: "2", link: outside },
        { name: "sub/evil", data: Buffer.from("x") },
        { name: "disk.qcow2", data: disk },
      ]),
    ],
    ["a character device", tarOf([{ name: "disk.qcow2", type: "3" }])],
    ["a fifo", tarOf([{ name: "disk.qcow2", type: "6" }])],
    [
      "a second file",
      tarOf([
        { name: "disk.qcow2", data: disk },
        { name: "extra", data: Buffer.from("x") },
      ]),
    ],
    [
      "a folder",
      tarOf([
        { name: "d/", type: "5" },
        { name: "disk.qcow2", data: disk },
      ]),
    ],
    [
      "an oversize header (1 GiB announced, 512 bytes there)",
      tarOf([{ name: "disk.qcow2", size: 1 << 30, data: disk.subarray(0, 512) }]).subarray(0, 1024),
    ],
    ["the wrong file name", tarOf([{ name: "disk.raw", data: disk }])],
  ];
  for (const [what, tarball] of cases) {
    const store = await Store.open(join(dir, "store"));
    const a = await artifactWith(store, [{ tar: tarball, size: disk.length }]);
    await assert.rejects(prepareArtifact(store, a), (e) => {
      assert.ok(isOvmsError(e, "ARTIFACT_INVALID", "DISK_INVALID"), `${what}: ${String(e)}`);
      assert.ok(e.message.length > 20, what);
      return true;
    });
    assert.deepEqual(await readdir(outside), [], `${what}: nothing written outside`);
    const layers = await readdir(layersDir(store)).catch(() => []);
    assert.deepEqual(
      layers.filter((l) => !l.startsWith(".")),
      [],
      `${what}: no unpacked layer kept`,
    );
    assert.deepEqual(layers, [], `${what}: no temp folder left`);
    for (const p of await tree(dir)) assert.ok(!/evil$/.test(p), `${what}: ${p} was written`);
  }
  assert.ok((await stat("/etc/passwd")).isFile());
});

test("qcow2 layers that name another file: a base with a backing file, a diff backed by a host path, an external data file, a raw file labelled qcow2 — refused before qemu-img opens them", async (t) => {
  const dir = await tempDir(t);
  const scratch = join(dir, "scratch");
  await mkdir(scratch);
  const img = async (name: string, args: string[]) => {
    const p = join(dir, name);
    execFileSync("qemu-img", ["create", "-q", ...args, p, "1M"]);
    return p;
  };
  const layer = async (path: string) => {
    const { stream, cleanup } = await packDiskLayer(path, "qcow2", scratch);
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    await cleanup();
    return { tar: Buffer.concat(chunks), size: (await stat(path)).size };
  };
  const secret = join(dir, "host-secret");
  await writeFile(secret, "the host's secret");
  const goodBase = await layer(await img("base.qcow2", ["-f", "qcow2"]));
  const cases: [string, { tar: Buffer; size: number }[], RegExp][] = [
    [
      "base with a backing file",
      [await layer(await img("b1.qcow2", ["-u", "-f", "qcow2", "-F", "raw", "-b", secret]))],
      /base layer has a backing file/,
    ],
    [
      "diff backed by a host path",
      [goodBase, await layer(await img("d1.qcow2", ["-u", "-f", "qcow2", "-F", "raw", "-b", secret]))],
      /backing file is ".*host-secret", want the parent digest/,
    ],
    [
      "external data file",
      [await layer(await img("x1.qcow2", ["-f", "qcow2", "-o", `data_file=${join(dir, "data.raw")}`]))],
      /external data file ".*data\.raw"/,
    ],
    ["raw bytes labelled qcow2", [await layer(await img("r1.raw", ["-f", "raw"]))], /not a qcow2 image/],
  ];
  for (const [what, layers, why] of cases) {
    const store = await Store.open(join(dir, `store-${what.replace(/\W+/g, "-")}`));
    const a = await artifactWith(store, layers);
    await assert.rejects(prepareArtifact(store, a), (e) => {
      assert.ok(isOvmsError(e, "DISK_INVALID"), `${what}: ${String(e)}`);
      assert.match(e.message, why, what);
      return true;
    });
  }
});
