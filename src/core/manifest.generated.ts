/* Generated from schemas/manifest.v1.json by scripts/gen-types.mjs. Do not edit. */

/**
 * A sha256 content digest: `sha256:` followed by 64 lowercase hex digits.
 */
export type Digest = string;
/**
 * A size in bytes.
 */
export type Size = number;

/**
 * An OVMS v1 manifest: what a runtime needs to boot one virtual machine. Carried as the config blob of an OCI image manifest whose artifactType is application/vnd.ovms.manifest.v1+json. A container image converted to a VM sets `containerMode` and `bootstrap` (rfc §2.5). Unknown members are refused everywhere except under `extensions`, whose keys must be namespaced (reverse-DNS style, e.g. `com.example.tuning`).
 */
export interface OvmsManifest {
  /**
   * Version of this schema; always 1.
   */
  schemaVersion: 1;
  /**
   * Media type of this document.
   */
  mediaType: "application/vnd.ovms.manifest.v1+json";
  /**
   * Repository-style name of the artifact, e.g. example/ubuntu-base.
   */
  name: string;
  /**
   * Version label of the artifact (free text, typically a tag).
   */
  version: string;
  kernel: Kernel;
  initrd?: BlobRef;
  /**
   * Disk layers, base first; each later layer is a copy-on-write diff over the one before it.
   */
  diskLayers?: DiskLayer[];
  ramSnapshot?: RamSnapshot;
  bootstrap?: BlobRef;
  /**
   * Devices the VM needs besides its disks and serial console.
   */
  devices?: Device[];
  network?: Network;
  resources?: Resources;
  metadata?: Metadata;
  runtimeHints?: RuntimeHints;
  /**
   * The artifact runs an OCI container image with the OVMS-Init profile (rfc/ovms-v0.1.md §2.5, §6.6): its disk layers hold the image's root filesystem (ext4), its initrd is OVMS-Init, and `bootstrap` names the image's bootstrap config (entrypoint, cmd, env, working folder, user, exposed ports).
   */
  containerMode?: boolean;
  /**
   * Vendor extensions. Keys are namespaced (reverse-DNS, at least one dot); values are free-form. Runtimes ignore keys they do not know.
   */
  extensions?: {
    [k: string]: unknown;
  };
}
/**
 * The guest kernel (bzImage / vmlinuz) and its command line.
 */
export interface Kernel {
  ref: Digest;
  size?: Size;
  /**
   * Kernel command line.
   */
  args?: string;
}
/**
 * A blob of the artifact, named by the digest of its OCI layer blob.
 */
export interface BlobRef {
  ref: Digest;
  size?: Size;
}
/**
 * One disk layer. `ref` is the digest of the OCI layer (a tar holding one disk image file).
 */
export interface DiskLayer {
  ref: Digest;
  /**
   * Disk image format.
   */
  format: "qcow2" | "raw";
  /**
   * A size in bytes.
   */
  size: number;
  /**
   * A size in bytes.
   */
  virtualSize?: number;
  /**
   * A sha256 content digest: `sha256:` followed by 64 lowercase hex digits.
   */
  parent?: string;
  /**
   * Expose the disk read-only to the guest.
   */
  readOnly?: boolean;
}
/**
 * A RAM snapshot: device state plus guest memory, valid only with the disk layers listed in the same manifest.
 */
export interface RamSnapshot {
  ref: Digest;
  size?: Size;
  compression: "lz4" | "zstd" | "none";
  /**
   * The runtime should decompress the memory into tmpfs ahead of the first start.
   */
  preload_hint?: boolean;
  /**
   * The runtime must lock the preloaded memory in RAM, or refuse to start.
   */
  mlock_required?: boolean;
  /**
   * Layout 2 (rfc §5.9): the RAM snapshot blobs of earlier generations whose memory blocks this one's index refers to instead of storing them again. Each is a layer of the artifact.
   */
  parents?: BlobRef[];
  /**
   * A sha256 content digest: `sha256:` followed by 64 lowercase hex digits.
   */
  indexDigest?: string;
}
/**
 * A declared device.
 */
export interface Device {
  type: "ivshmem";
  /**
   * Name of the device, unique within the manifest.
   */
  name: string;
  /**
   * A size in bytes.
   */
  size: number;
  /**
   * Preferred guest-physical address, hex. Advisory: PCI runtimes place the BAR themselves.
   */
  mmio_addr?: string;
}
/**
 * What the guest expects of the network (rfc §2.2). When present, a runtime gives the instance a network interface (a virtio-net NIC) unless the start request asks for none. Absent: the instance gets a NIC only when the start request asks for one.
 */
export interface Network {
  /**
   * The guest cannot do its job without a NIC: a runtime must refuse a start request that asks for no network. Snapshot artifacts of instances that had a NIC set it, since their device state holds one.
   */
  required?: boolean;
  /**
   * Ports the guest serves, written as the keys of an OCI image config's ExposedPorts: `80/tcp`, `53/udp`, or `8080` (tcp). Informational, as in OCI: publishing a port on the host is the start request's choice.
   */
  exposedPorts?: string[];
}
/**
 * Default resources; a runtime lets the user override them.
 */
export interface Resources {
  /**
   * Guest memory in bytes (at least 16 MiB).
   */
  memory?: number;
  /**
   * Number of virtual CPUs.
   */
  vcpus?: number;
}
export interface Metadata {
  author?: string;
  created?: string;
  description?: string;
  platform?: Platform;
  labels?: {
    [k: string]: string;
  };
}
export interface Platform {
  /**
   * Guest architecture; v0.1 knows only x86_64.
   */
  arch: "x86_64";
  /**
   * Boot through UEFI firmware (not supported in v0.1).
   */
  uefi?: boolean;
}
export interface RuntimeHints {
  /**
   * Runtimes in order of preference; `generic` means any.
   */
  preferredRuntime?: string[];
  /**
   * Target time in milliseconds from start request to running.
   */
  coldStartTargetMs?: number;
  /**
   * Preferred machine model. `microvm` needs no PCI; `q35` is used when a device needs PCI.
   */
  machine?: "microvm" | "q35" | "pc";
}
