import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import * as ajvFormats from "ajv-formats";
import { parse as parseYaml } from "yaml";

// ajv-formats is CommonJS; under NodeNext its function arrives as `default` (maybe twice wrapped).
type AddFormats = (a: Ajv2020) => unknown;
const fmt = ajvFormats as unknown as { default: AddFormats | { default: AddFormats } };
const addFormats: AddFormats = typeof fmt.default === "function" ? fmt.default : fmt.default.default;

/**
 * API_DOCUMENT is the runtime API's OpenAPI document shipped with the package (package.json
 * `files` has spec/): three levels up from dist/src/conformance/ is the package root.
 */
export const API_DOCUMENT = fileURLToPath(
  new URL("../../../spec/api/ovms-runtime.openapi.yaml", import.meta.url),
);

const ID = "urn:ovms:conformance:runtime-api";

interface Op {
  id: string;
  method: string;
  pattern: RegExp;
  responses: Record<string, { contentType?: string; validate?: ValidateFunction }>;
}

/** ResponseCheck is what OpenApiContract found about one response. */
export interface ResponseCheck {
  /** operationId of the operation the request matched, when one did. */
  operation?: string;
  /** problems is empty when the response is what the document allows. */
  problems: string[];
}

/**
 * OpenApiContract holds responses to the runtime API document (normative for message shapes,
 * rfc §6): the status must be one the operation documents, the content type the documented
 * one, and the body (each record, for NDJSON) must validate against its schema. It loads the
 * YAML itself — never through the reference daemon's loader — so the suite and the daemon's
 * tests judge any runtime, ovmd included, by the document alone.
 */
export class OpenApiContract {
  private readonly ops: Op[] = [];
  /** seen records `operationId status` of every response checked, for coverage. */
  readonly seen = new Set<string>();

  constructor(path: string = API_DOCUMENT) {
    const doc = parseYaml(readFileSync(path, "utf8")) as Record<string, any>;
    const ajv = new Ajv2020({ allErrors: true, strict: false });
    addFormats(ajv);
    ajv.addSchema({ ...doc, $id: ID });
    const esc = (s: string) => s.replace(/~/g, "~0").replace(/\//g, "~1");
    for (const [template, item] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
      for (const [method, op] of Object.entries(item)) {
        if (!op?.operationId) continue;
        const pattern = new RegExp(`^${template.replace(/\{[^}]+\}/g, "[^/]+")}$`);
        const responses: Op["responses"] = {};
        for (const [status, r0] of Object.entries(op.responses as Record<string, any>)) {
          let pointer = `/paths/${esc(template)}/${method}/responses/${status}`;
          let r = r0;
          if (typeof r.$ref === "string") {
            pointer = r.$ref.slice(1);
            r = pointer
              .split("/")
              .slice(1)
              .reduce((o: any, k: string) => o[k.replace(/~1/g, "/").replace(/~0/g, "~")], doc);
          }
          const [contentType] = Object.keys(r.content ?? {});
          responses[status] = contentType
            ? {
                contentType,
                validate: ajv.compile({ $ref: `${ID}#${pointer}/content/${esc(contentType)}/schema` }),
              }
            : {};
        }
        this.ops.push({ id: op.operationId, method: method.toUpperCase(), pattern, responses });
      }
    }
  }

  /** operation names the operation a method and path (without query) belong to, if any. */
  operation(method: string, path: string): string | undefined {
    return this.ops.find((o) => o.method === method && o.pattern.test(path))?.id;
  }

  /**
   * check returns the problems of one response: an undocumented status, another content type,
   * or a body (for NDJSON, an array of records) that breaks the schema.
   */
  check(
    method: string,
    path: string,
    status: number,
    contentType: string | undefined,
    body: unknown,
  ): ResponseCheck {
    const op = this.ops.find((o) => o.method === method && o.pattern.test(path));
    if (!op) return { problems: [`${method} ${path} is not an operation of the API document`] };
    const r = op.responses[String(status)];
    if (!r) {
      return {
        operation: op.id,
        problems: [
          `${method} ${path} answered ${status}, which the document does not list for ${op.id}: ${clip(body)}`,
        ],
      };
    }
    this.seen.add(`${op.id} ${status}`);
    if (!r.validate) return { operation: op.id, problems: [] };
    const got = (contentType ?? "").split(";")[0].trim();
    if (got !== r.contentType) {
      return {
        operation: op.id,
        problems: [`${method} ${path} ${status}: content type "${got}", the document says ${r.contentType}`],
      };
    }
    const items = r.contentType === "application/x-ndjson" ? (body as unknown[]) : [body];
    const problems: string[] = [];
    for (const item of items) {
      if (!r.validate(item)) {
        const why = (r.validate.errors ?? [])
          .map(
            (e) =>
              `${e.instancePath || "(body)"} ${e.message ?? e.keyword}${e.params && "additionalProperty" in e.params ? ` (${String(e.params.additionalProperty)})` : ""}`,
          )
          .join("; ");
        problems.push(`${method} ${path} ${status}: the body breaks the schema: ${why}: ${clip(item)}`);
      }
    }
    return { operation: op.id, problems };
  }
}

function clip(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 300 ? `${s.slice(0, 300)}…` : s;
}
