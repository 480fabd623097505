import { OvmsError } from "../core/errors.js";
import { MediaType, isOvmsManifest } from "../core/media-types.js";
import type { Descriptor, ImageManifest } from "../core/oci.js";
import type { OvmsManifest } from "../core/manifest.generated.js";
import { validateArtifact } from "../core/validate.js";
import type { Store } from "../store/store.js";

export { isOvmsManifest };

/** Artifact is an OVMS artifact as read from a store: both manifests and where they came from. */
export interface Artifact {
  /** The reference it was resolved from, as given. */
  reference: string;
  /** Descriptor of the OCI manifest. */
  descriptor: Descriptor;
  oci: ImageManifest;
  ovms: OvmsManifest;
}

/**
 * loadArtifact resolves `reference` in the store and returns both manifests, validated: a
 * manifest that is not an OVMS artifact, or whose parts disagree, is refused with every
 * problem named.
 */
export async function loadArtifact(store: Store, reference: string): Promise<Artifact> {
  const descriptor = await store.resolve(reference);
  return loadArtifactByDescriptor(store, descriptor, reference);
}

/** loadArtifactByDescriptor is loadArtifact for an already-resolved manifest descriptor. */
export async function loadArtifactByDescriptor(
  store: Store,
  descriptor: Descriptor,
  reference: string,
): Promise<Artifact> {
  return checkedArtifact(
    store,
    descriptor,
    await store.readJson<ImageManifest>(descriptor.digest),
    reference,
  );
}

/**
 * checkedArtifact validates `oci`, the manifest `descriptor` names (read from the store or
 * about to be written to it), and the OVMS config it carries, which must be in the store.
 */
export async function checkedArtifact(
  store: Store,
  descriptor: Descriptor,
  oci: ImageManifest,
  reference: string,
): Promise<Artifact> {
  if (oci.mediaType === MediaType.OciIndex || !oci.config) {
    throw new OvmsError(
      "NOT_AN_ARTIFACT",
      `${reference}: ${descriptor.digest} is an index, not an OVMS artifact manifest`,
    );
  }
  if (!isOvmsManifest(oci)) {
    throw new OvmsError(
      "NOT_AN_ARTIFACT",
      `${reference}: not an OVMS artifact (artifactType ${oci.artifactType ?? "unset"}, config ${oci.config.mediaType})`,
    );
  }
  const config = await store.readJson<unknown>(oci.config.digest);
  const ovms = validateArtifact(oci, config, `${reference} (config ${oci.config.digest})`);
  return { reference, descriptor, oci, ovms };
}

/** artifactSize is the sum of the manifest, config and layer sizes. */
export function artifactSize(a: Artifact): number {
  return a.descriptor.size + a.oci.config.size + a.oci.layers.reduce((n, l) => n + l.size, 0);
}
