import type { Digest } from "./digest.js";

/**
 * OCI image-spec v1.1 shapes OVMS reads and writes.
 * https://github.com/opencontainers/image-spec/blob/v1.1.0/descriptor.md
 */
export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  annotations?: Record<string, string>;
  artifactType?: string;
  platform?: Platform;
  urls?: string[];
  data?: string;
}

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
}

/** ImageManifest is an OCI image manifest (an OVMS artifact is one, with artifactType set). */
export interface ImageManifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** ImageIndex is an OCI image index (multi-arch lists, referrers, the store's index.json). */
export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** goArch maps a Node.js `process.arch` to the OCI/Go architecture name. */
export function goArch(nodeArch: string = process.arch): string {
  return (
    ({ x64: "amd64", ia32: "386", arm64: "arm64", arm: "arm" } as Record<string, string>)[nodeArch] ??
    nodeArch
  );
}
