import { Readable, Transform, pipeline } from "node:stream";
import { type Digest } from "../core/digest.js";
import { isOvmsError } from "../core/errors.js";
import { MediaType } from "../core/media-types.js";
import type { Descriptor, ImageIndex, ImageManifest, Platform } from "../core/oci.js";
import type { ContentStore } from "../core/content.js";
import { cancelled, isCancelled, sleep, throwIfCancelled } from "./cancel.js";
import { MAX_MANIFEST, isManifestMediaType, readAll } from "./manifest-bytes.js";
import { parsePlatform, selectPlatform } from "./platform.js";
import { RegistryError } from "./registry-error.js";
import { DEFAULT_RETRY_POLICY, backoff } from "./retry-policy.js";
import { TransferWorkers, workerCount } from "./transfer-workers.js";

/** CopyProgress is told what happens to each blob, for progress bars. */
export interface CopyProgress {
  /** start: the blob begins to move (it was not in the destination). */
  start?(desc: Descriptor): void;
  /** bytes: `n` more bytes of the blob went through. */
  bytes?(desc: Descriptor, n: number): void;
  /** done: the blob is in the destination, moved, already there, or mounted from another repository. */
  done?(desc: Descriptor, how: "transferred" | "skipped" | "mounted"): void;
}

/** CopyOptions tune a copy. */
export interface CopyOptions {
  /** concurrency is how many blobs move at once (default 4). */
  concurrency?: number;
  /** referrers copies the manifests whose subject is the artifact (signatures, snapshots), recursively (default true). */
  referrers?: boolean;
  /** platform picks one manifest when the source reference is an index (`os/arch[/variant]`); without it the whole index is copied. */
  platform?: string | Platform;
  progress?: CopyProgress;
  /** attempts is how many times one blob is tried when its connection drops (default 3). */
  attempts?: number;
  /**
   * workers moves blobs of at least `workerThreshold` bytes (default 4 MiB) between a registry
   * and the local store in worker threads, so they are hashed on several cores (default true).
   */
  workers?: boolean;
  workerThreshold?: number;
  /**
   * signal stops the copy: transfers in flight are abandoned (the store's ingest removes its
   * temp files, uploads are cancelled), nothing more is started, no name is written, and the
   * copy rejects with CANCELLED once everything it started has stopped.
   */
  signal?: AbortSignal;
  /**
   * beforeName runs once everything is in the destination (manifests, blobs, referrers) and
   * before the root is named: a pull's policy check, which may refuse (throw) so that nothing
   * is named.
   */
  beforeName?: (root: Descriptor) => Promise<void>;
  /** nameAnnotations are recorded on the root's name where the destination keeps them (a store's index.json entry: `ovms.origin`). */
  nameAnnotations?: Record<string, string>;
}

/** CopyResult says what a copy did. */
export interface CopyResult {
  /** digest of the root manifest copied (the platform's manifest when one was picked). */
  digest: Digest;
  mediaType: string;
  /** bytesTransferred counts blobs and manifests that moved. */
  bytesTransferred: number;
  /** bytesSkipped counts blobs the destination had already or mounted. */
  bytesSkipped: number;
  /** blobs is the number of distinct blobs (configs and layers) of the graph. */
  blobs: number;
  blobsTransferred: number;
  blobsSkipped: number;
  blobsMounted: number;
  manifests: number;
  referrers: number;
  seconds: number;
}

/**
 * copy copies an artifact graph — the manifest `srcRef` names, its config and layers (or the
 * manifests of an index), and the manifests that refer to it — from any ContentStore to any
 * other, then names it `dstRef` (or records it untagged when the destination can):
 * store → registry is push, registry → store is pull, registry → registry is copy.
 *
 * Children go before their parent and the name goes last, so a reader never sees a manifest
 * whose blobs are missing. A blob already in the destination is not moved (what makes a pull
 * of a new version transfer only its new layers); between two repositories of one registry it
 * is mounted. Bytes are verified once, by whichever side verifies: the store's ingest, or the
 * destination registry (which checks the digest of every upload).
 *
 * What each side can do beyond the ContentStore role (verify on push, mount, keep untagged
 * manifests, be opened in a worker thread) comes from its declared capabilities.
 */
export async function copy(
  src: ContentStore,
  srcRef: string,
  dst: ContentStore,
  dstRef: string | undefined,
  opts: CopyOptions = {},
): Promise<CopyResult> {
  const started = performance.now();
  const limit = limiter(opts.concurrency ?? 4);
  const attempts = opts.attempts ?? 3;
  const progress = opts.progress ?? {};
  const result: CopyResult = {
    digest: "sha256:" as Digest,
    mediaType: "",
    bytesTransferred: 0,
    bytesSkipped: 0,
    blobs: 0,
    blobsTransferred: 0,
    blobsSkipped: 0,
    blobsMounted: 0,
    manifests: 0,
    referrers: 0,
    seconds: 0,
  };
  const signal = opts.signal;
  const srcCan = src.capabilities;
  const dstCan = dst.capabilities;
  // The sink checks digests itself (a store's ingest hashes, a registry verifies uploads): the source need not.
  const verify = !dstCan?.verifiesOnPush;

  const open = async (desc: Descriptor): Promise<Readable> => {
    const s = await src.fetch(desc, { verify, signal });
    if (!progress.bytes) return s;
    const count = new Transform({
      transform(chunk: Buffer, _e, cb) {
        progress.bytes!(desc, chunk.length);
        cb(null, chunk);
      },
    });
    return pipeline(s, count, () => undefined);
  };

  // Large blobs to or from this machine move in worker threads (one hash per core).
  const offload =
    (opts.workers ?? true) && !!srcCan?.handoff && !!dstCan?.handoff && !!(srcCan.local || dstCan.local);
  const threshold = opts.workerThreshold ?? 4 << 20;
  let pool: TransferWorkers | undefined;
  const workers = () => (pool ??= new TransferWorkers(workerCount(opts.concurrency ?? 4)));

  let failure: unknown;
  const blobs = new Map<string, Promise<void>>();
  const copyBlob = (desc: Descriptor): Promise<void> => {
    let p = blobs.get(desc.digest);
    if (!p) {
      result.blobs++;
      p = limit(async () => {
        // After a failure elsewhere in the graph, blobs still waiting are not started.
        if (failure) throw failure;
        for (let attempt = 1; ; attempt++) {
          try {
            throwIfCancelled(signal, `blob ${desc.digest}`);
            if (await dst.exists(desc, { signal })) {
              result.blobsSkipped++;
              result.bytesSkipped += desc.size;
              progress.done?.(desc, "skipped");
              return;
            }
            progress.start?.(desc);
            let how: "transferred" | "mounted" = "transferred";
            const onBytes = progress.bytes ? (n: number) => progress.bytes!(desc, n) : undefined;
            if (offload && desc.size >= threshold) {
              how = await workers().move(src, dst, desc, { progress: onBytes, signal });
            } else if (dstCan?.pushBlob) {
              how = await dstCan.pushBlob(desc, () => open(desc), { from: src, signal, onBytes });
            } else {
              await dst.push(desc, await open(desc), { signal });
            }
            if (how === "mounted") {
              result.blobsMounted++;
              result.bytesSkipped += desc.size;
            } else {
              result.blobsTransferred++;
              result.bytesTransferred += desc.size;
            }
            progress.done?.(desc, how);
            return;
          } catch (e) {
            // A connection lost half-way (after the download's own resumes), or a transient
            // failure of a write that is never resent blindly (an upload's PATCH or PUT),
            // starts the blob over from the HEAD: content-addressed, so nothing applies twice.
            if (attempt < attempts && retryBlob(e) && !signal?.aborted) {
              await sleep(backoff(DEFAULT_RETRY_POLICY, attempt), signal);
              continue;
            }
            failure ??= e;
            throw e;
          }
        }
      });
      blobs.set(desc.digest, p);
    }
    return p;
  };

  /** countPresent counts the blobs of a manifest the destination already has as skipped. */
  const countPresent = (m: Partial<ImageManifest & ImageIndex>): void => {
    for (const b of [...(m.config ? [m.config] : []), ...(m.layers ?? [])]) {
      if (blobs.has(b.digest)) continue;
      blobs.set(b.digest, Promise.resolve());
      result.blobs++;
      result.blobsSkipped++;
      result.bytesSkipped += b.size;
    }
  };

  const manifests = new Map<string, Promise<void>>();
  const copyManifest = (desc: Descriptor, known?: Buffer): Promise<void> => {
    let p = manifests.get(desc.digest);
    if (!p) {
      p = (async () => {
        if (await dst.exists(desc, { signal })) {
          // Already there, so its blobs are too: count them as such (a repeat push says so).
          if (known) countPresent(JSON.parse(known.toString("utf8")) as Partial<ImageManifest & ImageIndex>);
          return;
        }
        const bytes = known ?? (await readAll(await src.fetch(desc, { signal }), MAX_MANIFEST));
        const m = JSON.parse(bytes.toString("utf8")) as ImageManifest & ImageIndex;
        const children: Promise<void>[] = [];
        if (m.config) children.push(copyBlob(m.config));
        // Largest first: the long transfers start early and the small ones fill in around them.
        for (const l of [...(m.layers ?? [])].sort((a, b) => b.size - a.size)) children.push(copyBlob(l));
        for (const c of m.manifests ?? []) {
          children.push(isManifestMediaType(c.mediaType) ? copyManifest(c) : copyBlob(c));
        }
        await settleAll(children);
        throwIfCancelled(signal, `manifest ${desc.digest}`);
        await dst.push(desc, Readable.from([bytes]), { signal });
        result.manifests++;
        result.bytesTransferred += bytes.length;
      })();
      manifests.set(desc.digest, p);
    }
    return p;
  };

  const seen = new Set<string>();
  const copyReferrers = async (subject: Descriptor): Promise<void> => {
    const list = (await src.referrers(subject, undefined, { signal })).filter((r) => !seen.has(r.digest));
    for (const r of list) seen.add(r.digest);
    await settleAll(
      list.map(async (r) => {
        const desc: Descriptor = { mediaType: r.mediaType, digest: r.digest, size: r.size };
        if (r.artifactType) desc.artifactType = r.artifactType;
        await copyManifest(desc);
        throwIfCancelled(signal, `manifest ${desc.digest}`);
        await dstCan?.addUntagged?.(desc);
        result.referrers++;
        await copyReferrers(desc);
      }),
    );
  };

  try {
    let root = await src.resolve(srcRef, { signal });
    let rootBytes = await readAll(await src.fetch(root, { signal }), MAX_MANIFEST);
    if (
      opts.platform &&
      (root.mediaType === MediaType.OciIndex || root.mediaType === MediaType.DockerManifestList)
    ) {
      const want = typeof opts.platform === "string" ? parsePlatform(opts.platform) : opts.platform;
      const pick = selectPlatform(JSON.parse(rootBytes.toString("utf8")) as ImageIndex, want, srcRef);
      root = { mediaType: pick.mediaType, digest: pick.digest, size: pick.size };
      if (pick.artifactType) root.artifactType = pick.artifactType;
      rootBytes = await readAll(await src.fetch(root, { signal }), MAX_MANIFEST);
    }
    result.digest = root.digest;
    result.mediaType = root.mediaType;
    // Start the worker threads now, while the small blobs and existence checks go on.
    if (offload) {
      const layers = (JSON.parse(rootBytes.toString("utf8")) as Partial<ImageManifest>).layers ?? [];
      if (layers.some((l) => l.size >= threshold)) workers().warm();
    }

    await copyManifest(root, rootBytes);
    if (opts.referrers ?? true) await copyReferrers(root);
    // The name goes last, and never after a cancel: a name always means a complete artifact.
    throwIfCancelled(signal, srcRef);
    await opts.beforeName?.(root);
    throwIfCancelled(signal, srcRef);
    const named = opts.nameAnnotations
      ? { ...root, annotations: { ...(root.annotations ?? {}), ...opts.nameAnnotations } }
      : root;
    if (dstRef) await dst.tag(named, dstRef, { signal });
    else await dstCan?.addUntagged?.(named);
    result.seconds = (performance.now() - started) / 1000;
    return result;
  } catch (e) {
    // Whatever broke first after a cancel (a destroyed stream, a closed socket) broke because of it.
    if (signal?.aborted && !isCancelled(e)) throw cancelled(srcRef, signal);
    throw e;
  } finally {
    await pool?.close();
  }
}

function retryBlob(e: unknown): boolean {
  if (isOvmsError(e, "CONNECTION_LOST")) return true;
  return (
    e instanceof RegistryError &&
    e.transient &&
    e.attempts === 1 &&
    (e.method === "PATCH" || e.method === "PUT")
  );
}

/** settleAll waits for every promise, then throws the first failure: no transfer is left running behind an error. */
async function settleAll(ps: Promise<void>[]): Promise<void> {
  const r = await Promise.allSettled(ps);
  const failed = r.find((x): x is PromiseRejectedResult => x.status === "rejected");
  if (failed) throw failed.reason;
}

/** limiter runs at most `n` tasks at once, the others wait in order. */
export function limiter(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: (() => void)[] = [];
  const next = () => {
    if (active < n && queue.length) {
      active++;
      queue.shift()!();
    }
  };
  return <T>(task: () => Promise<T>) =>
    new Promise<T>((resolve, reject) => {
      queue.push(() => {
        task()
          .then(resolve, reject)
          .finally(() => {
            active--;
            next();
          });
      });
      next();
    });
}
