import { digestHex, type Digest } from "../core/digest.js";
import { MediaType } from "../core/media-types.js";
import type { Descriptor, ImageIndex, ImageManifest } from "../core/oci.js";

/**
 * The referrers tag schema, the fallback for registries without the Referrers API
 * (distribution spec v1.1 "Referrers Tag Schema"): the referrers of `<alg>:<ref>` are listed
 * in an OCI index tagged `<alg>-<ref>`, which clients update when they push or delete a
 * manifest that has a `subject`.
 */

/** referrersTag is the fallback tag listing the referrers of `digest`: `sha256-<hex>`. */
export function referrersTag(digest: Digest): string {
  return `sha256-${digestHex(digest)}`;
}

/** referrerDescriptor is the entry a manifest gets in a referrers list: its artifactType and annotations included. */
export function referrerDescriptor(desc: Descriptor, manifest: ImageManifest | ImageIndex): Descriptor {
  const d: Descriptor = {
    mediaType: manifest.mediaType ?? desc.mediaType,
    digest: desc.digest,
    size: desc.size,
  };
  const at = manifest.artifactType ?? (manifest as ImageManifest).config?.mediaType;
  if (at) d.artifactType = at;
  if (manifest.annotations && Object.keys(manifest.annotations).length) d.annotations = manifest.annotations;
  return d;
}

/** emptyReferrersIndex is the list of no referrers. */
export function emptyReferrersIndex(): ImageIndex {
  return { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] };
}

/** filterReferrers keeps the entries of one artifactType (all when none is given). */
export function filterReferrers(list: Descriptor[], artifactType?: string): Descriptor[] {
  return artifactType ? list.filter((d) => d.artifactType === artifactType) : list;
}
