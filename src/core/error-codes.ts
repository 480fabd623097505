/**
 * The one closed set of error codes of OVMS and the one table that says what each means at
 * every edge: the code the runtime API answers with (one of the contract's `ErrorCode`s), the
 * HTTP status, the exit status of `ovm`, and whether trying again later may succeed.
 *
 * Code decides on `code`, never on message text. Adding a code means adding a row: the table
 * is a `Record<ErrorCode, …>`, so the compiler refuses a code without one. RFC §6.4 lists them.
 */

/**
 * ApiErrorCode is the closed set of codes the runtime API answers with
 * (spec/api/ovms-runtime.openapi.yaml, components.schemas.ErrorCode).
 */
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
 * REGISTRY_ERROR_CODES is the closed set of error codes of the OCI distribution spec
 * (https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#error-codes). A
 * registry error keeps the code the registry sent; a code outside this set becomes
 * REGISTRY_ERROR (the registry's own words stay in the error's `errors[]`).
 */
export const REGISTRY_ERROR_CODES = [
  "BLOB_UNKNOWN",
  "BLOB_UPLOAD_INVALID",
  "BLOB_UPLOAD_UNKNOWN",
  "DIGEST_INVALID",
  "MANIFEST_BLOB_UNKNOWN",
  "MANIFEST_INVALID",
  "MANIFEST_UNKNOWN",
  "NAME_INVALID",
  "NAME_UNKNOWN",
  "SIZE_INVALID",
  "UNAUTHORIZED",
  "DENIED",
  "UNSUPPORTED",
  "TOOMANYREQUESTS",
] as const;

/** RegistryErrorCode is one of REGISTRY_ERROR_CODES. */
export type RegistryErrorCode = (typeof REGISTRY_ERROR_CODES)[number];

/** ErrorCode is every stable code an OvmsError may carry. */
export type ErrorCode =
  | ApiErrorCode
  | RegistryErrorCode
  // What the user typed (flags, arguments, files they named).
  | "USAGE"
  | "INVALID_DIGEST"
  | "INVALID_SIZE"
  | "FILE_NOT_FOUND"
  | "CONFIG_INVALID"
  | "INVALID_ARGUMENT"
  // Content and artifacts.
  | "DIGEST_MISMATCH"
  | "NOT_AN_ARTIFACT"
  | "ARTIFACT_INVALID"
  | "ARTIFACT_INCOMPLETE"
  | "DISK_INVALID"
  | "RAMSNAP_INVALID"
  | "STORE_CORRUPT"
  // Converting container images and runtime-spec `vm` configs (ovm convert).
  | "IMAGE_UNSUPPORTED"
  // Signatures and keys.
  | "KEY_INVALID"
  | "SIGNATURE_INVALID"
  // Host tools.
  | "TOOL_MISSING"
  | "TOOL_FAILED"
  // Registries (besides the distribution spec's own codes).
  | "REGISTRY_ERROR"
  | "REGISTRY_UNAVAILABLE"
  | "REGISTRY_UNREACHABLE"
  | "CONNECTION_LOST"
  | "CREDENTIAL_HELPER"
  | "NO_MATCHING_PLATFORM"
  | "TLS_ERROR"
  // The runtime and the VMM.
  | "RUNTIME_NOT_INSTALLED"
  | "START_FAILED"
  | "RESTORE_FAILED"
  | "SNAPSHOT_FAILED"
  | "INSTANCE_FAILED"
  | "QMP_CONNECT"
  | "QMP_TIMEOUT"
  | "QMP_CLOSED"
  | "QMP_ERROR"
  // The daemon and its clients.
  | "CONTRACT_MISSING"
  | "DAEMON_UNAVAILABLE"
  | "DAEMON_TIMEOUT"
  | "DAEMON_PROTOCOL"
  // Any long operation.
  | "CANCELLED";

/** ErrorSpec is one row of the table: what a code becomes at each edge. */
export interface ErrorSpec {
  /** api is the code the runtime API answers with (itself for the contract's own codes). */
  api: ApiErrorCode;
  /** http is the HTTP status of that answer. */
  http: number;
  /** exit is `ovm`'s exit status: 2 for a mistake in what was typed, 1 otherwise. */
  exit: 1 | 2;
  /** retryable: the same request may succeed later, unchanged. */
  retryable: boolean;
}

/** HTTP_STATUS is the status of each API code (the table in the OpenAPI document's description). */
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

const row = (api: ApiErrorCode, opts: { exit?: 1 | 2; retryable?: boolean } = {}): ErrorSpec => ({
  api,
  http: HTTP_STATUS[api],
  exit: opts.exit ?? 1,
  retryable: opts.retryable ?? false,
});

/** ERRORS is the table: every ErrorCode, with its API code, HTTP status, exit status and retryability. */
export const ERRORS: Readonly<Record<ErrorCode, ErrorSpec>> = {
  // The contract's own codes.
  BAD_REQUEST: row("BAD_REQUEST"),
  INVALID_REFERENCE: row("INVALID_REFERENCE", { exit: 2 }),
  UNAUTHORIZED: row("UNAUTHORIZED"),
  POLICY_DENIED: row("POLICY_DENIED"),
  NOT_FOUND: row("NOT_FOUND"),
  ARTIFACT_NOT_FOUND: row("ARTIFACT_NOT_FOUND"),
  CONFLICT: row("CONFLICT"),
  MANIFEST_INVALID: row("MANIFEST_INVALID"),
  INTERNAL: row("INTERNAL"),
  NOT_IMPLEMENTED: row("NOT_IMPLEMENTED"),
  INSUFFICIENT_RESOURCES: row("INSUFFICIENT_RESOURCES", { retryable: true }),
  RUNTIME_UNAVAILABLE: row("RUNTIME_UNAVAILABLE", { retryable: true }),

  // The distribution spec's codes, as a registry sent them.
  BLOB_UNKNOWN: row("ARTIFACT_NOT_FOUND"),
  BLOB_UPLOAD_INVALID: row("INTERNAL"),
  BLOB_UPLOAD_UNKNOWN: row("INTERNAL", { retryable: true }),
  DIGEST_INVALID: row("MANIFEST_INVALID"),
  MANIFEST_BLOB_UNKNOWN: row("ARTIFACT_NOT_FOUND"),
  MANIFEST_UNKNOWN: row("ARTIFACT_NOT_FOUND"),
  NAME_INVALID: row("INVALID_REFERENCE"),
  NAME_UNKNOWN: row("ARTIFACT_NOT_FOUND"),
  SIZE_INVALID: row("MANIFEST_INVALID"),
  DENIED: row("UNAUTHORIZED"),
  UNSUPPORTED: row("NOT_IMPLEMENTED"),
  TOOMANYREQUESTS: row("RUNTIME_UNAVAILABLE", { retryable: true }),

  USAGE: row("BAD_REQUEST", { exit: 2 }),
  INVALID_DIGEST: row("INVALID_REFERENCE", { exit: 2 }),
  INVALID_SIZE: row("BAD_REQUEST", { exit: 2 }),
  FILE_NOT_FOUND: row("BAD_REQUEST"),
  INVALID_ARGUMENT: row("BAD_REQUEST"),
  CONFIG_INVALID: row("BAD_REQUEST"),

  DIGEST_MISMATCH: row("MANIFEST_INVALID"),
  NOT_AN_ARTIFACT: row("MANIFEST_INVALID"),
  ARTIFACT_INVALID: row("MANIFEST_INVALID"),
  ARTIFACT_INCOMPLETE: row("ARTIFACT_NOT_FOUND"),
  DISK_INVALID: row("MANIFEST_INVALID"),
  RAMSNAP_INVALID: row("MANIFEST_INVALID"),
  STORE_CORRUPT: row("INTERNAL"),
  // What a source is cannot become a VM here: another architecture, no layers, a layer or a
  // filesystem this converter cannot make, a `vm` config with nothing to boot.
  IMAGE_UNSUPPORTED: row("MANIFEST_INVALID"),

  // A key the user named cannot be used (wrong passphrase, not a P-256 key, not a key at all).
  KEY_INVALID: row("BAD_REQUEST"),
  // No signature verifies with the trusted keys: the same answer a policy gives at admission.
  SIGNATURE_INVALID: row("POLICY_DENIED"),

  TOOL_MISSING: row("RUNTIME_UNAVAILABLE"),
  TOOL_FAILED: row("INTERNAL"),

  REGISTRY_ERROR: row("INTERNAL"),
  REGISTRY_UNAVAILABLE: row("RUNTIME_UNAVAILABLE", { retryable: true }),
  REGISTRY_UNREACHABLE: row("RUNTIME_UNAVAILABLE", { retryable: true }),
  CONNECTION_LOST: row("RUNTIME_UNAVAILABLE", { retryable: true }),
  CREDENTIAL_HELPER: row("UNAUTHORIZED"),
  NO_MATCHING_PLATFORM: row("ARTIFACT_NOT_FOUND"),
  TLS_ERROR: row("RUNTIME_UNAVAILABLE"),

  // The runtime adapter asked for (--runtime, runtimeHints.preferredRuntime) is not the one here.
  RUNTIME_NOT_INSTALLED: row("NOT_IMPLEMENTED"),
  START_FAILED: row("INTERNAL"),
  // A snapshot this runtime cannot load is a property of the artifact, not a daemon fault.
  RESTORE_FAILED: row("MANIFEST_INVALID"),
  SNAPSHOT_FAILED: row("INTERNAL"),
  INSTANCE_FAILED: row("INTERNAL"),
  QMP_CONNECT: row("RUNTIME_UNAVAILABLE", { retryable: true }),
  QMP_TIMEOUT: row("RUNTIME_UNAVAILABLE", { retryable: true }),
  QMP_CLOSED: row("INTERNAL"),
  QMP_ERROR: row("INTERNAL"),

  CONTRACT_MISSING: row("INTERNAL"),
  DAEMON_UNAVAILABLE: row("RUNTIME_UNAVAILABLE", { retryable: true }),
  DAEMON_TIMEOUT: row("RUNTIME_UNAVAILABLE", { retryable: true }),
  DAEMON_PROTOCOL: row("INTERNAL"),

  // Someone asked it to stop (Ctrl-C, a daemon shutting down): never retried by OVMS itself.
  CANCELLED: row("RUNTIME_UNAVAILABLE"),
};

/** isErrorCode tells whether `s` is one of the codes of the table. */
export function isErrorCode(s: string): s is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERRORS, s);
}

/** isApiErrorCode tells whether `s` is one of the runtime API's codes. */
export function isApiErrorCode(s: string): s is ApiErrorCode {
  return Object.prototype.hasOwnProperty.call(HTTP_STATUS, s);
}

/** isRegistryErrorCode tells whether `s` is one of the distribution spec's error codes. */
export function isRegistryErrorCode(s: string): s is RegistryErrorCode {
  return (REGISTRY_ERROR_CODES as readonly string[]).includes(s);
}
