import { sha256, type Digest } from "../core/digest.js";
import { Annotation, LayerMediaType, MediaType, type LayerRole } from "../core/media-types.js";
import type { Descriptor, ImageManifest } from "../core/oci.js";
import type { OvmsManifest } from "../core/manifest.generated.js";
import { validateArtifact, validateManifest } from "../core/validate.js";
import type { Store } from "../store/store.js";

/** layerDescriptor makes the OCI descriptor of one part of an OVMS artifact. */
export function layerDescriptor(
  role: LayerRole,
  blob: { digest: Digest; size: number },
  title: string,
  extra: Record<string, string> = {},
): Descriptor {
  return {
    mediaType: LayerMediaType[role],
    digest: blob.digest,
    size: blob.size,
    annotations: { [Annotation.Role]: role, [Annotation.Title]: title, ...extra },
  };
}

/**
 * ociManifestFor wraps an OVMS manifest into the OCI image manifest that carries it
 * (rfc/ovms-v0.1.md §3): artifactType and config media type are the OVMS type, layers are
 * kernel, initrd, disks base first, then the RAM snapshot.
 */
export function ociManifestFor(
  config: { digest: Digest; size: number },
  layers: Descriptor[],
  ovms: OvmsManifest,
  subject?: Descriptor,
  extra: Record<string, string> = {},
): ImageManifest {
  const m: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType: MediaType.OvmsManifest,
    config: { mediaType: MediaType.OvmsManifest, digest: config.digest, size: config.size },
    layers,
  };
  if (subject) m.subject = { mediaType: subject.mediaType, digest: subject.digest, size: subject.size };
  const annotations: Record<string, string> = { "ovms.name": ovms.name, [Annotation.Version]: ovms.version };
  if (ovms.metadata?.created) annotations[Annotation.Created] = ovms.metadata.created;
  m.annotations = { ...annotations, ...extra };
  return m;
}

/** ArtifactPart is one blob an OVMS manifest names. */
export interface ArtifactPart {
  role: LayerRole;
  ref: Digest;
  /** Where the manifest names it: kernel, initrd, diskLayers[i], bootstrap or ramSnapshot. */
  path: string;
  /** For a disk layer: its place in the chain and its image format. */
  index?: number;
  format?: "qcow2" | "raw";
}

/** artifactParts lists the parts of an OVMS manifest in the order of their layers (rfc §3.3). */
export function artifactParts(m: OvmsManifest): ArtifactPart[] {
  const parts: ArtifactPart[] = [{ role: "kernel", ref: m.kernel.ref as Digest, path: "kernel" }];
  if (m.initrd) parts.push({ role: "initrd", ref: m.initrd.ref as Digest, path: "initrd" });
  (m.diskLayers ?? []).forEach((d, index) =>
    parts.push({ role: "disk", ref: d.ref as Digest, path: `diskLayers[${index}]`, index, format: d.format }),
  );
  if (m.bootstrap) parts.push({ role: "bootstrap", ref: m.bootstrap.ref as Digest, path: "bootstrap" });
  if (m.ramSnapshot) {
    parts.push({ role: "ramsnap", ref: m.ramSnapshot.ref as Digest, path: "ramSnapshot" });
    // Layout 2: the earlier generations' blobs its blocks live in travel with it (rfc §5.9).
    (m.ramSnapshot.parents ?? []).forEach((p, i) =>
      parts.push({ role: "ramsnap", ref: p.ref as Digest, path: `ramSnapshot.parents[${i}]` }),
    );
  }
  return parts;
}

/**
 * PartBlob is how a part is stored: its blob's size and a file name for people, or the layer
 * descriptor an existing artifact already has for it (kept as it is, so a snapshot's
 * inherited layers are the source's, byte for byte).
 */
export type PartBlob = { size: number; title: string } | Descriptor;

/** AssembleOptions say where the parts of an artifact being assembled are. */
export interface AssembleOptions {
  /** what the artifact is, for messages (`build of example/vm:1`, a file name). */
  what: string;
  /** blob says how each part is stored; it may throw when one is missing. */
  blob: (part: ArtifactPart) => PartBlob | Promise<PartBlob>;
  /** config is the manifest's bytes as given (an imported manifest.json); default: indented JSON. */
  config?: Buffer;
  /** subject is the manifest a snapshot is of (rfc §3.5). */
  subject?: Descriptor;
  /** annotations are added to the OCI manifest's (a converted image's base digest and name, rfc §3.4). */
  annotations?: Record<string, string>;
}

/** Assembled is an artifact written to the store, not yet named. */
export interface Assembled {
  descriptor: Descriptor;
  oci: ImageManifest;
  manifest: OvmsManifest;
}

/**
 * assembleArtifact is the one place an OVMS manifest becomes an artifact in the store (for
 * build, snapshot and a manifest.json import): it validates the manifest, makes the OCI
 * manifest (config, one layer per part in the order of rfc §3.3, annotations, artifactType,
 * subject), checks the two together and writes config and manifest. Nothing is written when
 * a check fails, and nothing is named: the caller tags it or records it untagged.
 */
export async function assembleArtifact(
  store: Store,
  doc: unknown,
  opts: AssembleOptions,
): Promise<Assembled> {
  const manifest = validateManifest(doc, opts.what);
  const layers: Descriptor[] = [];
  for (const part of artifactParts(manifest)) {
    const b = await opts.blob(part);
    if ("digest" in b) {
      layers.push(b);
      continue;
    }
    const extra: Record<string, string> = part.format ? { [Annotation.Format]: part.format } : {};
    layers.push(layerDescriptor(part.role, { digest: part.ref, size: b.size }, b.title, extra));
  }
  const bytes = opts.config ?? Buffer.from(JSON.stringify(manifest, null, 2));
  const config = { digest: sha256(bytes), size: bytes.length };
  const oci = ociManifestFor(config, layers, manifest, opts.subject, opts.annotations);
  validateArtifact(oci, manifest, opts.what);
  await store.putBlob(bytes, config.digest);
  const descriptor = await store.putManifest(oci);
  return { descriptor, oci, manifest };
}
