/**
 * A writer of the cpio "newc" format (the one the Linux kernel unpacks as an initramfs), just
 * enough to append a few files to an initrd: the kernel unpacks concatenated archives, each
 * starting on a 4-byte boundary, compressed or not.
 * https://docs.kernel.org/driver-api/early-userspace/buffer-format.html
 */

/** NewcEntry is one file or folder of an archive; folders have no data. */
export interface NewcEntry {
  /** Path inside the archive, without a leading `/` (`ovms/launch`). */
  path: string;
  /** The full mode: type bits and permissions (0o100644 a file, 0o040755 a folder). */
  mode: number;
  data?: Buffer;
  /** Seconds since the epoch (default 0, for reproducible archives). */
  mtime?: number;
}

const hex8 = (n: number) => n.toString(16).padStart(8, "0");
const pad4 = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);

/**
 * newcArchive writes `entries` (parents before children) as a newc cpio archive, owned by
 * 0:0, with the trailer the format ends with. The same entries always give the same bytes.
 */
export function newcArchive(entries: NewcEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  let at = 0;
  const push = (b: Buffer) => {
    parts.push(b);
    at += b.length;
  };
  const record = (path: string, mode: number, data: Buffer, mtime: number) => {
    const name = Buffer.from(`${path}\0`);
    const fields = [
      ino++,
      mode,
      0,
      0,
      (mode & 0o170000) === 0o040000 ? 2 : 1,
      mtime,
      data.length,
      0,
      0,
      0,
      0,
    ];
    push(Buffer.from(`070701${fields.map(hex8).join("")}${hex8(name.length)}${hex8(0)}`, "ascii"));
    push(name);
    push(pad4(at));
    push(data);
    push(pad4(at));
  };
  for (const e of entries) {
    if (!e.path || e.path.startsWith("/") || e.path.split("/").includes(".."))
      throw new Error(`newc: bad path "${e.path}"`);
    record(e.path, e.mode, e.data ?? Buffer.alloc(0), e.mtime ?? 0);
  }
  record("TRAILER!!!", 0, Buffer.alloc(0), 0);
  return Buffer.concat(parts);
}

/**
 * appendToInitrd returns `initrd` followed by `archive`, the first padded with zeros to a
 * 4-byte boundary (where the kernel looks for the next archive's magic).
 */
export function appendToInitrd(initrd: Buffer, archive: Buffer): Buffer {
  return Buffer.concat([initrd, pad4(initrd.length), archive]);
}
