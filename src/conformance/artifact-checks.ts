import { createReadStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import { Writable } from "node:stream";
import { Ajv2020, type ErrorObject } from "ajv/dist/2020.js";
import * as ajvFormats from "ajv-formats";
import { Hasher, isDigest, type Digest } from "../core/digest.js";
import { Annotation, LayerMediaType, MediaType, type LayerRole } from "../core/media-types.js";
import { manifestSchema } from "../core/validate.js";
import { Skip, expect, type Check } from "./check.js";
import type { ArtifactContext } from "./artifact-source.js";
import { decodeRamsnap } from "./ramsnap-decode.js";

/**
 * The Artifact level (rfc §9) for §2 and §3: the OVMS manifest against the schema and each
 * semantic rule S1–S7, the OCI mapping (artifactType, config, layer order, annotations,
 * subject), and every blob against its descriptor (§8.1). The checks read both manifests as
 * plain JSON: a producer's artifact is judged by the text of the RFC, not by the reference
 * implementation's reader.
 */

type C = Check<ArtifactContext>;
const must = { level: "artifact" as const, requirement: "MUST" as const };

type AddFormats = (a: Ajv2020) => unknown;
const fmt = ajvFormats as unknown as { default: AddFormats | { default: AddFormats } };
const addFormats: AddFormats = typeof fmt.default === "function" ? fmt.default : fmt.default.default;
let schemaValidator: ReturnType<Ajv2020["compile"]> | undefined;

/** schemaProblems validates a document against schemas/manifest.v1.json (JSON Schema 2020-12). */
function schemaProblems(doc: unknown): string[] {
  if (!schemaValidator) {
    const ajv = new Ajv2020({ allErrors: true, strict: false });
    addFormats(ajv);
    schemaValidator = ajv.compile(manifestSchema);
  }
  if (schemaValidator(doc)) return [];
  return (schemaValidator.errors ?? []).map((e: ErrorObject) => {
    const extra = "additionalProperty" in e.params ? `/${String(e.params.additionalProperty)}` : "";
    return `${e.instancePath || ""}${extra || ""} ${e.message ?? e.keyword}`.trim();
  });
}

/** disks is the config's diskLayers as an array (empty when absent or not an array). */
function disks(m: any): any[] {
  return Array.isArray(m?.diskLayers) ? m.diskLayers : [];
}

/** parts lists the parts an OVMS manifest names, in the layer order of §3.3. */
export function parts(
  m: any,
): { role: LayerRole; ref: unknown; path: string; size?: unknown; format?: unknown }[] {
  const out: { role: LayerRole; ref: unknown; path: string; size?: unknown; format?: unknown }[] = [];
  if (m?.kernel) out.push({ role: "kernel", ref: m.kernel.ref, path: "kernel", size: m.kernel.size });
  if (m?.initrd) out.push({ role: "initrd", ref: m.initrd.ref, path: "initrd", size: m.initrd.size });
  disks(m).forEach((d, i) =>
    out.push({ role: "disk", ref: d?.ref, path: `diskLayers[${i}]`, format: d?.format }),
  );
  if (m?.ramSnapshot) {
    out.push({ role: "ramsnap", ref: m.ramSnapshot.ref, path: "ramSnapshot", size: m.ramSnapshot.size });
    (Array.isArray(m.ramSnapshot.parents) ? m.ramSnapshot.parents : []).forEach((p: any, i: number) =>
      out.push({ role: "ramsnap", ref: p?.ref, path: `ramSnapshot.parents[${i}]`, size: p?.size }),
    );
  }
  return out;
}

/** MANIFEST_CHECKS are §2: the schema and the semantic rules. */
export const MANIFEST_CHECKS: C[] = [
  {
    ...must,
    id: "artifact.manifest.schema",
    section: "§2.1",
    title: "the OVMS manifest validates against schemas/manifest.v1.json",
    async run(a) {
      const p = schemaProblems(a.needConfig());
      expect(!p.length, p.join("\n"));
    },
  },
  {
    ...must,
    id: "artifact.manifest.s1",
    section: "§2.4 S1",
    title: "the base disk layer has no parent",
    async run(a) {
      const d = disks(a.needConfig());
      if (!d.length) throw new Skip("no disk layers");
      expect(d[0]?.parent === undefined, `diskLayers[0].parent is ${d[0]?.parent}`);
    },
  },
  {
    ...must,
    id: "artifact.manifest.s2",
    section: "§2.4 S2",
    title: "every diff layer is qcow2",
    async run(a) {
      const bad = disks(a.needConfig())
        .map((d, i) => (i > 0 && d?.format !== "qcow2" ? `diskLayers[${i}].format is ${d?.format}` : ""))
        .filter(Boolean);
      expect(!bad.length, bad.join("; "));
    },
  },
  {
    ...must,
    id: "artifact.manifest.s3",
    section: "§2.4 S3, §2.2",
    title: "every diff layer names the layer before it as parent (producers always set it)",
    async run(a) {
      const d = disks(a.needConfig());
      const bad = d
        .map((l, i) =>
          i === 0
            ? ""
            : l?.parent !== d[i - 1]?.ref
              ? `diskLayers[${i}].parent is ${l?.parent ?? "missing"}, want ${d[i - 1]?.ref}`
              : "",
        )
        .filter(Boolean);
      expect(!bad.length, bad.join("; "));
    },
  },
  {
    ...must,
    id: "artifact.manifest.s4-s5",
    section: "§2.4 S4–S5",
    title: "device names are unique; an ivshmem size is a power of two of at least 4096",
    async run(a) {
      const devices = Array.isArray(a.needConfig().devices) ? a.config.devices : [];
      const bad: string[] = [];
      const seen = new Set<string>();
      devices.forEach((d: any, i: number) => {
        if (seen.has(d?.name)) bad.push(`devices[${i}].name "${d?.name}" is used twice (S4)`);
        seen.add(d?.name);
        const n = d?.size;
        if (d?.type === "ivshmem" && !(Number.isSafeInteger(n) && n >= 4096 && (n & (n - 1)) === 0))
          bad.push(`devices[${i}].size ${n} is not a power of two ≥ 4096 (S5)`);
      });
      expect(!bad.length, bad.join("; "));
    },
  },
  {
    ...must,
    id: "artifact.manifest.s6",
    section: "§2.4 S6",
    title: "every ref is a layer with the media type and ovms.role of its part; sizes and formats agree",
    async run(a) {
      const bad: string[] = [];
      for (const p of parts(a.needConfig())) {
        const l = a.layer(p.ref);
        if (!l) {
          bad.push(`${p.path}.ref ${p.ref} is not a layer of the OCI manifest`);
          continue;
        }
        if (l.mediaType !== LayerMediaType[p.role])
          bad.push(`${p.path}: layer media type ${l.mediaType}, want ${LayerMediaType[p.role]}`);
        if (l.annotations?.[Annotation.Role] !== p.role)
          bad.push(`${p.path}: ovms.role ${l.annotations?.[Annotation.Role]}, want ${p.role}`);
        if (p.role !== "disk" && p.size !== undefined && p.size !== l.size)
          bad.push(`${p.path}.size ${p.size}, the layer's is ${l.size}`);
        if (p.role === "disk" && l.annotations?.[Annotation.Format] !== p.format)
          bad.push(`${p.path}.format ${p.format}, ovms.format says ${l.annotations?.[Annotation.Format]}`);
      }
      expect(!bad.length, bad.join("; "));
    },
  },
  {
    ...must,
    id: "artifact.manifest.s7",
    section: "§2.4 S7",
    title: "a RAM snapshot's metadata agrees with resources and the disk chain",
    async run(a) {
      const m = a.needConfig();
      if (!m.ramSnapshot) throw new Skip("no RAM snapshot");
      const snap = await a.once("ramsnap", () => decodeRamsnap(a, m.ramSnapshot.ref));
      const meta = snap.metadata;
      if (!meta)
        throw new Skip(`the RAM snapshot's metadata cannot be read: ${snap.problems.layout.join("; ")}`);
      const bad: string[] = [];
      if (m.resources?.memory !== meta.memoryBytes)
        bad.push(`resources.memory ${m.resources?.memory}, metadata.memoryBytes ${meta.memoryBytes}`);
      if (m.resources?.vcpus !== meta.vcpus)
        bad.push(`resources.vcpus ${m.resources?.vcpus}, metadata.vcpus ${meta.vcpus}`);
      const refs = disks(m).map((d) => d?.ref);
      if (JSON.stringify(refs) !== JSON.stringify(meta.diskLayers))
        bad.push(`disk refs ${JSON.stringify(refs)}, metadata.diskLayers ${JSON.stringify(meta.diskLayers)}`);
      expect(!bad.length, bad.join("; "));
    },
  },
  {
    ...must,
    requirement: "SHOULD",
    id: "artifact.manifest.platform",
    section: "§2.2",
    title: "metadata.platform is set",
    async run(a) {
      expect(a.needConfig().metadata?.platform?.arch, "metadata.platform is not set");
    },
  },
];

/** OCI_CHECKS are §3.2–§3.5 and §8.1. */
export const OCI_CHECKS: C[] = [
  {
    ...must,
    id: "artifact.oci.manifest",
    section: "§3.2",
    title: "an OCI image manifest: schemaVersion 2, the OCI manifest media type",
    async run(a) {
      expect(a.oci?.schemaVersion === 2, `schemaVersion is ${a.oci?.schemaVersion}`);
      expect(a.oci?.mediaType === MediaType.OciManifest, `mediaType is ${a.oci?.mediaType}`);
    },
  },
  {
    ...must,
    id: "artifact.oci.artifact-type",
    section: "§3.2",
    title: `artifactType is ${MediaType.OvmsManifest}`,
    async run(a) {
      expect(
        a.oci?.artifactType === MediaType.OvmsManifest,
        `artifactType is ${a.oci?.artifactType ?? "missing"}`,
      );
    },
  },
  {
    ...must,
    id: "artifact.oci.config",
    section: "§3.2",
    title: "the config is the OVMS manifest: its media type, present, digest and size verified",
    async run(a) {
      const c = a.oci?.config;
      expect(c?.mediaType === MediaType.OvmsManifest, `config.mediaType is ${c?.mediaType}`);
      expect(a.config !== undefined, `the config cannot be read: ${a.configError}`);
      const size = isDigest(c.digest) ? await a.blobSize(c.digest) : undefined;
      expect(size === c.size, `config.size ${c.size}, the blob has ${size}`);
    },
  },
  {
    ...must,
    id: "artifact.oci.layers",
    section: "§3.3",
    title: "layers in order (kernel, initrd, disks base first, ramsnap), each part once, nothing else",
    async run(a) {
      const want = parts(a.needConfig()).map((p) => p.ref);
      const got = a.layers.map((l) => l.digest);
      expect(
        JSON.stringify(got) === JSON.stringify(want),
        `layers are [${got.join(", ")}], the manifest's parts in order are [${want.join(", ")}]`,
      );
    },
  },
  {
    ...must,
    id: "artifact.oci.layer-annotations",
    section: "§3.3",
    title: "every layer carries ovms.role and org.opencontainers.image.title; disks ovms.format",
    async run(a) {
      const bad: string[] = [];
      a.layers.forEach((l, i) => {
        const role = l.annotations?.[Annotation.Role];
        if (!role) bad.push(`layers[${i}] has no ovms.role`);
        if (!l.annotations?.[Annotation.Title]) bad.push(`layers[${i}] has no ${Annotation.Title}`);
        if (role === "disk" && !["qcow2", "raw"].includes(l.annotations?.[Annotation.Format] ?? ""))
          bad.push(`layers[${i}] has no ovms.format`);
      });
      expect(!bad.length, bad.join("; "));
    },
  },
  {
    ...must,
    id: "artifact.oci.annotations",
    section: "§3.4",
    title: "the manifest's annotations carry ovms.name and the version",
    async run(a) {
      const m = a.needConfig();
      const an = a.oci?.annotations ?? {};
      expect(an["ovms.name"] === m.name, `ovms.name is ${an["ovms.name"]}, the manifest's name is ${m.name}`);
      expect(
        an[Annotation.Version] === m.version,
        `${Annotation.Version} is ${an[Annotation.Version]}, the manifest's version is ${m.version}`,
      );
    },
  },
  {
    ...must,
    requirement: "SHOULD",
    id: "artifact.oci.created",
    section: "§3.4",
    title: "org.opencontainers.image.created is metadata.created",
    async run(a) {
      const created = a.needConfig().metadata?.created;
      if (!created) throw new Skip("metadata.created is not set");
      expect(
        a.oci?.annotations?.[Annotation.Created] === created,
        `${Annotation.Created} is ${a.oci?.annotations?.[Annotation.Created]}`,
      );
    },
  },
  {
    ...must,
    id: "artifact.oci.subject",
    section: "§3.2, §3.5",
    title: "subject only on a snapshot artifact, with mediaType, digest and size",
    async run(a) {
      const s = a.oci?.subject;
      const snapshot = !!a.needConfig().ramSnapshot;
      if (!snapshot) {
        expect(s === undefined, "an artifact without a RAM snapshot has a subject");
        return;
      }
      expect(s, "a snapshot artifact has no subject (§5.8)");
      expect(
        typeof s.mediaType === "string" && isDigest(s.digest) && Number.isSafeInteger(s.size),
        `subject ${JSON.stringify(s)} lacks mediaType, digest or size`,
      );
    },
  },
  {
    ...must,
    id: "artifact.blobs",
    section: "§8.1",
    title: "every layer blob is there with its descriptor's size and digest",
    async run(a) {
      const bad: string[] = [];
      let bytes = 0;
      for (const l of a.layers) {
        if (!isDigest(l.digest)) {
          bad.push(`a layer's digest ${l.digest} is not a sha256 digest`);
          continue;
        }
        try {
          const h = new Hasher({ digest: l.digest as Digest, size: l.size, what: `layer ${l.digest}` });
          await pipeline(
            createReadStream(a.blobPath(l.digest as Digest)),
            h,
            new Writable({ write: (_c, _e, cb) => cb() }),
          );
          bytes += l.size;
        } catch (e) {
          bad.push((e as Error).message);
        }
      }
      expect(!bad.length, bad.join("; "));
      return { measured: { layers: a.layers.length, bytes } };
    },
  },
];
