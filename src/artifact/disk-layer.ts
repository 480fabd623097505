import { mkdtemp, rm, copyFile, link, realpath, stat, constants } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import * as tar from "tar";
import type { Digest } from "../core/digest.js";
import { OvmsError } from "../core/errors.js";
import type { DiskLayer } from "../core/manifest.generated.js";
import type { Store } from "../store/store.js";
import { imageInfo, rebaseUnsafe } from "./qemu-img.js";

/** diskFileName is the one file a disk layer's tar holds. */
export function diskFileName(format: "qcow2" | "raw"): string {
  return `disk.${format}`;
}

/**
 * packDiskLayer returns a stream of a tar holding `file` as `disk.<format>`. The tar is
 * reproducible (fixed mtime, no owner names, no pax times) so the same disk always gives the
 * same layer digest, which is what lets two versions of an artifact share their base layer.
 * `scratch` is a folder on the same filesystem as `file` where a hard link (or copy) is made.
 */
export async function packDiskLayer(
  file: string,
  format: "qcow2" | "raw",
  scratch: string,
): Promise<{ stream: Readable; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(scratch, "pack-"));
  const name = diskFileName(format);
  // link(2) does not follow a symlink: without realpath a disk given as a link would be packed
  // as the link itself, a layer no runtime can use.
  const real = await realpath(file);
  try {
    await link(real, join(dir, name));
  } catch {
    await copyFile(real, join(dir, name), constants.COPYFILE_FICLONE);
  }
  const stream = tar.c({ cwd: dir, portable: true, mtime: new Date(0), noPax: true, gzip: false }, [name]);
  return {
    stream: Readable.from(stream as unknown as AsyncIterable<Buffer>),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** StoredDiskLayer is a disk image written to the store as a layer: its blob and its manifest entry. */
export interface StoredDiskLayer {
  blob: { digest: Digest; size: number };
  layer: DiskLayer;
}

/**
 * storeDiskLayer writes a disk image to the store as a disk layer (rfc §4.2) and returns the
 * blob and the `diskLayers` entry. A diff (`parent` given) is first copied and its backing
 * file renamed to the parent's digest, so the layer never records a host path and the file
 * it came from (a user's disk, an instance's overlay) is left as it was. `scratch` is a folder
 * on the store's filesystem.
 */
export async function storeDiskLayer(
  store: Store,
  file: string,
  format: "qcow2" | "raw",
  scratch: string,
  parent?: Pick<DiskLayer, "ref" | "format">,
): Promise<StoredDiskLayer> {
  const dir = parent ? await mkdtemp(join(scratch, "diff-")) : undefined;
  try {
    let disk = file;
    if (parent && dir) {
      disk = join(dir, diskFileName("qcow2"));
      await copyFile(file, disk, constants.COPYFILE_FICLONE);
      await rebaseUnsafe(disk, parent.ref, parent.format);
    }
    const packed = await packDiskLayer(disk, format, scratch);
    let blob: { digest: Digest; size: number };
    try {
      blob = await store.ingest(packed.stream);
    } finally {
      await packed.cleanup();
    }
    const layer: DiskLayer = {
      ref: blob.digest,
      format,
      size: (await stat(disk)).size,
      virtualSize: (await imageInfo(disk)).virtualSize,
    };
    if (parent) layer.parent = parent.ref;
    return { blob, layer };
  } finally {
    if (dir) await rm(dir, { recursive: true, force: true });
  }
}

/**
 * unpackDiskLayer extracts the disk file of a layer tar stream into `dir` and returns its
 * path. Only the one expected regular file is written: anything else in the tar (links,
 * devices, paths with `..`) is refused, since layers come from registries.
 */
export async function unpackDiskLayer(
  stream: Readable,
  format: "qcow2" | "raw",
  dir: string,
): Promise<string> {
  const name = diskFileName(format);
  let seen = 0;
  let refused: string | undefined;
  await new Promise<void>((resolve, reject) => {
    const x = tar.x({
      cwd: dir,
      strict: true,
      filter: (path, entry) => {
        const ok = path === name && (entry as tar.ReadEntry).type === "File";
        if (ok) seen++;
        else refused ??= path;
        return ok;
      },
    });
    // A tar the parser cannot read is the layer's fault: ARTIFACT_INVALID, saying what broke.
    const fail = (e: unknown) =>
      reject(
        e instanceof OvmsError
          ? e
          : new OvmsError("ARTIFACT_INVALID", `disk layer tar is not a valid tar: ${(e as Error).message}`, {
              cause: e,
            }),
      );
    stream.on("error", fail);
    x.on("error", fail);
    x.on("close", () => resolve());
    stream.pipe(x);
  });
  if (seen !== 1 || refused !== undefined) {
    throw new OvmsError(
      "ARTIFACT_INVALID",
      `disk layer tar must hold exactly one regular file ${name}${refused ? ` (found ${refused})` : ""}`,
    );
  }
  return join(dir, name);
}
