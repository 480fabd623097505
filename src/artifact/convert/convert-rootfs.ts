import { createReadStream } from "node:fs";
import { lstat, mkdir, mkdtemp, readdir, readlink, rm } from "node:fs/promises";
import { basename, join } from "node:path";
import type { BootstrapConfig } from "../../core/bootstrap.js";
import { sha256, type Digest } from "../../core/digest.js";
import { OvmsError } from "../../core/errors.js";
import type { OvmsManifest } from "../../core/manifest.generated.js";
import { MediaType } from "../../core/media-types.js";
import type { Descriptor } from "../../core/oci.js";
import type { Store } from "../../store/store.js";
import { assembleArtifact, type PartBlob } from "../assemble.js";
import { storeDiskLayer } from "../disk-layer.js";
import { run } from "../exec.js";
import { uuidOf } from "./convert-image.js";
import { buildExt4, type ContentFiles } from "./ext4.js";
import { CONTAINER_CMDLINE, guestAssets } from "./guest.js";
import { RootFs, type RootNode } from "./rootfs.js";

/** RootfsOptions shape the artifact made from a root filesystem directory. */
export interface RootfsOptions {
  /** name and version of the artifact; `reference` is what it is tagged with in the store. */
  name: string;
  version: string;
  reference: string;
  /** Free space beyond the content (default 256 MiB). */
  sizeBuffer?: number;
  memory?: number;
  cpus?: number;
  description?: string;
  progress?: (line: string) => void;
  signal?: AbortSignal;
}

/**
 * rootFsFromDir reads a directory tree (a container's rootfs as a snapshotter prepared it)
 * into a RootFs, with each path's real type, mode, owner and time from `lstat`; a regular
 * file's content is the file itself (two paths of one inode stay hard links). Sockets are
 * left out: they are made by a running program, never shipped. Symlinks are never followed.
 */
export async function rootFsFromDir(dir: string): Promise<{ root: RootFs; files: ContentFiles }> {
  const layer = sha256(`ovms-rootfs-dir:${dir}`) as Digest;
  const paths: string[] = [];
  const inodes = new Map<string, number>();
  const root = new RootFs(0);
  const top = await lstat(dir).catch(() => undefined);
  if (!top?.isDirectory())
    throw new OvmsError("FILE_NOT_FOUND", `${dir}: the root filesystem is not a directory`);
  root.nodes.set("", {
    type: "dir",
    mode: top.mode & 0o7777,
    uid: top.uid,
    gid: top.gid,
    mtime: sec(top.mtimeMs),
  });
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(join(dir, rel))).sort();
    for (const name of names) {
      const p = rel ? `${rel}/${name}` : name;
      const abs = join(dir, p);
      const st = await lstat(abs);
      const meta = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: sec(st.mtimeMs) };
      let node: RootNode;
      if (st.isDirectory()) node = { type: "dir", ...meta };
      else if (st.isSymbolicLink()) node = { type: "symlink", ...meta, target: await readlink(abs) };
      else if (st.isFile()) {
        const key = `${st.dev}:${st.ino}`;
        let n = inodes.get(key);
        if (n === undefined) {
          n = paths.push(abs) - 1;
          inodes.set(key, n);
        }
        node = { type: "file", ...meta, size: st.size, content: { layer, n } };
      } else if (st.isCharacterDevice() || st.isBlockDevice()) {
        const rdev = st.rdev;
        node = {
          type: st.isCharacterDevice() ? "char" : "block",
          ...meta,
          major: ((rdev >> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff),
          minor: (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
        };
      } else if (st.isFIFO()) node = { type: "fifo", ...meta };
      else continue;
      root.nodes.set(p, node);
      if (node.type === "dir") await walk(p);
    }
  };
  await walk("");
  return { root, files: { contentPath: (_l, n) => paths[n] } };
}

/**
 * convertRootfs makes a containerMode artifact in `store` from a root filesystem directory and
 * the bootstrap config of its program (what `ovm convert` makes from an image, for a tree that
 * is already unpacked: a containerd bundle's rootfs). The directory is only read.
 */
export async function convertRootfs(
  store: Store,
  dir: string,
  bootstrap: BootstrapConfig,
  opts: RootfsOptions,
): Promise<{ descriptor: Descriptor; manifest: OvmsManifest; diskBytes: number }> {
  const say = opts.progress ?? (() => {});
  const guest = await guestAssets();
  const { root, files } = await rootFsFromDir(dir);
  await mkdir(join(store.workDir, "convert"), { recursive: true });
  const work = await mkdtemp(join(store.workDir, "convert", "rootfs-"));
  try {
    const raw = join(work, "rootfs.raw");
    const time = Number(process.env.SOURCE_DATE_EPOCH) || 0;
    const disk = await buildExt4(root, files, work, raw, {
      sizeBuffer: opts.sizeBuffer ?? 256 << 20,
      maxSize: 64 * 2 ** 30,
      time,
      uuid: uuidOf(dir),
      progress: say,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    const qcow2 = join(work, "rootfs.qcow2");
    await run("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, qcow2], {
      timeoutMs: 30 * 60_000,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    await rm(raw, { force: true });
    const { blob: diskBlob, layer } = await storeDiskLayer(store, qcow2, "qcow2", work);
    const kernel = await store.ingest(createReadStream(guest.kernel));
    const initrd = await store.ingest(createReadStream(guest.initrd));
    const boot = await store.putBlob(Buffer.from(JSON.stringify(bootstrap, null, 2) + "\n"));
    const blobs = new Map<string, PartBlob>([
      ["kernel", { size: kernel.size, title: basename(guest.kernel) }],
      ["initrd", { size: initrd.size, title: "ovms-init.img" }],
      ["diskLayers[0]", { size: diskBlob.size, title: "rootfs.qcow2" }],
      ["bootstrap", { size: boot.size, title: "bootstrap.json" }],
    ]);
    const manifest: OvmsManifest = {
      schemaVersion: 1,
      mediaType: MediaType.OvmsManifest,
      name: opts.name,
      version: opts.version,
      kernel: { ref: kernel.digest, size: kernel.size, args: CONTAINER_CMDLINE },
      initrd: { ref: initrd.digest, size: initrd.size },
      diskLayers: [layer],
      bootstrap: { ref: boot.digest, size: boot.size },
      resources: { memory: opts.memory ?? 256 << 20, vcpus: opts.cpus ?? 1 },
      metadata: {
        created: new Date(time * 1000).toISOString().replace(/\.\d{3}Z$/, "Z"),
        description: opts.description ?? `root filesystem ${dir}`,
        platform: { arch: "x86_64", uefi: false },
      },
      containerMode: true,
    };
    const { descriptor } = await assembleArtifact(store, manifest, {
      what: `the root filesystem ${dir}`,
      blob: (part) => blobs.get(part.path)!,
    });
    await store.tag(descriptor, opts.reference);
    return { descriptor, manifest, diskBytes: disk.sizeBytes };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function sec(ms: number): number {
  return Math.floor(ms / 1000);
}
