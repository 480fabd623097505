import { open } from "node:fs/promises";
import { OvmsError } from "../core/errors.js";

/**
 * The few fields of a qcow2 header that decide which other files QEMU would open for it:
 * the backing file name and the external data file
 * (https://gitlab.com/qemu-project/qemu/-/blob/v7.2.0/docs/interop/qcow2.txt). Read from the
 * bytes, before any tool (qemu-img, QEMU) opens the image, so a hostile layer cannot make the
 * host open a file of its choosing (rfc §4.2, §8.4).
 */

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
/** Incompatible feature bit 2: the image's data lives in an external data file. */
const EXTERNAL_DATA_BIT = 1n << 2n;
/** Header extension "external data file name". */
const EXT_DATA_FILE = 0x44415441;
/** QEMU's own limit on a backing file name. */
const MAX_BACKING_NAME = 1023;
/** How much of the image is read: header and extensions live in the first cluster (at most 2 MiB). */
const HEADER_WINDOW = 2 << 20;

/** Qcow2Header is what qcow2 says about the files it depends on. */
export interface Qcow2Header {
  version: number;
  /** backingFile is the backing file name, when there is one. */
  backingFile?: string;
  /** dataFile is the external data file name, when the image uses one (or "(unnamed)"). */
  dataFile?: string;
}

function bad(what: string, why: string): OvmsError {
  return new OvmsError("DISK_INVALID", `${what}: ${why}`);
}

/** parseQcow2Header reads the backing and data-file facts of a qcow2 header, or refuses bytes that are not one. */
export function parseQcow2Header(buf: Buffer, what: string): Qcow2Header {
  if (buf.length < 72 || buf.readUInt32BE(0) !== QCOW2_MAGIC)
    throw bad(what, "is not a qcow2 image (no QFI magic)");
  const version = buf.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw bad(what, `qcow2 version ${version} (want 2 or 3)`);
  const out: Qcow2Header = { version };
  const backingOffset = buf.readBigUInt64BE(8);
  const backingSize = buf.readUInt32BE(16);
  if (backingOffset !== 0n && backingSize > 0) {
    if (backingSize > MAX_BACKING_NAME) throw bad(what, `backing file name of ${backingSize} bytes`);
    const end = backingOffset + BigInt(backingSize);
    if (end > BigInt(buf.length)) throw bad(what, "backing file name lies outside the image's header");
    out.backingFile = buf.toString("utf8", Number(backingOffset), Number(end));
  }
  if (version === 3) {
    if (buf.length < 104) throw bad(what, "truncated qcow2 v3 header");
    const incompatible = buf.readBigUInt64BE(72);
    const headerLength = buf.readUInt32BE(100);
    if (headerLength < 104 || headerLength > buf.length) throw bad(what, `header length ${headerLength}`);
    if (incompatible & EXTERNAL_DATA_BIT) out.dataFile = "(unnamed)";
    // Header extensions: type, length, data padded to 8 bytes, until type 0.
    let at = headerLength;
    for (let n = 0; at + 8 <= buf.length && n < 1024; n++) {
      const type = buf.readUInt32BE(at);
      const len = buf.readUInt32BE(at + 4);
      if (type === 0) break;
      if (at + 8 + len > buf.length) throw bad(what, "a header extension runs past the header");
      if (type === EXT_DATA_FILE) out.dataFile = buf.toString("utf8", at + 8, at + 8 + len) || "(unnamed)";
      at += 8 + Math.ceil(len / 8) * 8;
    }
  }
  return out;
}

/**
 * checkDiskImage refuses a disk layer's image that would make QEMU open anything but the
 * expected parent: a qcow2 base with a backing file, a diff whose backing file is not exactly
 * its parent's digest, any external data file, or a file that is not qcow2 at all when the
 * layer says qcow2. A raw image is opened as raw (format given explicitly), whatever its bytes.
 */
export async function checkDiskImage(
  path: string,
  format: "qcow2" | "raw",
  parent: string | undefined,
  what: string,
): Promise<void> {
  if (format === "raw") return;
  const fh = await open(path, "r");
  let buf: Buffer;
  try {
    const b = Buffer.alloc(HEADER_WINDOW);
    const { bytesRead } = await fh.read(b, 0, b.length, 0);
    buf = b.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
  const h = parseQcow2Header(buf, what);
  if (h.dataFile !== undefined)
    throw bad(what, `uses an external data file "${h.dataFile}" (not allowed, rfc §4.2)`);
  if (parent === undefined && h.backingFile !== undefined)
    throw bad(what, `the base layer has a backing file "${h.backingFile}" (a base has none, rfc §4.2)`);
  if (parent !== undefined && h.backingFile !== parent)
    throw bad(what, `its backing file is "${h.backingFile ?? "nothing"}", want the parent digest ${parent}`);
}
