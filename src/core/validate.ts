import { Ajv2020, type ErrorObject } from "ajv/dist/2020.js";
import * as ajvFormats from "ajv-formats";
import schema from "../../schemas/manifest.v1.json" with { type: "json" };
import type { Digest } from "./digest.js";
import { OvmsError, ValidationError, type ValidationProblem } from "./errors.js";
import { Annotation, LayerMediaType, type LayerRole } from "./media-types.js";
import type { OvmsManifest } from "./manifest.generated.js";
import type { ImageManifest } from "./oci.js";
import { parseExposedPort } from "./ports.js";

// ajv-formats is CommonJS; under NodeNext its function arrives as `default` (maybe twice wrapped).
type AddFormats = (a: Ajv2020) => unknown;
const fmt = ajvFormats as unknown as { default: AddFormats | { default: AddFormats } };
const addFormats: AddFormats = typeof fmt.default === "function" ? fmt.default : fmt.default.default;

// Compiled on first use: compiling costs ~0.25 s, which every `ovm` start would pay otherwise.
let compiled: ReturnType<Ajv2020["compile"]> | undefined;
function validateSchema(doc: unknown): doc is OvmsManifest {
  if (!compiled) {
    const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true });
    addFormats(ajv);
    compiled = ajv.compile<OvmsManifest>(schema);
  }
  return compiled(doc) as boolean;
}

/** manifestSchema is the JSON Schema (2020-12) of the OVMS manifest, as shipped in schemas/. */
export const manifestSchema: object = schema;

/** jsonPath turns an ajv instancePath (`/diskLayers/1/size`) into `diskLayers[1].size`. */
export function jsonPath(pointer: string, child?: string): string {
  const parts =
    pointer === ""
      ? []
      : pointer
          .slice(1)
          .split("/")
          .map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  if (child !== undefined) parts.push(child);
  let out = "";
  for (const p of parts) {
    if (/^\d+$/.test(p)) out += `[${p}]`;
    else if (/^[A-Za-z_$][\w$]*$/.test(p)) out += out ? `.${p}` : p;
    else out += `[${JSON.stringify(p)}]`;
  }
  return out;
}

/** PATTERN_WORDS says in words what the schema's patterns mean. */
const PATTERN_WORDS: Record<string, string> = {
  "^sha256:[a-f0-9]{64}$": "must be a sha256 digest (sha256: followed by 64 lowercase hex digits)",
  "^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$":
    "must be a lowercase repository name such as example/ubuntu-base",
  "^0x[0-9a-fA-F]{1,16}$": "must be a hex address such as 0x10000000",
  "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$": "must be 1-63 letters, digits, '_', '.' or '-'",
  "^[1-9][0-9]{0,4}(/(tcp|udp))?$": "must be a port and protocol such as 80/tcp, 53/udp or 8080",
};

/** describeSchemaError turns one ajv error into a path and a reason in plain words. */
export function describeSchemaError(e: ErrorObject): ValidationProblem {
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case "required":
      return { path: jsonPath(e.instancePath, String(p.missingProperty)), message: "is required" };
    case "additionalProperties":
      return {
        path: jsonPath(e.instancePath, String(p.additionalProperty)),
        message: "is not a known field (put vendor fields under `extensions` with a namespaced key)",
      };
    case "propertyNames":
      return {
        path: jsonPath(e.instancePath, String(p.propertyName)),
        message: "extension keys must be namespaced, e.g. com.example.feature",
      };
    case "enum":
      return {
        path: jsonPath(e.instancePath),
        message: `must be one of ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ")}`,
      };
    case "const":
      return { path: jsonPath(e.instancePath), message: `must be ${JSON.stringify(p.allowedValue)}` };
    case "type":
      return {
        path: jsonPath(e.instancePath),
        message: `must be ${p.type === "integer" ? "an integer" : `a ${String(p.type)}`}`,
      };
    case "minimum":
      return { path: jsonPath(e.instancePath), message: `must be >= ${String(p.limit)}` };
    case "maximum":
      return { path: jsonPath(e.instancePath), message: `must be <= ${String(p.limit)}` };
    case "pattern":
      return {
        path: jsonPath(e.instancePath),
        message: PATTERN_WORDS[String(p.pattern)] ?? `must match ${String(p.pattern)}`,
      };
    case "format":
      return { path: jsonPath(e.instancePath), message: `must be a valid ${String(p.format)}` };
    case "propertyName":
      return { path: jsonPath(e.instancePath), message: e.message ?? "bad property name" };
    default:
      return { path: jsonPath(e.instancePath), message: e.message ?? e.keyword };
  }
}

/**
 * semanticProblems checks what JSON Schema cannot say: the disk chain is consistent
 * (diffs are qcow2 and name their parent), device names are unique, ivshmem sizes are
 * powers of two, exposed ports are ports and each is listed once (`80` is `80/tcp`).
 */
function semanticProblems(m: OvmsManifest): ValidationProblem[] {
  const out: ValidationProblem[] = [];
  const layers = m.diskLayers ?? [];
  layers.forEach((l, i) => {
    if (i === 0 && l.parent !== undefined) {
      out.push({ path: `diskLayers[0].parent`, message: "the base layer cannot have a parent" });
    }
    if (i > 0) {
      if (l.format !== "qcow2")
        out.push({
          path: `diskLayers[${i}].format`,
          message: "a diff layer must be qcow2 (raw has no backing file)",
        });
      if (l.parent !== undefined && l.parent !== layers[i - 1].ref) {
        out.push({
          path: `diskLayers[${i}].parent`,
          message: `must be the ref of diskLayers[${i - 1}] (${layers[i - 1].ref})`,
        });
      }
    }
  });
  // S7 (rfc §2.4): a snapshot restores only into the memory and vCPUs it was taken with, so
  // both must be stated; their equality with the blob's metadata is checked at restore time.
  if (m.ramSnapshot) {
    for (const k of ["memory", "vcpus"] as const) {
      if (m.resources?.[k] === undefined)
        out.push({
          path: `resources.${k}`,
          message: "is required when ramSnapshot is present (rule S7: the snapshot's memory size and vCPUs)",
        });
    }
  }
  out.push(...containerModeProblems(m));
  if (m.metadata?.platform?.uefi === true) out.push({ path: UEFI_PATH, message: UEFI_MESSAGE });
  const seen = new Set<string>();
  (m.devices ?? []).forEach((d, i) => {
    if (seen.has(d.name))
      out.push({ path: `devices[${i}].name`, message: `duplicate device name "${d.name}"` });
    seen.add(d.name);
    if (
      d.type === "ivshmem" &&
      (d.size < 4096 || (d.size & (d.size - 1)) !== 0 || !Number.isSafeInteger(d.size))
    ) {
      out.push({ path: `devices[${i}].size`, message: "must be a power of two of at least 4096" });
    }
  });
  const exposed = new Set<string>();
  (m.network?.exposedPorts ?? []).forEach((s, i) => {
    const p = parseExposedPort(s);
    const path = `network.exposedPorts[${i}]`;
    if (!p) return out.push({ path, message: "must be a port (1-65535) with an optional /tcp or /udp" });
    const key = `${p.port}/${p.protocol}`;
    if (exposed.has(key)) out.push({ path, message: `${key} is listed twice` });
    exposed.add(key);
    return 0;
  });
  return out;
}

/**
 * containerModeProblems checks rule S9 (rfc §2.5): a containerMode artifact has what OVMS-Init
 * needs (its initrd, the image's root filesystem as a disk, the bootstrap config), and a
 * bootstrap config belongs to a containerMode artifact only.
 */
function containerModeProblems(m: OvmsManifest): ValidationProblem[] {
  const out: ValidationProblem[] = [];
  if (m.containerMode === true) {
    const why = "is required when containerMode is true (rule S9)";
    if (!m.bootstrap) out.push({ path: "bootstrap", message: `${why}: the image's bootstrap config` });
    if (!m.initrd) out.push({ path: "initrd", message: `${why}: the OVMS-Init initrd` });
    if (!m.diskLayers?.length)
      out.push({ path: "diskLayers", message: `${why}: the image's root filesystem as a disk layer` });
  } else if (m.bootstrap) {
    out.push({
      path: "bootstrap",
      message: "belongs to containerMode artifacts only (rule S9): set containerMode to true, or drop it",
    });
  }
  return out;
}

const UEFI_PATH = "metadata.platform.uefi";
const UEFI_MESSAGE = "UEFI boot is not defined in OVMS v0.1 (direct kernel boot only): NOT_IMPLEMENTED";

/**
 * refuseUnimplemented throws NOT_IMPLEMENTED when the only thing wrong with a manifest is a
 * feature v0.1 reserves (rfc §2.2: `platform.uefi: true` is refused with NOT_IMPLEMENTED,
 * not as an invalid manifest): the runtime cannot do it, the artifact is not broken.
 */
function refuseUnimplemented(problems: ValidationProblem[], subject: string): void {
  if (problems.length > 0 && problems.every((p) => p.path === UEFI_PATH && p.message === UEFI_MESSAGE)) {
    throw new OvmsError("NOT_IMPLEMENTED", `${subject}: ${UEFI_PATH} is true: ${UEFI_MESSAGE}`, {
      details: { problems },
    });
  }
}

/** checkManifest returns every problem of `doc` as an OVMS manifest (empty when valid). */
export function checkManifest(doc: unknown): ValidationProblem[] {
  if (validateSchema(doc)) return semanticProblems(doc);
  // Errors raised inside `propertyNames` carry `propertyName`; the wrapping propertyNames
  // error says the same thing in better words, so those are dropped.
  const problems = (compiled?.errors ?? [])
    .filter((e) => e.propertyName === undefined)
    .map(describeSchemaError);
  // ajv can report one fault twice through different keywords; keep the first.
  const seen = new Set<string>();
  return problems.filter((p) => {
    const k = `${p.path}\0${p.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** validateManifest returns `doc` typed as OvmsManifest, or throws ValidationError with all problems. */
export function validateManifest(doc: unknown, subject = "manifest"): OvmsManifest {
  const problems = checkManifest(doc);
  refuseUnimplemented(problems, subject);
  if (problems.length > 0) throw new ValidationError(subject, problems);
  return doc as OvmsManifest;
}

/**
 * checkArtifact checks rule S6 (rfc §2.4), which needs the OCI manifest that carries a valid
 * OVMS manifest: every `ref` is a layer of the right media type, with sizes that match.
 */
export function checkArtifact(oci: ImageManifest, ovms: OvmsManifest): ValidationProblem[] {
  const out: ValidationProblem[] = [];
  // A manifest from outside may lack `layers`: then no part is a layer of it.
  const byDigest = new Map((oci.layers ?? []).map((l) => [l.digest, l]));
  const want = (path: string, ref: string, role: LayerRole, size?: number) => {
    const l = byDigest.get(ref as Digest);
    if (!l) return out.push({ path, message: `${ref} is not a layer of the OCI manifest` });
    if (l.mediaType !== LayerMediaType[role]) {
      out.push({
        path,
        message: `layer ${ref} has media type ${l.mediaType}, want ${LayerMediaType[role]}`,
      });
    }
    // A disk's `size` is the image file's, its layer is the tar around it.
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
  if (ovms.bootstrap) want("bootstrap.ref", ovms.bootstrap.ref, "bootstrap", ovms.bootstrap.size);
  if (ovms.ramSnapshot) {
    want("ramSnapshot.ref", ovms.ramSnapshot.ref, "ramsnap", ovms.ramSnapshot.size);
    (ovms.ramSnapshot.parents ?? []).forEach((p, i) =>
      want(`ramSnapshot.parents[${i}].ref`, p.ref, "ramsnap", p.size),
    );
  }
  return out;
}

/**
 * validateArtifact checks an OVMS manifest together with the OCI manifest that carries it
 * (schema, S1–S5, then S6) and returns it typed, or throws ValidationError with every problem:
 * the one check that reading, building, snapshotting and importing an artifact all go through.
 */
export function validateArtifact(oci: ImageManifest, doc: unknown, subject = "artifact"): OvmsManifest {
  const problems = checkManifest(doc);
  if (problems.length === 0) problems.push(...checkArtifact(oci, doc as OvmsManifest));
  refuseUnimplemented(problems, subject);
  if (problems.length > 0) throw new ValidationError(subject, problems);
  return doc as OvmsManifest;
}

/** parseManifest parses JSON text and validates it; bad JSON is a problem at the root. */
export function parseManifest(text: string, subject = "manifest"): OvmsManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ValidationError(subject, [{ path: "", message: `not valid JSON: ${(e as Error).message}` }]);
  }
  return validateManifest(doc, subject);
}
