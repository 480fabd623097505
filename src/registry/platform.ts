import { OvmsError } from "../core/errors.js";
import { goArch, type Descriptor, type ImageIndex, type Platform } from "../core/oci.js";

/** parsePlatform reads `os/arch[/variant]`, e.g. `linux/amd64`, `linux/arm64/v8`. */
export function parsePlatform(s: string): Platform {
  const parts = s.split("/");
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9._-]+$/i.test(p))) {
    throw new OvmsError("USAGE", `--platform "${s}": expected os/arch[/variant], e.g. linux/amd64`);
  }
  const p: Platform = { os: parts[0], architecture: parts[1] };
  if (parts[2]) p.variant = parts[2];
  return p;
}

/** hostPlatform is the platform of this machine in OCI terms, e.g. linux/amd64. */
export function hostPlatform(): Platform {
  return { os: process.platform === "win32" ? "windows" : process.platform, architecture: goArch() };
}

/** formatPlatform writes `os/arch[/variant]`. */
export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}

/**
 * selectPlatform picks the entry of an index made for `want`: same os and architecture, and
 * the same variant when one is asked for. No match is an error listing what the index has.
 */
export function selectPlatform(index: ImageIndex, want: Platform, what: string): Descriptor {
  const candidates = (index.manifests ?? []).filter((d) => d.platform);
  const hit = candidates.find(
    (d) =>
      d.platform!.os === want.os &&
      d.platform!.architecture === want.architecture &&
      (!want.variant || d.platform!.variant === want.variant),
  );
  if (hit) return hit;
  const have = candidates.map((d) => formatPlatform(d.platform!)).join(", ") || "no platform entries";
  throw new OvmsError(
    "NO_MATCHING_PLATFORM",
    `${what}: no manifest for ${formatPlatform(want)} in the index (it has: ${have}); choose one with --platform`,
  );
}
