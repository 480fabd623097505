import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";
import * as ajvFormats from "ajv-formats";
import { parse as parseYaml } from "yaml";
import { OvmsError, type ValidationProblem } from "../core/errors.js";

// ajv-formats is CommonJS; under NodeNext its function arrives as `default` (maybe twice wrapped).
type AddFormats = (a: Ajv2020) => unknown;
const fmt = ajvFormats as unknown as { default: AddFormats | { default: AddFormats } };
const addFormats: AddFormats = typeof fmt.default === "function" ? fmt.default : fmt.default.default;

/**
 * CONTRACT_URL is the normative OpenAPI document of the runtime API, shipped with the package
 * (package.json `files` has spec/): three levels up from dist/src/daemon/ is the package root.
 */
export const CONTRACT_URL = new URL("../../../spec/api/ovms-runtime.openapi.yaml", import.meta.url);

/** SCHEMA_ID is the $id the OpenAPI document is registered under in ajv. */
const SCHEMA_ID = "urn:ovms:runtime-api";

const METHODS = ["get", "put", "post", "delete", "patch", "head", "options"] as const;

/** Parameter is one OpenAPI parameter of an operation, with its schema compiled. */
export interface Parameter {
  name: string;
  in: "path" | "query" | "header" | "cookie";
  required: boolean;
  /** integer tells whether the value is read as a number before validation. */
  integer: boolean;
  validate: ValidateFunction;
}

/** Operation is one method + path of the contract, with what it takes compiled for validation. */
export interface Operation {
  operationId: string;
  method: string;
  /** template is the OpenAPI path, e.g. `/status/{instance_id}`. */
  template: string;
  /** pattern matches a request path; groups are the path parameters in `pathParams` order. */
  pattern: RegExp;
  pathParams: string[];
  parameters: Parameter[];
  /** body validates the JSON request body; undefined when the operation takes none. */
  body?: ValidateFunction;
  bodyRequired: boolean;
}

/** ParsedRequest is what an operation's parameters and body hold once validated. */
export interface ParsedRequest {
  params: Record<string, string>;
  query: Record<string, string | number>;
  body: unknown;
}

/**
 * Contract is the runtime API document loaded and compiled: the routes it defines and
 * validators for their parameters and request bodies (ajv, JSON Schema 2020-12 as OpenAPI
 * 3.1 says). The daemon routes by it, so a path or a schema exists in exactly one place.
 */
export class Contract {
  readonly operations: Operation[];

  private constructor(
    readonly document: Record<string, unknown>,
    private readonly ajv: Ajv2020,
  ) {
    this.operations = this.compileOperations();
  }

  /** load reads and compiles the OpenAPI document (default: the one shipped with the package). */
  static load(url: URL | string = CONTRACT_URL): Contract {
    const path = typeof url === "string" ? url : fileURLToPath(url);
    let doc: Record<string, unknown>;
    try {
      doc = parseYaml(readFileSync(path, "utf8")) as Record<string, unknown>;
    } catch (e) {
      throw new OvmsError(
        "CONTRACT_MISSING",
        `cannot read the runtime API document ${path}: ${(e as Error).message}`,
        { cause: e },
      );
    }
    // Not strict: the document root holds OpenAPI keywords (openapi, info, paths) ajv does not know.
    const ajv = new Ajv2020({ allErrors: true, strict: false });
    addFormats(ajv);
    ajv.addSchema({ ...doc, $id: SCHEMA_ID });
    return new Contract(doc, ajv);
  }

  /** match finds the operation of a request, or says whether the path exists with other methods. */
  match(
    method: string,
    path: string,
  ): { op: Operation; params: Record<string, string> } | { allowed: string[] } {
    const allowed: string[] = [];
    for (const op of this.operations) {
      const m = op.pattern.exec(path);
      if (!m) continue;
      if (op.method !== method) {
        allowed.push(op.method);
        continue;
      }
      const params: Record<string, string> = {};
      op.pathParams.forEach((name, i) => (params[name] = decodeURIComponent(m[i + 1])));
      return { op, params };
    }
    return { allowed };
  }

  /**
   * parse validates a matched request: path and query parameters against their schemas
   * (integers read as numbers first) and the body against the request schema. Every problem
   * is collected; any makes BAD_REQUEST with `details.problems`. Unknown query parameters are ignored.
   */
  parse(
    op: Operation,
    pathParams: Record<string, string>,
    query: URLSearchParams,
    body: unknown,
    hasBody: boolean,
  ): ParsedRequest {
    const problems: ValidationProblem[] = [];
    const out: ParsedRequest = { params: {}, query: {}, body };
    for (const p of op.parameters) {
      const raw =
        p.in === "path"
          ? pathParams[p.name]
          : p.in === "query"
            ? (query.get(p.name) ?? undefined)
            : undefined;
      if (raw === undefined) {
        if (p.required) problems.push({ path: `/${p.in}/${p.name}`, message: "is required" });
        continue;
      }
      const value: string | number = p.integer && /^-?\d+$/.test(raw) ? Number(raw) : raw;
      if (!p.validate(value)) {
        problems.push(...(p.validate.errors ?? []).map((e) => describe(e, `/${p.in}/${p.name}`)));
        continue;
      }
      if (p.in === "path") out.params[p.name] = String(value);
      else out.query[p.name] = value;
    }
    if (op.body) {
      if (!hasBody) {
        if (op.bodyRequired) problems.push({ path: "", message: "a JSON request body is required" });
      } else if (!op.body(body)) {
        problems.push(...(op.body.errors ?? []).map((e) => describe(e, "")));
      }
    }
    if (problems.length) throw badRequest(`${op.method} ${op.template}`, problems);
    return out;
  }

  /** validator compiles the schema at a JSON pointer of the document. */
  validator(pointer: string): ValidateFunction {
    return this.ajv.compile({ $ref: `${SCHEMA_ID}#${pointer}` });
  }

  private compileOperations(): Operation[] {
    const ops: Operation[] = [];
    const paths = (this.document.paths ?? {}) as Record<string, Record<string, unknown>>;
    for (const [template, item] of Object.entries(paths)) {
      for (const method of METHODS) {
        const raw = item[method] as Record<string, unknown> | undefined;
        if (!raw) continue;
        const base = `/paths/${escapePointer(template)}/${method}`;
        const parameters = ((raw.parameters ?? []) as Record<string, unknown>[]).map((p, i) => {
          let pointer = `${base}/parameters/${i}`;
          let def = p;
          if (typeof p.$ref === "string") {
            pointer = p.$ref.slice(1);
            def = this.resolvePointer(pointer) as Record<string, unknown>;
          }
          const schema = this.deref(def.schema as Record<string, unknown>);
          return {
            name: String(def.name),
            in: def.in as Parameter["in"],
            required: def.required === true,
            integer: schema?.type === "integer",
            validate: this.validator(`${pointer}/schema`),
          };
        });
        const pathParams: string[] = [];
        const segments = template.split("/").map((seg) => {
          const m = /^\{(.+)\}$/.exec(seg);
          if (!m) return seg.replace(/[.*+?^$()|[\]\\{}]/g, "\\$&");
          pathParams.push(m[1]);
          return "([^/]+)";
        });
        const pattern = new RegExp(`^${segments.join("/")}$`);
        const rb = raw.requestBody as { required?: boolean; content?: Record<string, unknown> } | undefined;
        const op: Operation = {
          operationId: String(raw.operationId),
          method: method.toUpperCase(),
          template,
          pattern,
          pathParams,
          parameters,
          bodyRequired: rb?.required === true,
        };
        if (rb?.content?.["application/json"])
          op.body = this.validator(`${base}/requestBody/content/application~1json/schema`);
        ops.push(op);
      }
    }
    return ops;
  }

  private resolvePointer(pointer: string): unknown {
    let cur: unknown = this.document;
    for (const part of pointer.split("/").slice(1)) {
      cur = (cur as Record<string, unknown>)?.[part.replace(/~1/g, "/").replace(/~0/g, "~")];
    }
    return cur;
  }

  private deref(schema: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
    if (schema && typeof schema.$ref === "string" && schema.$ref.startsWith("#/")) {
      return this.deref(this.resolvePointer(schema.$ref.slice(1)) as Record<string, unknown>);
    }
    return schema;
  }
}

function escapePointer(s: string): string {
  return s.replace(/~/g, "~0").replace(/\//g, "~1");
}

/** badRequest is the contract's BAD_REQUEST, with every problem as `{path, message}` (JSON Pointers). */
export function badRequest(subject: string, problems: ValidationProblem[]): OvmsError {
  return new OvmsError(
    "BAD_REQUEST",
    `${subject}: ${problems.length} problem(s): ${problems.map((p) => `${p.path || "(body)"} ${p.message}`).join("; ")}`,
    {
      details: { problems },
    },
  );
}

/** describe turns one ajv error into a JSON Pointer and a reason in plain words. */
function describe(e: ErrorObject, prefix: string): ValidationProblem {
  const p = e.params as Record<string, unknown>;
  const at = (child?: string) =>
    prefix + e.instancePath + (child === undefined ? "" : `/${escapePointer(child)}`);
  switch (e.keyword) {
    case "required":
      return { path: at(String(p.missingProperty)), message: "is required" };
    case "additionalProperties":
      return { path: at(String(p.additionalProperty)), message: "is not a known member" };
    case "enum":
      return {
        path: at(),
        message: `must be one of ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ")}`,
      };
    case "const":
      return { path: at(), message: `must be ${JSON.stringify(p.allowedValue)}` };
    case "type":
      return {
        path: at(),
        message: `must be ${p.type === "integer" ? "an integer" : p.type === "object" ? "an object" : `a ${String(p.type)}`}`,
      };
    default:
      return { path: at(), message: e.message ?? e.keyword };
  }
}
