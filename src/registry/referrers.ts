import { digestHex, sha256, type Digest } from "../core/digest.js";
import { isOvmsError } from "../core/errors.js";
import { MediaType } from "../core/media-types.js";
import type { Descriptor, ImageIndex, ImageManifest } from "../core/oci.js";
import { MAX_MANIFEST, readAll } from "./manifest-bytes.js";
import type { TransportResponse } from "./transport.js";

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

/**
 * referrersFromApi reads the answer to `GET /v2/<name>/referrers/<digest>`: the list (filtered
 * here when the registry did not apply the artifactType filter), or undefined, its body
 * drained, when the answer is not an index (a 404: the registry has no Referrers API).
 */
export async function referrersFromApi(
  res: TransportResponse,
  artifactType?: string,
): Promise<Descriptor[] | undefined> {
  const type = String(res.headers["content-type"] ?? "");
  if (res.statusCode !== 200 || !type.startsWith(MediaType.OciIndex)) {
    await res.body.dump();
    return undefined;
  }
  const index = JSON.parse((await readAll(res.body, MAX_MANIFEST)).toString("utf8")) as ImageIndex;
  const applied = String(res.headers["oci-filters-applied"] ?? "")
    .split(",")
    .map((s) => s.trim());
  const list = index.manifests ?? [];
  return applied.includes("artifactType") ? list : filterReferrers(list, artifactType);
}

/** IndexedRepository is what editReferrersIndex needs of a repository: read and write manifests. */
export interface IndexedRepository {
  fetchManifest(reference: string): Promise<{ manifest: ImageManifest | ImageIndex }>;
  pushManifest(desc: Descriptor, bytes: Buffer, tag?: string): Promise<void>;
}

/**
 * editReferrersIndex applies `edit` to the referrers index of `subject` (tag `sha256-<hex>`,
 * missing = empty) and pushes it back when it changed: how pushing or deleting a referrer is
 * recorded on a registry without the Referrers API.
 */
export async function editReferrersIndex(
  repo: IndexedRepository,
  subject: Digest,
  edit: (list: Descriptor[]) => void,
): Promise<void> {
  const tag = referrersTag(subject);
  let index = emptyReferrersIndex();
  try {
    index = (await repo.fetchManifest(tag)).manifest as ImageIndex;
  } catch (e) {
    if (!isOvmsError(e, "MANIFEST_UNKNOWN") && !isOvmsError(e, "NOT_FOUND")) throw e;
  }
  const before = JSON.stringify(index.manifests ?? []);
  index.manifests = [...(index.manifests ?? [])];
  edit(index.manifests);
  if (JSON.stringify(index.manifests) === before) return;
  const bytes = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: index.manifests }),
  );
  await repo.pushManifest(
    { mediaType: MediaType.OciIndex, digest: sha256(bytes), size: bytes.length },
    bytes,
    tag,
  );
}
