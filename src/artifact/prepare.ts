import { createReadStream } from "node:fs";
import { chmod, mkdir, mkdtemp, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { Writable } from "node:stream";
import { OvmsError } from "../spec/errors.js";
import { Hasher, digestHex, type Digest } from "../spec/digest.js";
import type { Store } from "../store/store.js";
import type { OvmsManifest } from "../spec/manifest.generated.js";
import type { Artifact } from "./artifact.js";
import { unpackDiskLayer } from "./disk-layer.js";
import { imageInfo, rebaseUnsafe } from "./qemu-img.js";

/**
 * PreparedArtifact is an artifact made ready to boot by artifact/prepare: verified, with
 * host paths for its parts. The runtime knows nothing about stores or registries.
 */
export interface PreparedArtifact {
  reference: string;
  digest: Digest;
  manifest: OvmsManifest;
  kernelPath: string;
  initrdPath?: string;
  /** The unpacked, read-only disk chain, base first; the last one is what an overlay sits on. */
  disks: { path: string; format: "qcow2" | "raw"; ref: Digest }[];
}

/** layersDir is where unpacked disk layers live, beside the store's blobs and keyed by digest. */
export function layersDir(store: Store): string {
  return join(store.workDir, "layers", "sha256");
}

// Blobs already hashed by this process, keyed by digest + size + mtime: a kernel is verified
// once, not at every start (a restore must not spend its budget re-hashing 14 MB).
const verified = new Set<string>();

/** verifyBlob hashes a blob of the store once per process and content, or throws DIGEST_MISMATCH. */
async function verifyBlob(store: Store, digest: Digest, size: number): Promise<string> {
  const path = store.blobPath(digest);
  const st = await stat(path).catch(() => undefined);
  if (!st) throw new OvmsError("ARTIFACT_INCOMPLETE", `blob ${digest} is missing from the store (pull the artifact again)`);
  const key = `${digest}:${st.size}:${st.mtimeMs}`;
  if (verified.has(key)) return path;
  const h = new Hasher({ digest, size, what: `blob ${digest}` });
  await pipeline(createReadStream(path), h, new Writable({ write: (_c, _e, cb) => cb() }));
  verified.add(key);
  return path;
}

/**
 * prepareArtifact makes an artifact ready to boot: kernel and initrd verified in place, each
 * disk layer extracted once (verified while streaming) into a read-only folder keyed by its
 * digest, and each diff rebased (`qemu-img rebase -u`) from its parent's digest onto the
 * parent's local path. Extraction goes to a temp folder renamed into place, so two
 * instances preparing the same layer at once never see half a disk.
 */
export async function prepareArtifact(store: Store, a: Artifact): Promise<PreparedArtifact> {
  const layerSize = new Map(a.oci.layers.map((l) => [l.digest, l.size]));
  const m = a.ovms;
  const kernelPath = await verifyBlob(store, m.kernel.ref as Digest, layerSize.get(m.kernel.ref as Digest)!);
  const initrdPath = m.initrd ? await verifyBlob(store, m.initrd.ref as Digest, layerSize.get(m.initrd.ref as Digest)!) : undefined;
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
  const out: PreparedArtifact = { reference: a.reference, digest: a.descriptor.digest, manifest: m, kernelPath, disks };
  if (initrdPath) out.initrdPath = initrdPath;
  return out;
}
