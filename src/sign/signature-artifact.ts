import { sha256, type Digest } from "../core/digest.js";
import { Annotation, MediaType } from "../core/media-types.js";
import type { Descriptor, ImageManifest } from "../core/oci.js";
import { COSIGN_SIGN_PREDICATE } from "./statement.js";

/**
 * The OCI shape of a signature (rfc §3.5, §8.2), as cosign v3 stores a bundle: an image
 * manifest whose artifactType and one layer are the sigstore bundle media type, with the empty
 * config, `subject` = the signed manifest and cosign's annotations, found as a referrer.
 */

/** EMPTY_CONFIG is the OCI empty descriptor: the 2-byte blob `{}` (image-spec manifest.md "Guidance for an Empty Descriptor"). */
export const EMPTY_CONFIG: Descriptor = {
  mediaType: MediaType.OciEmpty,
  digest: sha256(Buffer.from("{}")),
  size: 2,
};

/** BundleAnnotation are the annotations cosign sets on a bundle referrer. */
export const BundleAnnotation = {
  Content: "dev.sigstore.bundle.content",
  PredicateType: "dev.sigstore.bundle.predicateType",
} as const;

/** MAX_BUNDLE is the largest bundle layer a verifier reads (a key-based bundle is about 1 KiB). */
export const MAX_BUNDLE = 1 << 20;

/** signatureManifest is the referrer manifest that carries `bundle` for the manifest `subject`. */
export function signatureManifest(
  subject: Descriptor,
  bundle: { digest: Digest; size: number },
  signedAt: string,
): ImageManifest {
  return {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType: MediaType.SigstoreBundle,
    config: EMPTY_CONFIG,
    layers: [{ mediaType: MediaType.SigstoreBundle, digest: bundle.digest, size: bundle.size }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations: {
      [BundleAnnotation.Content]: "dsse-envelope",
      [BundleAnnotation.PredicateType]: COSIGN_SIGN_PREDICATE,
      [Annotation.Created]: signedAt,
    },
  };
}

/**
 * signatureShapeProblem says why a referrer manifest is not a signature of `subject` in this
 * shape (undefined when it is): artifactType, empty config, exactly one bundle layer of at
 * most MAX_BUNDLE bytes, subject digest.
 */
export function signatureShapeProblem(m: Partial<ImageManifest>, subject: Digest): string | undefined {
  if (m.artifactType !== MediaType.SigstoreBundle && m.config?.mediaType !== MediaType.SigstoreBundle)
    return `artifactType ${m.artifactType ?? "unset"} is not ${MediaType.SigstoreBundle}`;
  if (m.subject?.digest !== subject) return `its subject is ${m.subject?.digest ?? "unset"}, not ${subject}`;
  const layers = Array.isArray(m.layers) ? m.layers : [];
  if (layers.length !== 1) return `it has ${layers.length} layers, want one bundle`;
  const l = layers[0];
  if (l?.mediaType !== MediaType.SigstoreBundle) return `its layer is ${l?.mediaType}, not a sigstore bundle`;
  if (typeof l.size !== "number" || l.size > MAX_BUNDLE || l.size < 0)
    return `its bundle layer is ${l.size} bytes (at most ${MAX_BUNDLE})`;
  return undefined;
}
