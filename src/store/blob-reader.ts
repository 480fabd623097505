import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { createHash } from "node:crypto";
import type { BlobReader } from "../core/content.js";
import { digestMismatch, type Digest } from "../core/digest.js";
import { StoreError } from "./store-error.js";
import { giveAligned, takeAligned } from "./aligned.js";

/** READ: the size of one read and of the buffers lent (1 MiB: as fast as 256 KiB here for uploads, fewer calls). */
const READ = 1 << 20;
/** BLOCK: O_DIRECT reads start at, and ask for, whole multiples of this. */
const BLOCK = 4096;

/**
 * openBlobReader reads the blob file at `path` for an upload that writes to its socket
 * itself: synchronous reads into reused aligned buffers it lends out, hashed as they go, the
 * digest checked before the last bytes are handed out (so a corrupt blob never reaches a
 * registry whole). With O_DIRECT where the filesystem takes it: a blob not in the page cache
 * (pulls write past it, append-file.ts) is then read without filling the cache page by page.
 */
export function openBlobReader(path: string, expect: { digest: Digest; size: number }): BlobReader {
  // The file through the page cache, and past it (undefined where the filesystem refuses).
  const bfd = openSync(path, "r");
  let dfd: number | undefined;
  try {
    dfd = openSync(path, constants.O_RDONLY | constants.O_DIRECT);
  } catch {
    dfd = undefined;
  }
  const closeAll = () => {
    closeSync(bfd);
    if (dfd !== undefined) closeSync(dfd);
  };
  const hash = createHash("sha256");
  const what = `blob ${expect.digest}`;
  let pos = 0;
  let closed = false;
  const onDisk = fstatSync(bfd).size;
  if (onDisk !== expect.size) {
    closeAll();
    throw new StoreError("DIGEST_MISMATCH", `${what}: the file holds ${onDisk} bytes, want ${expect.size}`);
  }
  const lent = new Map<ArrayBufferLike, Buffer>();

  /** fill reads `want` bytes at `pos` into `buf`: direct when the position allows, else buffered. */
  const fill = (buf: Buffer, want: number): number => {
    let got = 0;
    while (got < want) {
      let n: number;
      if (dfd !== undefined && (pos + got) % BLOCK === 0 && got % BLOCK === 0) {
        try {
          // A whole number of blocks; at the end of the file the read is short, which is fine.
          const len = Math.min(buf.length - got, Math.ceil((want - got) / BLOCK) * BLOCK);
          n = Math.min(readSync(dfd, buf, got, len, pos + got), want - got);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EINVAL") throw e;
          // Refused after all: buffered from here on.
          closeSync(dfd);
          dfd = undefined;
          continue;
        }
      } else {
        n = readSync(bfd, buf, got, want - got, pos + got);
      }
      if (n === 0) break;
      got += n;
    }
    return got;
  };

  return {
    size: expect.size,
    next(max) {
      if (closed) throw new Error(`${what}: read after close`);
      if (pos >= expect.size) return undefined;
      const buf = takeAligned(READ);
      const want = Math.min(max, READ, expect.size - pos);
      const n = fill(buf, want);
      if (n < want) {
        giveAligned(buf);
        throw new StoreError(
          "DIGEST_MISMATCH",
          `${what}: the file ends after ${pos + n} bytes, want ${expect.size}`,
        );
      }
      const chunk = buf.subarray(0, n);
      hash.update(chunk);
      pos += n;
      if (pos === expect.size) {
        const got: Digest = `sha256:${hash.digest("hex")}`;
        if (got !== expect.digest) {
          giveAligned(buf);
          throw digestMismatch(what, got, expect.digest, pos);
        }
      }
      lent.set(buf.buffer, buf);
      return chunk;
    },
    release(chunk) {
      const buf = lent.get(chunk.buffer);
      if (!buf) return;
      lent.delete(chunk.buffer);
      giveAligned(buf);
    },
    close() {
      if (closed) return;
      closed = true;
      closeAll();
    },
  };
}
