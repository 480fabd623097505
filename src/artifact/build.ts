import { createReadStream } from "node:fs";
import { mkdtemp, realpath, rm, stat } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { OvmsError } from "../core/errors.js";
import { MediaType } from "../core/media-types.js";
import type { Descriptor } from "../core/oci.js";
import type {
  Device,
  DiskLayer,
  Metadata,
  Network,
  OvmsManifest,
  Resources,
  RuntimeHints,
} from "../core/manifest.generated.js";
import { formatReference, parseReference } from "../core/reference.js";
import type { Digest } from "../core/digest.js";
import type { Store } from "../store/store.js";
import { assembleArtifact, type PartBlob } from "./assemble.js";
import { storeDiskLayer } from "./disk-layer.js";
import { imageInfo } from "./qemu-img.js";

/** DiskFormat is a disk image format OVMS carries. */
export type DiskFormat = "qcow2" | "raw";

/** BuildSpec is everything `ovm build` needs, with host paths for the parts. */
export interface BuildSpec {
  name: string;
  version: string;
  kernel: { path: string; args?: string };
  initrd?: { path: string };
  /** Disk images, base first; each later one must be a qcow2 backed by the one before. */
  disks?: { path: string; format?: DiskFormat }[];
  devices?: Device[];
  /** What the guest expects of the network (rfc §2.2): a NIC it needs, ports it serves. */
  network?: Network;
  resources?: Resources;
  runtimeHints?: RuntimeHints;
  metadata?: Omit<Metadata, "platform">;
  extensions?: Record<string, unknown>;
}

/** BuildResult is what `build` made and named. */
export interface BuildResult {
  reference: string;
  descriptor: Descriptor;
  manifest: OvmsManifest;
}

/** BuildProgress receives one line per step of a build. */
export type BuildProgress = (step: string) => void;

/**
 * build packs the parts of a VM into an OVMS artifact in the store and tags it `tag`.
 * Nothing is named until every blob is written and the manifest validates, so a failed
 * build leaves at most unreferenced blobs (removed by `gc`), never a half artifact.
 */
export async function build(
  store: Store,
  spec: BuildSpec,
  tag: string,
  progress: BuildProgress = () => {},
): Promise<BuildResult> {
  const ref = parseReference(tag);
  if (!ref.tag || ref.digest)
    throw new OvmsError("INVALID_REFERENCE", `${tag}: build needs a tag reference, not a digest`);
  // What each part of the manifest was stored as, by its place in the manifest.
  const blobs = new Map<string, PartBlob>();

  const kernel = await ingestFile(store, spec.kernel.path, "kernel");
  blobs.set("kernel", { size: kernel.size, title: basename(spec.kernel.path) });
  progress(`kernel ${basename(spec.kernel.path)} ${kernel.digest} (${kernel.size} bytes)`);

  let initrd: { digest: Digest; size: number } | undefined;
  if (spec.initrd) {
    initrd = await ingestFile(store, spec.initrd.path, "initrd");
    blobs.set("initrd", { size: initrd.size, title: basename(spec.initrd.path) });
    progress(`initrd ${basename(spec.initrd.path)} ${initrd.digest} (${initrd.size} bytes)`);
  }

  const diskLayers: DiskLayer[] = [];
  const disks = spec.disks ?? [];
  const scratch = await mkdtemp(join(store.workDir, "ingest", "build-"));
  try {
    for (let i = 0; i < disks.length; i++) {
      const format = await checkDisk(disks, i);
      const { blob, layer } = await storeDiskLayer(store, disks[i].path, format, scratch, diskLayers[i - 1]);
      diskLayers.push(layer);
      blobs.set(`diskLayers[${i}]`, { size: blob.size, title: basename(disks[i].path) });
      progress(`disk ${i} ${basename(disks[i].path)} (${format}) ${blob.digest} (${blob.size} bytes)`);
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }

  const created = spec.metadata?.created ?? createdTime();
  const manifest: OvmsManifest = {
    schemaVersion: 1,
    mediaType: MediaType.OvmsManifest,
    name: spec.name,
    version: spec.version,
    kernel: {
      ref: kernel.digest,
      size: kernel.size,
      ...(spec.kernel.args !== undefined ? { args: spec.kernel.args } : {}),
    },
  };
  if (initrd) manifest.initrd = { ref: initrd.digest, size: initrd.size };
  if (diskLayers.length) manifest.diskLayers = diskLayers;
  if (spec.devices?.length) manifest.devices = spec.devices;
  if (spec.network) manifest.network = spec.network;
  if (spec.resources) manifest.resources = spec.resources;
  manifest.metadata = { ...(spec.metadata ?? {}), created, platform: { arch: "x86_64", uefi: false } };
  if (spec.runtimeHints) manifest.runtimeHints = spec.runtimeHints;
  if (spec.extensions) manifest.extensions = spec.extensions;

  const { descriptor } = await assembleArtifact(store, manifest, {
    what: `build of ${tag}`,
    blob: (part) => blobs.get(part.path)!,
  });
  const reference = formatReference({ ...ref, digest: undefined });
  await store.tag(descriptor, reference);
  progress(`tagged ${reference} ${descriptor.digest}`);
  return { reference, descriptor, manifest };
}

/** SOURCE_DATE_EPOCH (reproducible-builds.org) fixes the created time when set. */
function createdTime(): string {
  const epoch = process.env.SOURCE_DATE_EPOCH;
  const d = epoch && /^\d+$/.test(epoch) ? new Date(Number(epoch) * 1000) : new Date();
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

async function ingestFile(
  store: Store,
  path: string,
  what: string,
): Promise<{ digest: Digest; size: number }> {
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile()) throw new OvmsError("FILE_NOT_FOUND", `${what}: ${path} is not a readable file`);
  return store.ingest(createReadStream(path));
}

/**
 * checkDisk checks one disk image of a build and returns its format: the base has no backing
 * file, and each diff is a qcow2 backed by the disk before it (storeDiskLayer then records
 * that parent by digest).
 */
async function checkDisk(disks: { path: string; format?: DiskFormat }[], i: number): Promise<DiskFormat> {
  const { path, format: declared } = disks[i];
  const where = `disk ${i} (${path})`;
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile()) throw new OvmsError("FILE_NOT_FOUND", `${where}: not a readable file`);
  const info = await imageInfo(path);
  if (info.format !== "qcow2" && info.format !== "raw") {
    throw new OvmsError("DISK_INVALID", `${where}: format ${info.format} is not supported (qcow2 or raw)`);
  }
  if (declared && declared !== info.format) {
    throw new OvmsError("DISK_INVALID", `${where}: declared ${declared} but the file is ${info.format}`);
  }
  const format = info.format as DiskFormat;
  if (i === 0) {
    if (info.backingFilename) {
      throw new OvmsError(
        "DISK_INVALID",
        `${where}: the base layer has a backing file (${info.backingFilename}); list that file first, or flatten with qemu-img convert`,
      );
    }
    return format;
  }
  if (format !== "qcow2") throw new OvmsError("DISK_INVALID", `${where}: a diff layer must be qcow2`);
  if (!info.backingFilename)
    throw new OvmsError("DISK_INVALID", `${where}: a diff layer needs a backing file (the previous --disk)`);
  const backing = isAbsolute(info.backingFilename)
    ? info.backingFilename
    : resolve(dirname(path), info.backingFilename);
  const want = await realpath(disks[i - 1].path);
  const got = await realpath(backing).catch(() => backing);
  if (got !== want) {
    throw new OvmsError(
      "DISK_INVALID",
      `${where}: is backed by ${info.backingFilename}, not by the previous disk ${disks[i - 1].path}`,
    );
  }
  return format;
}
