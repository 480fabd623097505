import { createReadStream } from "node:fs";
import { copyFile, mkdtemp, realpath, rm, stat, constants } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { OvmsError } from "../core/errors.js";
import { Annotation, MediaType } from "../core/media-types.js";
import type { Descriptor } from "../core/oci.js";
import type {
  Device,
  DiskLayer,
  Metadata,
  OvmsManifest,
  Resources,
  RuntimeHints,
} from "../core/manifest.generated.js";
import { validateManifest } from "../core/validate.js";
import { formatReference, parseReference } from "../core/reference.js";
import type { Digest } from "../core/digest.js";
import type { Store } from "../store/store.js";
import { layerDescriptor, ociManifestFor } from "./artifact.js";
import { packDiskLayer } from "./disk-layer.js";
import { imageInfo, rebaseUnsafe } from "./qemu-img.js";

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
  const layers: Descriptor[] = [];

  const kernel = await ingestFile(store, spec.kernel.path, "kernel");
  layers.push(layerDescriptor("kernel", kernel, basename(spec.kernel.path)));
  progress(`kernel ${basename(spec.kernel.path)} ${kernel.digest} (${kernel.size} bytes)`);

  let initrd: { digest: Digest; size: number } | undefined;
  if (spec.initrd) {
    initrd = await ingestFile(store, spec.initrd.path, "initrd");
    layers.push(layerDescriptor("initrd", initrd, basename(spec.initrd.path)));
    progress(`initrd ${basename(spec.initrd.path)} ${initrd.digest} (${initrd.size} bytes)`);
  }

  const diskLayers: DiskLayer[] = [];
  const disks = spec.disks ?? [];
  const scratch = await mkdtemp(join(store.workDir, "ingest", "build-"));
  try {
    for (let i = 0; i < disks.length; i++) {
      const layer = await packDisk(store, disks, i, diskLayers[i - 1], scratch);
      diskLayers.push(layer.manifestEntry);
      layers.push(layer.descriptor);
      progress(
        `disk ${i} ${basename(disks[i].path)} (${layer.manifestEntry.format}) ${layer.descriptor.digest} (${layer.descriptor.size} bytes)`,
      );
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
  if (spec.resources) manifest.resources = spec.resources;
  manifest.metadata = { ...(spec.metadata ?? {}), created, platform: { arch: "x86_64", uefi: false } };
  if (spec.runtimeHints) manifest.runtimeHints = spec.runtimeHints;
  if (spec.extensions) manifest.extensions = spec.extensions;
  validateManifest(manifest, `build of ${tag}`);

  const config = await store.putBlob(JSON.stringify(manifest, null, 2));
  const oci = ociManifestFor(config, layers, manifest);
  const descriptor = await store.putManifest(oci);
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
 * packDisk checks one disk image and stores it as a layer. A diff must be a qcow2 backed by
 * the disk before it; its backing name is rewritten (in a copy) to the parent layer's digest,
 * so the artifact never records a host path.
 */
async function packDisk(
  store: Store,
  disks: { path: string; format?: DiskFormat }[],
  i: number,
  parent: DiskLayer | undefined,
  scratch: string,
): Promise<{ descriptor: Descriptor; manifestEntry: DiskLayer }> {
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
  let file = path;
  if (i === 0) {
    if (info.backingFilename) {
      throw new OvmsError(
        "DISK_INVALID",
        `${where}: the base layer has a backing file (${info.backingFilename}); list that file first, or flatten with qemu-img convert`,
      );
    }
  } else {
    if (format !== "qcow2") throw new OvmsError("DISK_INVALID", `${where}: a diff layer must be qcow2`);
    if (!info.backingFilename)
      throw new OvmsError(
        "DISK_INVALID",
        `${where}: a diff layer needs a backing file (the previous --disk)`,
      );
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
    // Record the parent by digest in a private copy; the user's file is left as it was.
    file = join(scratch, `diff-${i}.qcow2`);
    await copyFile(path, file, constants.COPYFILE_FICLONE);
    await rebaseUnsafe(file, parent!.ref, parent!.format);
  }
  const fileSize = (await stat(file)).size;
  const packed = await packDiskLayer(file, format, scratch);
  let blob: { digest: Digest; size: number };
  try {
    blob = await store.ingest(packed.stream);
  } finally {
    await packed.cleanup();
  }
  const descriptor = layerDescriptor("disk", blob, basename(path), { [Annotation.Format]: format });
  const manifestEntry: DiskLayer = {
    ref: blob.digest,
    format,
    size: fileSize,
    virtualSize: info.virtualSize,
  };
  if (parent) manifestEntry.parent = parent.ref;
  return { descriptor, manifestEntry };
}
