import type { Digest } from "../core/digest.js";
import type { OvmsManifest } from "../core/manifest.generated.js";
import type { BootstrapConfig } from "../core/bootstrap.js";
import type { RamsnapMetadata } from "./ramsnap.js";

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
  /** For a containerMode artifact: its bootstrap config, checked (rfc §2.5). */
  bootstrap?: BootstrapConfig;
  /** For a snapshot artifact: the preloaded memory and device state, and the blob's metadata. */
  ramSnapshot?: { memoryFile: string; deviceStateFile: string; metadata: RamsnapMetadata; digest: Digest };
}
