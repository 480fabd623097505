export * from "./errors.js";
export * from "./error-codes.js";
export * from "./digest.js";
export * from "./reference.js";
export * from "./media-types.js";
export * from "./oci.js";
export * from "./validate.js";
export * from "./bootstrap.js";
export type {
  OvmsManifest,
  Kernel,
  BlobRef,
  DiskLayer,
  RamSnapshot,
  Device,
  Resources,
  Metadata,
  RuntimeHints,
  Platform as ManifestPlatform,
} from "./manifest.generated.js";
export * from "./content.js";
export * from "./size.js";
export * from "./ports.js";
