import { OvmsError, ValidationError, type ValidationProblem } from "../core/errors.js";
import { Annotation, MediaType } from "../core/media-types.js";
import type { Descriptor, ImageManifest } from "../core/oci.js";
import type { OvmsManifest } from "../core/manifest.generated.js";
import { checkManifest } from "../core/validate.js";
import type { Digest } from "../core/digest.js";
import type { Store } from "../store/store.js";

/** LayerRole is what one OCI layer of an OVMS artifact is for (annotation `ovms.role`). */
export type LayerRole = "kernel" | "initrd" | "disk" | "ramsnap";

const ROLE_MEDIA_TYPE: Record<LayerRole, string> = {
  kernel: MediaType.Kernel,
  initrd: MediaType.Initrd,
  disk: MediaType.DiskLayer,
  ramsnap: MediaType.RamSnapshot,
};

/** Artifact is an OVMS artifact as read from a store: both manifests and where they came from. */
export interface Artifact {
  /** The reference it was resolved from, as given. */
  reference: string;
  /** Descriptor of the OCI manifest. */
  descriptor: Descriptor;
  oci: ImageManifest;
  ovms: OvmsManifest;
}

/** layerDescriptor makes the OCI descriptor of one part of an OVMS artifact. */
export function layerDescriptor(
  role: LayerRole,
  blob: { digest: Digest; size: number },
  title: string,
  extra: Record<string, string> = {},
): Descriptor {
  return {
    mediaType: ROLE_MEDIA_TYPE[role],
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
  m.annotations = annotations;
  return m;
}

/** isOvmsManifest tells whether an OCI manifest carries an OVMS artifact. */
export function isOvmsManifest(m: ImageManifest): boolean {
  return m.artifactType === MediaType.OvmsManifest || m.config?.mediaType === MediaType.OvmsManifest;
}

/**
 * checkArtifact checks that an OCI manifest and its OVMS config agree: every `ref` of the
 * OVMS manifest is a layer of the right media type and role, with sizes that match.
 */
export function checkArtifact(oci: ImageManifest, ovms: OvmsManifest): ValidationProblem[] {
  const out: ValidationProblem[] = [];
  const byDigest = new Map(oci.layers.map((l) => [l.digest, l]));
  const want = (path: string, ref: string, role: LayerRole, size?: number) => {
    const l = byDigest.get(ref as Digest);
    if (!l) return out.push({ path, message: `${ref} is not a layer of the OCI manifest` });
    if (l.mediaType !== ROLE_MEDIA_TYPE[role]) {
      out.push({
        path,
        message: `layer ${ref} has media type ${l.mediaType}, want ${ROLE_MEDIA_TYPE[role]}`,
      });
    }
    if (size !== undefined && role !== "disk" && l.size !== size) {
      out.push({ path, message: `size ${size} does not match the layer's ${l.size}` });
    }
    return 0;
  };
  want("kernel.ref", ovms.kernel.ref, "kernel", ovms.kernel.size);
  if (ovms.initrd) want("initrd.ref", ovms.initrd.ref, "initrd", ovms.initrd.size);
  (ovms.diskLayers ?? []).forEach((d, i) => {
    want(`diskLayers[${i}].ref`, d.ref, "disk");
    const l = byDigest.get(d.ref as Digest);
    const fmt = l?.annotations?.[Annotation.Format];
    if (l && fmt !== d.format) {
      out.push({
        path: `diskLayers[${i}].format`,
        message: `is ${d.format} but the layer's ovms.format annotation says ${fmt ?? "nothing"}`,
      });
    }
  });
  if (ovms.ramSnapshot) want("ramSnapshot.ref", ovms.ramSnapshot.ref, "ramsnap", ovms.ramSnapshot.size);
  return out;
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
  const oci = await store.readJson<ImageManifest>(descriptor.digest);
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
  const problems = checkManifest(config);
  if (problems.length === 0) problems.push(...checkArtifact(oci, config as OvmsManifest));
  if (problems.length > 0) throw new ValidationError(`${reference} (config ${oci.config.digest})`, problems);
  return { reference, descriptor, oci, ovms: config as OvmsManifest };
}

/** artifactSize is the sum of the manifest, config and layer sizes. */
export function artifactSize(a: Artifact): number {
  return a.descriptor.size + a.oci.config.size + a.oci.layers.reduce((n, l) => n + l.size, 0);
}
