import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rename, rm, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { OvmsError } from "../core/errors.js";
import { formatSize } from "../core/size.js";
import { digestHex, type Digest } from "../core/digest.js";
import type { Store } from "../store/store.js";
import type { OvmsManifest } from "../core/manifest.generated.js";
import type { Artifact } from "./artifact.js";
import { unpackDiskLayer } from "./disk-layer.js";
import { imageInfo, rebaseUnsafe } from "./qemu-img.js";
import { checkDiskImage } from "./qcow2-header.js";
import { readRamsnapHeader, type RamsnapHeader, type RamsnapMetadata } from "./ramsnap.js";
import { readBootstrap } from "./convert/bootstrap.js";
import { defaultSnapshotCache } from "./snapshot-cache.js";
import { PrepareCache } from "./prepare-cache.js";
import type { PreparedArtifact } from "./prepared-artifact.js";

export * from "./snapshot-cache.js";
export { PrepareCache } from "./prepare-cache.js";
export type { PreparedArtifact } from "./prepared-artifact.js";

/** layersDir is where unpacked disk layers live, beside the store's blobs and keyed by digest. */
export function layersDir(store: Store): string {
  return join(store.workDir, "layers", "sha256");
}

/**
 * prepareArtifact makes an artifact ready to boot: kernel and initrd verified in place, each
 * disk layer extracted once (verified while streaming) into a read-only folder keyed by its
 * digest, and each diff rebased (`qemu-img rebase -u`) from its parent's digest onto the
 * parent's local path. Extraction goes to a temp folder renamed into place, so two
 * instances preparing the same layer at once never see half a disk. What it remembers between
 * calls lives in `opts.cache`; without one, nothing is remembered (every blob is hashed).
 */
export async function prepareArtifact(
  store: Store,
  a: Artifact,
  opts: { snapshotCacheDir?: string; cache?: PrepareCache } = {},
): Promise<PreparedArtifact> {
  const cache = opts.cache ?? new PrepareCache();
  // The snapshot cache folder is part of what was prepared: a recall only for the default one.
  const recalled = opts.snapshotCacheDir ? undefined : cache.recall(a.descriptor.digest, a.reference);
  if (recalled) return recalled;
  const layerSize = new Map(a.oci.layers.map((l) => [l.digest, l.size]));
  const m = a.ovms;
  const kernelPath = await cache.verifyBlob(
    store,
    m.kernel.ref as Digest,
    layerSize.get(m.kernel.ref as Digest)!,
  );
  const initrdPath = m.initrd
    ? await cache.verifyBlob(store, m.initrd.ref as Digest, layerSize.get(m.initrd.ref as Digest)!)
    : undefined;
  const disks: PreparedArtifact["disks"] = [];
  await mkdir(layersDir(store), { recursive: true });
  for (const [i, d] of (m.diskLayers ?? []).entries()) {
    const ref = d.ref as Digest;
    const dir = join(layersDir(store), digestHex(ref));
    const file = join(dir, `disk.${d.format}`);
    if (!(await stat(file).catch(() => undefined))) {
      const tmp = await mkdtemp(join(layersDir(store), ".unpack-"));
      try {
        const stream = await store.fetch({ digest: ref, size: layerSize.get(ref)! });
        const out = await unpackDiskLayer(stream, d.format, tmp);
        const parent = disks[i - 1];
        // Before qemu-img or QEMU opens it: no backing file but the parent's digest, no data file.
        await checkDiskImage(out, d.format, parent?.ref, `diskLayers[${i}] ${ref}`);
        if (parent) {
          const info = await imageInfo(out);
          if (info.backingFilename !== parent.ref) {
            throw new OvmsError(
              "ARTIFACT_INVALID",
              `diskLayers[${i}] ${ref}: its qcow2 is backed by "${info.backingFilename ?? "nothing"}", want the parent digest ${parent.ref}`,
            );
          }
          await rebaseUnsafe(out, parent.path, parent.format);
        }
        // Pulled layers are never written: read-only for everyone, overlays sit on top.
        await chmod(out, 0o444);
        await rename(tmp, dir).catch(async (e: NodeJS.ErrnoException) => {
          // Another process unpacked the same layer first; theirs is as good as ours.
          if (e.code !== "ENOTEMPTY" && e.code !== "EEXIST") throw e;
        });
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
    }
    disks.push({ path: file, format: d.format, ref });
  }
  const out: PreparedArtifact = {
    reference: a.reference,
    digest: a.descriptor.digest,
    manifest: m,
    kernelPath,
    disks,
  };
  if (initrdPath) out.initrdPath = initrdPath;
  if (m.bootstrap) {
    const ref = m.bootstrap.ref as Digest;
    const path = await cache.verifyBlob(store, ref, layerSize.get(ref)!);
    out.bootstrap = await readBootstrap(path, a.reference);
  }
  if (m.ramSnapshot) out.ramSnapshot = await preloadSnapshot(store, a, { ...opts, cache });
  if (!opts.snapshotCacheDir) {
    const blobs = [m.bootstrap, m.ramSnapshot, ...(m.ramSnapshot?.parents ?? [])].flatMap((b) =>
      b ? [store.blobPath(b.ref as Digest)] : [],
    );
    cache.remember(out, blobs);
  }
  return out;
}

/**
 * preloadSnapshot readies an artifact's RAM snapshot for restores (rfc §5.7 step 4): the blob
 * verified, its structure and its fit with the manifest checked (§5.5, §5.6), the memory
 * decompressed once per digest into the store's snapshot cache on tmpfs, where every later
 * start (of any process using this store) finds it. Used by prepareArtifact and by `ovm pull`
 * when the manifest sets `preload_hint`.
 */
export async function preloadSnapshot(
  store: Store,
  a: Artifact,
  opts: { snapshotCacheDir?: string; cache?: PrepareCache } = {},
): Promise<NonNullable<PreparedArtifact["ramSnapshot"]>> {
  const cache = opts.cache ?? new PrepareCache();
  const m = a.ovms;
  if (!m.ramSnapshot) throw new OvmsError("INTERNAL", `${a.reference}: no RAM snapshot to preload`);
  const layerSize = new Map(a.oci.layers.map((l) => [l.digest, l.size]));
  const ref = m.ramSnapshot.ref as Digest;
  if (m.ramSnapshot.compression !== "lz4") {
    throw new OvmsError(
      "NOT_IMPLEMENTED",
      `ramSnapshot.compression ${m.ramSnapshot.compression} is not supported by this runtime (lz4 only)`,
    );
  }
  const blob = await cache.verifyBlob(store, ref, layerSize.get(ref)!);
  const header = await readRamsnapHeader(blob);
  const problems = snapshotMismatches(header.metadata, m);
  if (problems.length) {
    throw new OvmsError(
      "MANIFEST_INVALID",
      `RAM snapshot ${ref} does not fit its artifact: ${problems.join("; ")}`,
    );
  }
  const parents = await snapshotParents(store, cache, m, header, ref, layerSize);
  const preloaded = opts.snapshotCacheDir ?? defaultSnapshotCache(store);
  await mkdir(preloaded, { recursive: true, mode: 0o755 });
  if (!existsSync(join(preloaded, "store-path")))
    await writeFile(join(preloaded, "store-path"), resolve(store.root));
  const dir = join(preloaded, digestHex(ref));
  return { ...(await cache.preloadOnce(blob, header, dir, parents)), metadata: header.metadata, digest: ref };
}

/**
 * snapshotParents verifies the parent blobs a layout-2 snapshot's blocks live in (rfc §5.9):
 * each one its index names must be a `ramSnapshot.parents` layer of the artifact, and the
 * index must be the one `indexDigest` names. Returns their paths by digest.
 */
async function snapshotParents(
  store: Store,
  cache: PrepareCache,
  m: OvmsManifest,
  header: RamsnapHeader,
  ref: Digest,
  layerSize: ReadonlyMap<string, number>,
): Promise<Map<string, string>> {
  const declared = new Set((m.ramSnapshot?.parents ?? []).map((p) => p.ref));
  const out = new Map<string, string>();
  if (m.ramSnapshot?.indexDigest && m.ramSnapshot.indexDigest !== header.indexDigest)
    throw new OvmsError(
      "DIGEST_MISMATCH",
      `RAM snapshot ${ref}: its index hashes to ${header.indexDigest}, the manifest's ramSnapshot.indexDigest is ${m.ramSnapshot.indexDigest}`,
    );
  for (const p of header.index.parents ?? []) {
    if (!declared.has(p))
      throw new OvmsError(
        "MANIFEST_INVALID",
        `RAM snapshot ${ref} refers to parent blob ${p}, which is not in the manifest's ramSnapshot.parents`,
      );
    out.set(p, await cache.verifyBlob(store, p as Digest, layerSize.get(p as Digest)!));
  }
  return out;
}

/** snapshotMismatches compares a ramsnap's metadata with the manifest that carries it (§5.6). */
export function snapshotMismatches(meta: RamsnapMetadata, m: OvmsManifest): string[] {
  const out: string[] = [];
  if (meta.version !== 1 && meta.version !== 2)
    out.push(`layout version ${String(meta.version)} (want 1 or 2)`);
  const layers = (m.diskLayers ?? []).map((d) => d.ref);
  if (JSON.stringify(meta.diskLayers) !== JSON.stringify(layers)) {
    out.push(
      `diskLayers: snapshot taken with [${meta.diskLayers.join(", ")}], manifest has [${layers.join(", ")}]`,
    );
  }
  if (m.resources?.memory !== undefined && m.resources.memory !== meta.memoryBytes) {
    out.push(`memory: snapshot ${formatSize(meta.memoryBytes)}, manifest ${formatSize(m.resources.memory)}`);
  }
  if (m.resources?.vcpus !== undefined && m.resources.vcpus !== meta.vcpus)
    out.push(`vcpus: snapshot ${meta.vcpus}, manifest ${m.resources.vcpus}`);
  if (!!meta.network !== !!m.network?.required)
    out.push(
      meta.network
        ? `network: the snapshot holds a NIC (${meta.network.mac}), the manifest does not set network.required`
        : "network: the manifest sets network.required, the snapshot holds no NIC",
    );
  return out;
}
