/**
 * Media types of OVMS artifacts and the OCI types they travel in.
 * See rfc/ovms-v0.1.md §3 and https://github.com/opencontainers/image-spec/blob/v1.1.0/media-types.md
 */
import type { ImageManifest } from "./oci.js";

export const MediaType = {
  /** The OVMS manifest (the OCI config blob) and the OCI artifactType. */
  OvmsManifest: "application/vnd.ovms.manifest.v1+json",
  Kernel: "application/vnd.ovms.kernel.v1",
  Initrd: "application/vnd.ovms.initrd.v1",
  /** Disk layers are tars holding one disk image; the format is in the `ovms.format` annotation. */
  DiskLayer: "application/vnd.oci.image.layer.v1.tar",
  RamSnapshot: "application/vnd.ovms.ramsnap.v1+lz4",
  /** The bootstrap config of a containerMode artifact (schemas/bootstrap.v1.json, rfc §2.5). */
  Bootstrap: "application/vnd.ovms.bootstrap.config.v1+json",
  /** Signatures: a sigstore bundle (see docs/signing). */
  SigstoreBundle: "application/vnd.dev.sigstore.bundle.v0.3+json",
  OciManifest: "application/vnd.oci.image.manifest.v1+json",
  OciIndex: "application/vnd.oci.image.index.v1+json",
  OciEmpty: "application/vnd.oci.empty.v1+json",
  DockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  DockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
} as const;

/** LayerRole is what one OCI layer of an OVMS artifact is for (annotation `ovms.role`). */
export type LayerRole = "kernel" | "initrd" | "disk" | "bootstrap" | "ramsnap";

/** LayerMediaType is the media type a layer of each role travels as (rfc §3.3). */
export const LayerMediaType: Readonly<Record<LayerRole, string>> = {
  kernel: MediaType.Kernel,
  initrd: MediaType.Initrd,
  disk: MediaType.DiskLayer,
  bootstrap: MediaType.Bootstrap,
  ramsnap: MediaType.RamSnapshot,
};

/** Annotation keys OVMS sets on OCI descriptors and manifests. */
export const Annotation = {
  /** Disk image format of a disk layer: qcow2 | raw. */
  Format: "ovms.format",
  /** Role of a layer: kernel | initrd | disk | bootstrap | ramsnap. */
  Role: "ovms.role",
  RefName: "org.opencontainers.image.ref.name",
  Title: "org.opencontainers.image.title",
  Created: "org.opencontainers.image.created",
  Version: "org.opencontainers.image.version",
  /**
   * Origin is set by a pull on the store's index.json entry of what it named: the registry
   * repository the artifact came from (`127.0.0.1:5000/demo/vm`). A store entry without it was
   * made on this host (built, snapshotted, imported): what a policy's `local` rule decides on.
   */
  Origin: "ovms.origin",
  /** BaseDigest is, on a converted artifact, the digest of the container image manifest it was made from. */
  BaseDigest: "org.opencontainers.image.base.digest",
  /** BaseName is, on a converted artifact, the image reference it was converted from. */
  BaseName: "org.opencontainers.image.base.name",
} as const;

/** ManifestMediaTypes is what a client accepts when it fetches a manifest. */
export const ManifestMediaTypes = [
  MediaType.OciManifest,
  MediaType.OciIndex,
  MediaType.DockerManifest,
  MediaType.DockerManifestList,
] as const;

/** isOvmsManifest tells whether an OCI manifest carries an OVMS artifact. */
export function isOvmsManifest(m: ImageManifest): boolean {
  return m.artifactType === MediaType.OvmsManifest || m.config?.mediaType === MediaType.OvmsManifest;
}

/** hasRamSnapshotLayer tells whether a manifest (as read, not yet validated) has a RAM snapshot layer. */
export function hasRamSnapshotLayer(m: Partial<ImageManifest>): boolean {
  return Array.isArray(m.layers) && m.layers.some((l) => l?.mediaType === MediaType.RamSnapshot);
}
