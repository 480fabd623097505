import { isDigest } from "../../core/digest.js";
import { OvmsError } from "../../core/errors.js";
import { Annotation, LayerMediaType, MediaType, type LayerRole } from "../../core/media-types.js";
import type { Descriptor, ImageManifest } from "../../core/oci.js";
import { normalizeReference } from "../../core/reference.js";
import type {
  ArtifactInfo,
  ArtifactLayer,
  ArtifactList,
  ArtifactSignature,
} from "../../api/types.generated.js";
import type { Store } from "../../store/store.js";
import {
  artifactSize,
  isOvmsManifest,
  loadArtifactByDescriptor,
  type Artifact,
} from "../../artifact/artifact.js";
import type { Policy } from "../../sign/policy.js";
import { verifySignatures } from "../../sign/verify.js";

const ROLES = Object.entries(LayerMediaType) as [LayerRole, string][];

/**
 * ArtifactCatalog answers `GET /artifacts` and `GET /artifacts/{reference}`: the store's named
 * OVMS artifacts, read-only, with their layers and sizes and their signature status as far as
 * this daemon can judge it (RFC §8.2): verified against the keys of its policy when it has
 * one, else only counted ("signed", not verified). It never writes to the store.
 */
export class ArtifactCatalog {
  constructor(
    private readonly store: Store,
    private readonly policy?: Policy,
  ) {}

  /** list is every named OVMS artifact, sorted by reference; other named manifests are left out. */
  async list(): Promise<ArtifactList> {
    const out: ArtifactInfo[] = [];
    for (const e of await this.store.entries()) {
      if (!e.reference) continue;
      const oci = await this.store.readJson<ImageManifest>(e.descriptor.digest).catch(() => undefined);
      if (!oci?.config || !isOvmsManifest(oci)) continue;
      // One broken artifact must not hide the others: it is left out of the list (inspect names its problem).
      const a = await loadArtifactByDescriptor(this.store, e.descriptor, e.reference).catch(() => undefined);
      if (a) out.push(await this.describe(a, e.reference));
    }
    return { artifacts: out.sort((x, y) => x.reference.localeCompare(y.reference)) };
  }

  /** get is one artifact by reference (normalized) or manifest digest; ARTIFACT_NOT_FOUND when the store lacks it. */
  async get(reference: string): Promise<ArtifactInfo> {
    let desc: Descriptor;
    try {
      desc = await this.store.resolve(reference);
    } catch (e) {
      if ((e as OvmsError).code === "NOT_FOUND")
        throw new OvmsError("ARTIFACT_NOT_FOUND", `${reference}: not in the store`, { cause: e });
      throw e;
    }
    const name =
      desc.annotations?.[Annotation.RefName] ??
      (isDigest(reference) ? reference : normalizeReference(reference));
    return this.describe(await loadArtifactByDescriptor(this.store, desc, name), name);
  }

  private async describe(a: Artifact, reference: string): Promise<ArtifactInfo> {
    const m = a.ovms;
    const info: ArtifactInfo = {
      reference,
      digest: a.descriptor.digest,
      name: m.name,
      version: m.version,
      size: artifactSize(a),
      ram_snapshot: !!m.ramSnapshot,
      layers: a.oci.layers.map(layerOf),
      signature: await this.signature(a.descriptor),
    };
    if (m.metadata?.description) info.description = m.metadata.description;
    const created = m.metadata?.created ?? a.oci.annotations?.[Annotation.Created];
    if (created) info.created = created;
    if (m.resources?.memory !== undefined) info.memory_bytes = m.resources.memory;
    if (m.resources?.vcpus !== undefined) info.vcpus = m.resources.vcpus;
    const machine = m.runtimeHints?.machine;
    if (machine === "microvm" || machine === "q35") info.machine = machine;
    if (m.runtimeHints?.coldStartTargetMs !== undefined)
      info.cold_start_target_ms = m.runtimeHints.coldStartTargetMs;
    if (m.devices?.length)
      info.devices = m.devices.map((d) => ({ type: d.type, name: d.name, size: d.size }));
    if (a.oci.subject) info.subject = a.oci.subject.digest;
    return info;
  }

  /** signature verifies with the policy's keys when there is a policy; without one it can only count. */
  private async signature(desc: Descriptor): Promise<ArtifactSignature> {
    const keys = this.policy ? [...this.policy.keys.values()] : [];
    if (!keys.length) {
      const n = (await this.store.referrers(desc, MediaType.SigstoreBundle)).length;
      return { status: n ? "signed" : "unsigned", signatures: n };
    }
    const r = await verifySignatures(this.store, desc, keys);
    if (!r.signatures.length) return { status: "unsigned", signatures: 0 };
    const ok = r.signatures.filter((s) => s.ok);
    if (!ok.length) return { status: "invalid", signatures: r.signatures.length };
    const seen = new Map(ok.map((s) => [s.key!, { name: s.keyName ?? s.key!, fingerprint: s.key! }]));
    return { status: "verified", signatures: r.signatures.length, keys: [...seen.values()] };
  }
}

function layerOf(l: Descriptor): ArtifactLayer {
  const annotated = l.annotations?.[Annotation.Role] as LayerRole | undefined;
  const role = annotated ?? ROLES.find(([, t]) => t === l.mediaType)?.[0] ?? "other";
  const out: ArtifactLayer = { role, media_type: l.mediaType, digest: l.digest, size: l.size };
  const format = l.annotations?.[Annotation.Format];
  if (format) out.format = format;
  return out;
}
