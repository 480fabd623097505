import type { BootstrapConfig } from "../../core/bootstrap.js";
import type { Digest } from "../../core/digest.js";
import { OvmsError } from "../../core/errors.js";
import type { OvmsManifest } from "../../core/manifest.generated.js";
import type { Descriptor, Platform } from "../../core/oci.js";
import { formatReference, parseReference } from "../../core/reference.js";

/** ConvertOptions are what `ovm convert` is asked, beyond its source. */
export interface ConvertOptions {
  /** The reference to tag the artifact with (`-t`). */
  tag: string;
  /** The artifact's `name` (default: the tag's repository). */
  name?: string;
  /** The image platform to convert (default linux/amd64, the only one v0.1 runs). */
  platform?: Platform;
  /** Free space beyond the content in the root filesystem (default 256 MiB). */
  sizeBuffer?: number;
  /** The largest root filesystem to make (default 64 GiB). */
  maxSize?: number;
  /** Another generic kernel or OVMS-Init initrd than the built ones. */
  kernel?: string;
  initrd?: string;
  /** The artifact's default guest memory (bytes) and vCPUs. */
  memory?: number;
  cpus?: number;
  /** progress is told each long step as a line for people. */
  progress?: (line: string) => void;
  /** signal stops the conversion (CANCELLED), leaving nothing half-made and naming nothing. */
  signal?: AbortSignal;
}

/** NotCarried is a field of a source that the artifact cannot hold, and why. */
export interface NotCarried {
  /** Where it is in the source, as a JSON path (`vm.hypervisor.path`). */
  field: string;
  value: unknown;
  reason: string;
}

/** Carried is a field of a source and where it went in the artifact. */
export interface Carried {
  field: string;
  to: string;
  note?: string;
}

/** ConvertResult is what a conversion made and what it left out. */
export interface ConvertResult {
  reference: string;
  descriptor: Descriptor;
  manifest: OvmsManifest;
  source: { kind: "image" | "vm-config"; name: string; digest?: Digest };
  bootstrap?: BootstrapConfig;
  /** For an image: each layer, and whether the cache had it already. */
  layers?: { digest: Digest; diffId: Digest; cached: boolean; bytes: number; entries: number }[];
  /** For an image: the root filesystem made. */
  disk?: { contentBytes: number; sizeBytes: number; paths: number };
  /** For a `vm` config: what was carried over, and what not (with the reason). */
  carried?: Carried[];
  notCarried?: NotCarried[];
  /** Milliseconds per step. */
  timings: Record<string, number>;
}

/**
 * artifactIdentity reads `-t`: a tag reference (no digest), giving the artifact's normalized
 * reference, its name (the repository, or `opts.name`) and its version (the tag).
 */
export function artifactIdentity(opts: Pick<ConvertOptions, "tag" | "name">): {
  name: string;
  version: string;
  reference: string;
} {
  const ref = parseReference(opts.tag);
  if (ref.digest || !ref.tag)
    throw new OvmsError("INVALID_REFERENCE", `${opts.tag}: -t needs a tag reference, not a digest`);
  return {
    name: opts.name ?? ref.repository,
    version: ref.tag,
    reference: formatReference({ ...ref, digest: undefined }),
  };
}

/**
 * createdTime is the one time a conversion stamps on everything without a time of its own:
 * `SOURCE_DATE_EPOCH` when set (reproducible-builds.org), else the source's own creation time,
 * else the epoch. Never the clock: the same source must give the same bytes.
 */
export function createdTime(sourceCreated?: string, env: NodeJS.ProcessEnv = process.env): number {
  const epoch = env.SOURCE_DATE_EPOCH;
  if (epoch && /^\d+$/.test(epoch)) return Number(epoch);
  const t = sourceCreated ? Date.parse(sourceCreated) : NaN;
  return Number.isFinite(t) && t > 0 ? Math.floor(t / 1000) : 0;
}
