import { OvmsError, ValidationError } from "../spec/errors.js";
import type { ErrorBody } from "../client/types.js";

/** ApiErrorCode is the closed set of error codes of the runtime API (components.schemas.ErrorCode). */
export type ApiErrorCode =
  | "BAD_REQUEST"
  | "INVALID_REFERENCE"
  | "UNAUTHORIZED"
  | "POLICY_DENIED"
  | "NOT_FOUND"
  | "ARTIFACT_NOT_FOUND"
  | "CONFLICT"
  | "MANIFEST_INVALID"
  | "INTERNAL"
  | "NOT_IMPLEMENTED"
  | "INSUFFICIENT_RESOURCES"
  | "RUNTIME_UNAVAILABLE";

/**
 * HTTP_STATUS is the one mapping from the contract's error codes to HTTP statuses (the table
 * in spec/api/ovms-runtime.openapi.yaml, info.description).
 */
export const HTTP_STATUS: Record<ApiErrorCode, number> = {
  BAD_REQUEST: 400,
  INVALID_REFERENCE: 400,
  UNAUTHORIZED: 401,
  POLICY_DENIED: 403,
  NOT_FOUND: 404,
  ARTIFACT_NOT_FOUND: 404,
  CONFLICT: 409,
  MANIFEST_INVALID: 422,
  INTERNAL: 500,
  NOT_IMPLEMENTED: 501,
  INSUFFICIENT_RESOURCES: 503,
  RUNTIME_UNAVAILABLE: 503,
};

/**
 * LOWER_CODES says which contract code the codes of lower layers stand for at this edge. A
 * code in neither table is a bug or an unexpected failure: INTERNAL.
 */
const LOWER_CODES: Record<string, ApiErrorCode> = {
  // artifact/ and store/: the artifact is there but is not a valid OVMS artifact.
  NOT_AN_ARTIFACT: "MANIFEST_INVALID",
  ARTIFACT_INVALID: "MANIFEST_INVALID",
  DIGEST_MISMATCH: "MANIFEST_INVALID",
  SIZE_MISMATCH: "MANIFEST_INVALID",
  INVALID_DIGEST: "INVALID_REFERENCE",
  // A blob of the artifact is missing from the store.
  ARTIFACT_INCOMPLETE: "ARTIFACT_NOT_FOUND",
  // A host tool (qemu-img, qemu-system-x86_64) is not installed.
  TOOL_MISSING: "RUNTIME_UNAVAILABLE",
};

/** ApiError is an error as the API answers it: status and body. */
export interface ApiError {
  status: number;
  body: ErrorBody;
}

/**
 * toApiError maps any error to the contract's error answer. Instance NOT_FOUND keeps its
 * code; the controller turns a store's NOT_FOUND into ARTIFACT_NOT_FOUND before it gets here.
 * Manifest problems are given as JSON Pointers, as the contract's Problem says.
 */
export function toApiError(e: unknown): ApiError {
  if (!(e instanceof OvmsError)) {
    return {
      status: 500,
      body: { error: { code: "INTERNAL", message: `internal error: ${(e as Error)?.message ?? String(e)}` } },
    };
  }
  const code: ApiErrorCode =
    e.code in HTTP_STATUS ? (e.code as ApiErrorCode) : (LOWER_CODES[e.code] ?? "INTERNAL");
  const error: ErrorBody["error"] = { code, message: e.message || code };
  const details: Record<string, unknown> = { ...(e.details ?? {}) };
  if (e instanceof ValidationError)
    details.problems = e.problems.map((p) => ({ path: toPointer(p.path), message: p.message }));
  // The code of the lower layer stays visible to programs when it was translated.
  if (code !== e.code) details.cause_code = e.code;
  if (Object.keys(details).length) error.details = details;
  return { status: HTTP_STATUS[code], body: { error } };
}

/**
 * toPointer turns a validation path of spec/validate (`diskLayers[1].size`) into a JSON
 * Pointer (`/diskLayers/1/size`); a path that already is one is kept.
 */
export function toPointer(path: string): string {
  if (path === "" || path.startsWith("/")) return path;
  const parts: string[] = [];
  const re = /([^.[\]]+)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]/g;
  for (let m = re.exec(path); m; m = re.exec(path)) {
    const part = m[1] ?? m[2] ?? JSON.parse(`"${m[3]}"`);
    parts.push(String(part).replace(/~/g, "~0").replace(/\//g, "~1"));
  }
  return `/${parts.join("/")}`;
}
