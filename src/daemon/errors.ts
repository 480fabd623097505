import { OvmsError, ValidationError } from "../core/errors.js";
import { ERRORS } from "../core/error-codes.js";
import type { ErrorBody } from "../api/types.generated.js";

/** ApiError is an error as the API answers it: status and body. */
export interface ApiError {
  status: number;
  body: ErrorBody;
}

/**
 * toApiError maps any error to the contract's error answer through the one error table
 * (core/error-codes): its API code and HTTP status; the code of the lower layer stays visible
 * as `details.cause_code`. Instance NOT_FOUND keeps its code; the controller turns a store's
 * NOT_FOUND into ARTIFACT_NOT_FOUND before it gets here. Manifest problems are given as JSON
 * Pointers, as the contract's Problem says. Anything that is not an OvmsError is INTERNAL.
 */
export function toApiError(e: unknown): ApiError {
  if (!(e instanceof OvmsError)) {
    return {
      status: 500,
      body: { error: { code: "INTERNAL", message: `internal error: ${(e as Error)?.message ?? String(e)}` } },
    };
  }
  const { api: code, http } = ERRORS[e.code];
  const error: ErrorBody["error"] = { code, message: e.message || code };
  const details: Record<string, unknown> = { ...(e.details ?? {}) };
  if (e instanceof ValidationError)
    details.problems = e.problems.map((p) => ({ path: toPointer(p.path), message: p.message }));
  // The code of the lower layer stays visible to programs when it was translated.
  if (code !== e.code) details.cause_code = e.code;
  if (Object.keys(details).length) error.details = details;
  return { status: http, body: { error } };
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
