import { createReadStream, existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { Writable } from "node:stream";
import { OvmsError } from "../core/errors.js";
import { Hasher, type Digest } from "../core/digest.js";
import { FileBoundMemo } from "../core/fingerprint.js";
import type { Store } from "../store/store.js";
import { preloadRamsnap, type readRamsnapHeader } from "./ramsnap.js";
import { markUsed, USED_FILE } from "./snapshot-cache.js";
import type { PreparedArtifact } from "./prepared-artifact.js";

/**
 * PrepareCache is what preparing remembers between calls, held by whoever prepares (the
 * daemon's controller holds one for its life; tests and benchmarks make their own): the blobs
 * already hashed, keyed by digest + size + mtime, so a kernel is verified once and not at every
 * start (a restore must not spend its budget re-hashing 14 MB), and the snapshot preloads in
 * flight, so concurrent starts of one snapshot share the work.
 */
export class PrepareCache {
  private readonly verified = new Set<string>();
  private readonly preloads = new Map<string, Promise<{ memoryFile: string; deviceStateFile: string }>>();
  private readonly prepared = new FileBoundMemo<Digest, PreparedArtifact>();

  /**
   * recall returns what `remember` kept for an artifact (by manifest digest) while every file it
   * points at is still the file that was verified and unpacked (same size and mtime, as for
   * verifyBlob): a restore of a prepared snapshot then costs a few stat calls, not a re-read of
   * its ramsnap index (the bulk of a warm start's budget). Anything changed or gone (a blob
   * rewritten, a preload evicted from the cache) forgets the entry, and the caller prepares anew.
   */
  recall(digest: Digest, reference: string): PreparedArtifact | undefined {
    const hit = this.prepared.get(digest);
    if (!hit) return undefined;
    if (hit.ramSnapshot) markUsed(dirname(hit.ramSnapshot.memoryFile));
    return { ...hit, reference };
  }

  /** remember keeps a prepared artifact with the fingerprints of the files it points at. */
  remember(value: PreparedArtifact, extraFiles: readonly string[] = []): void {
    const paths = [
      value.kernelPath,
      ...(value.initrdPath ? [value.initrdPath] : []),
      ...value.disks.map((d) => d.path),
      ...(value.ramSnapshot
        ? [
            value.ramSnapshot.memoryFile,
            value.ramSnapshot.deviceStateFile,
            join(dirname(value.ramSnapshot.memoryFile), "complete"),
          ]
        : []),
      ...extraFiles,
    ];
    this.prepared.set(value.digest, value, paths);
  }

  /** verifyBlob hashes a blob of the store once per cache and content, or throws DIGEST_MISMATCH. */
  async verifyBlob(store: Store, digest: Digest, size: number): Promise<string> {
    const path = store.blobPath(digest);
    const st = await stat(path).catch(() => undefined);
    if (!st)
      throw new OvmsError(
        "ARTIFACT_INCOMPLETE",
        `blob ${digest} is missing from the store (pull the artifact again)`,
      );
    const key = `${digest}:${st.size}:${st.mtimeMs}`;
    if (this.verified.has(key)) return path;
    const h = new Hasher({ digest, size, what: `blob ${digest}` });
    await pipeline(createReadStream(path), h, new Writable({ write: (_c, _e, cb) => cb() }));
    this.verified.add(key);
    return path;
  }

  /**
   * preloadOnce decompresses a snapshot into `dir` once per digest and keeps it (a cache every
   * restore of that snapshot maps privately); concurrent callers share the work, and a
   * half-written preload is never used (temp folder + rename).
   */
  preloadOnce(
    blob: string,
    header: Awaited<ReturnType<typeof readRamsnapHeader>>,
    dir: string,
    parents: ReadonlyMap<string, string> = new Map(),
  ): Promise<{ memoryFile: string; deviceStateFile: string }> {
    const files = { memoryFile: join(dir, "memory"), deviceStateFile: join(dir, "device-state") };
    if (existsSync(join(dir, "complete"))) {
      markUsed(dir);
      return Promise.resolve(files);
    }
    let p = this.preloads.get(dir);
    if (!p) {
      p = (async () => {
        await mkdir(dirname(dir), { recursive: true, mode: 0o755 });
        const tmp = await mkdtemp(`${dir}.tmp-`);
        try {
          await chmod(tmp, 0o755);
          await preloadRamsnap(blob, header, join(tmp, "memory"), join(tmp, "device-state"), parents);
          // Read-only: restores map it privately (copy-on-write) and never write it.
          await chmod(join(tmp, "memory"), 0o444);
          await writeFile(join(tmp, USED_FILE), "");
          await writeFile(join(tmp, "complete"), new Date().toISOString());
          await rm(dir, { recursive: true, force: true });
          await rename(tmp, dir);
        } catch (e) {
          await rm(tmp, { recursive: true, force: true });
          throw e;
        }
        return files;
      })().finally(() => this.preloads.delete(dir));
      this.preloads.set(dir, p);
    }
    return p;
  }
}
