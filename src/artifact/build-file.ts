import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { Ajv2020 } from "ajv/dist/2020.js";
import YAML from "yaml";
import { OvmsError, ValidationError } from "../core/errors.js";
import { jsonPath } from "../core/validate.js";
import { parseSize } from "../core/size.js";
import type { BuildSpec } from "./build.js";

/**
 * The build file (`ovm build -f ovm.yaml`): YAML or JSON, documented in docs/build-file.md.
 * Paths are relative to the file. Unknown keys are refused, like in the manifest.
 */
const buildFileSchema = {
  type: "object",
  additionalProperties: false,
  required: ["name", "version", "kernel"],
  properties: {
    name: { type: "string" },
    version: { type: ["string", "number"] },
    kernel: {
      type: "object",
      additionalProperties: false,
      required: ["path"],
      properties: { path: { type: "string" }, args: { type: "string" } },
    },
    initrd: {
      type: "object",
      additionalProperties: false,
      required: ["path"],
      properties: { path: { type: "string" } },
    },
    disks: {
      type: "array",
      items: {
        type: "object",
        additionalProperties: false,
        required: ["path"],
        properties: { path: { type: "string" }, format: { enum: ["qcow2", "raw"] } },
      },
    },
    devices: { type: "array", items: { type: "object" } },
    network: { type: "object" },
    resources: {
      type: "object",
      additionalProperties: false,
      properties: { memory: { type: ["string", "integer"] }, vcpus: { type: "integer" } },
    },
    runtimeHints: { type: "object" },
    metadata: { type: "object" },
    extensions: { type: "object" },
  },
} as const;

const validate = new Ajv2020({ allErrors: true, allowUnionTypes: true }).compile(buildFileSchema);

/** loadBuildFile reads a build file and returns the BuildSpec it describes, paths made absolute. */
export async function loadBuildFile(path: string): Promise<BuildSpec> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new OvmsError("FILE_NOT_FOUND", `build file ${path}: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    if (path.endsWith(".json")) doc = JSON.parse(text);
    else {
      const y = YAML.parseDocument(text, { prettyErrors: true });
      if (y.errors.length) throw y.errors[0];
      doc = y.toJS();
      // `version: 2.0` is a float to YAML; keep what the user wrote, not "2".
      const v = y.get("version", true);
      if (YAML.isScalar(v) && typeof v.value === "number" && doc && typeof doc === "object") {
        (doc as Record<string, unknown>).version = v.source ?? String(v.value);
      }
    }
  } catch (e) {
    throw new ValidationError(`build file ${path}`, [
      { path: "", message: `cannot parse: ${(e as Error).message}` },
    ]);
  }
  if (!validate(doc)) {
    throw new ValidationError(
      `build file ${path}`,
      (validate.errors ?? []).map((e) => ({
        path: jsonPath(
          e.instancePath,
          (e.params as { missingProperty?: string; additionalProperty?: string }).missingProperty ??
            (e.params as { additionalProperty?: string }).additionalProperty,
        ),
        message:
          e.keyword === "additionalProperties"
            ? "is not a known key"
            : e.keyword === "required"
              ? "is required"
              : (e.message ?? e.keyword),
      })),
    );
  }
  const d = doc as Record<string, any>;
  const base = dirname(resolve(path));
  const abs = (p: string) => resolve(base, p);
  const spec: BuildSpec = {
    name: d.name,
    version: String(d.version),
    kernel: { path: abs(d.kernel.path), ...(d.kernel.args !== undefined ? { args: d.kernel.args } : {}) },
  };
  if (d.initrd) spec.initrd = { path: abs(d.initrd.path) };
  if (d.disks)
    spec.disks = d.disks.map((x: { path: string; format?: "qcow2" | "raw" }) => ({
      ...x,
      path: abs(x.path),
    }));
  if (d.devices)
    spec.devices = d.devices.map((x: Record<string, unknown>) =>
      x.size !== undefined ? { ...x, size: parseSize(x.size as string, "devices.size") } : x,
    );
  if (d.resources) {
    spec.resources = {};
    if (d.resources.memory !== undefined)
      spec.resources.memory = parseSize(d.resources.memory, "resources.memory");
    if (d.resources.vcpus !== undefined) spec.resources.vcpus = d.resources.vcpus;
  }
  if (d.network) spec.network = d.network;
  if (d.runtimeHints) spec.runtimeHints = d.runtimeHints;
  if (d.metadata) spec.metadata = d.metadata;
  if (d.extensions) spec.extensions = d.extensions;
  return spec;
}
