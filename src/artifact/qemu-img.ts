import { run } from "./exec.js";

/** ImageInfo is the part of `qemu-img info --output=json` OVMS uses. */
export interface ImageInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFilename?: string;
  backingFormat?: string;
}

/** imageInfo reads a disk image's format, sizes and backing file with `qemu-img info`. */
export async function imageInfo(path: string): Promise<ImageInfo> {
  // -U: read even if a running QEMU holds the image's lock (inspecting never writes).
  const out = JSON.parse(await run("qemu-img", ["info", "-U", "--output=json", path])) as Record<
    string,
    unknown
  >;
  const info: ImageInfo = {
    format: String(out.format),
    virtualSize: Number(out["virtual-size"]),
    actualSize: Number(out["actual-size"] ?? 0),
  };
  if (typeof out["backing-filename"] === "string") info.backingFilename = out["backing-filename"];
  if (typeof out["backing-filename-format"] === "string") info.backingFormat = out["backing-filename-format"];
  return info;
}

/**
 * rebaseUnsafe rewrites only the backing-file name recorded in a qcow2 header (`rebase -u`):
 * no data moves. Used to record a parent by digest at build time and to point it at the local
 * copy of that parent at unpack time.
 */
export async function rebaseUnsafe(path: string, backing: string, backingFormat: string): Promise<void> {
  await run("qemu-img", ["rebase", "-u", "-f", "qcow2", "-F", backingFormat, "-b", backing, path]);
}

/** createOverlay creates a qcow2 whose backing file is `backing` (absolute path). */
export async function createOverlay(path: string, backing: string, backingFormat: string): Promise<void> {
  await run("qemu-img", ["create", "-q", "-f", "qcow2", "-F", backingFormat, "-b", backing, path]);
}
