import { createWriteStream, openSync } from "node:fs";
import { chmod, open, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { Hasher, digestMismatch, type Digest } from "../core/digest.js";
import { StoreError } from "./store-error.js";
import { AppendFile } from "./append-file.js";

/** BlobWriter is an open ingest (see Store.openIngest). */
export interface BlobWriter {
  /** bytes is how many bytes were written so far: where a resumed download goes on. */
  bytes: number;
  /** write hashes and appends `chunk` before it returns (the caller may reuse the buffer). */
  write(chunk: Uint8Array): void;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

/**
 * openBlobWriter opens `tmp` for a writer that hands over bytes synchronously and in order.
 * The temp file and the running hash survive a dropped connection, so the writer resumes at
 * `bytes`. `commit` checks size and digest, fsyncs, makes the file read-only and renames it to
 * `dest` (then fsyncs the folder, so the name survives a crash); `abort`, or any failure of
 * `commit`, removes the temp file.
 */
export function openBlobWriter(
  tmp: string,
  dest: string,
  expect: { digest: Digest; size: number },
): BlobWriter {
  const file = new AppendFile(tmp);
  const hash = createHash("sha256");
  const what = `blob ${expect.digest}`;
  const abort = async () => {
    await file.close();
    await rm(tmp, { force: true });
  };
  const w: BlobWriter = {
    bytes: 0,
    write: (chunk) => {
      if (w.bytes + chunk.length > expect.size) {
        throw new StoreError("DIGEST_MISMATCH", `${what}: more than the declared ${expect.size} bytes`);
      }
      hash.update(chunk);
      file.append(chunk);
      w.bytes += chunk.length;
    },
    commit: async () => {
      try {
        if (w.bytes !== expect.size)
          throw new StoreError("DIGEST_MISMATCH", `${what}: got ${w.bytes} bytes, want ${expect.size}`);
        const got: Digest = `sha256:${hash.digest("hex")}`;
        if (got !== expect.digest) throw digestMismatch(what, got, expect.digest, w.bytes);
        await file.finish();
        await chmod(tmp, 0o444);
        await rename(tmp, dest);
        await fsyncDir(dirname(dest));
      } catch (e) {
        await abort();
        throw e;
      }
    },
    abort,
  };
  return w;
}

/**
 * ingestStream writes `content` to the temp file `tmp`, verified against `expect` while it
 * streams, fsynced, made read-only, renamed to `dest(digest)` and the folder fsynced (see
 * Store.ingest). Any failure removes the temp file.
 */
export async function ingestStream(
  content: Readable,
  tmp: string,
  dest: (digest: Digest) => string,
  expect: { digest?: Digest; size?: number },
): Promise<{ digest: Digest; size: number }> {
  const hasher = new Hasher({ ...expect, what: expect.digest ? `blob ${expect.digest}` : "blob" });
  // The file is opened before any byte flows: a WriteStream given only a path opens it
  // lazily, so a stream that fails at once could create the file after the rm below. And
  // synchronously: `content` may already be flowing (a pipe), and an error it meets must find
  // the pipeline's listener, not an await in between.
  const fd = openSync(tmp, "wx", 0o600);
  try {
    await pipeline(content, hasher, createWriteStream(tmp, { fd })); // closes `fd` when done
    const fh = await open(tmp, "r");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    const digest = hasher.digest();
    const to = dest(digest);
    await chmod(tmp, 0o444);
    await rename(tmp, to);
    await fsyncDir(dirname(to));
    return { digest, size: hasher.bytes };
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** fsyncDir makes a rename in `dir` durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
