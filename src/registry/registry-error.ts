import { OvmsError } from "../core/errors.js";
import { isTransientStatus } from "./retry-policy.js";
import { ERRORS, isRegistryErrorCode, type ErrorCode } from "../core/error-codes.js";

/** RegistryErrorEntry is one entry of the `errors` array a registry answers with (distribution spec §error codes). */
export interface RegistryErrorEntry {
  code: string;
  message?: string;
  detail?: unknown;
}

/**
 * RegistryError is an OvmsError raised while talking to a registry. `code` is the registry's
 * own error code when it sent one (MANIFEST_UNKNOWN, UNAUTHORIZED, DENIED, TOOMANYREQUESTS …),
 * else one derived from the status, or REGISTRY_UNREACHABLE / CONNECTION_LOST for network
 * failures. It carries the method, the URL with secrets removed, the status and `errors[]`.
 */
export class RegistryError extends OvmsError {
  readonly method?: string;
  readonly url?: string;
  readonly status?: number;
  readonly errors: RegistryErrorEntry[];
  /**
   * transient tells whether doing the same thing again later may succeed (network drops, 5xx,
   * 429): the answer's status when there was one, else the `retryable` column of the error table.
   */
  readonly transient: boolean;
  /** attempts is how many times the request was sent before this error (1: it was not retried). */
  attempts = 1;

  constructor(
    code: ErrorCode,
    message: string,
    opts: {
      method?: string;
      url?: string;
      status?: number;
      errors?: RegistryErrorEntry[];
      transient?: boolean;
      cause?: unknown;
    } = {},
  ) {
    super(code, message, {
      cause: opts.cause,
      details: { method: opts.method, url: opts.url, status: opts.status, errors: opts.errors ?? [] },
    });
    this.method = opts.method;
    this.url = opts.url;
    this.status = opts.status;
    this.errors = opts.errors ?? [];
    this.transient = opts.transient ?? ERRORS[code].retryable;
  }
}

/** EXPLAIN says in plain words what each distribution-spec error code means for the user. */
const EXPLAIN: Record<string, string> = {
  BLOB_UNKNOWN: "the registry does not have this blob",
  BLOB_UPLOAD_INVALID: "the registry refused the uploaded data",
  BLOB_UPLOAD_UNKNOWN: "the upload session expired or is unknown to the registry",
  DIGEST_INVALID: "the uploaded content does not match its digest",
  MANIFEST_BLOB_UNKNOWN: "the manifest refers to a blob the registry does not have",
  MANIFEST_INVALID: "the registry refused the manifest",
  MANIFEST_UNKNOWN: "no such tag or manifest in this repository",
  NAME_INVALID: "invalid repository name",
  NAME_UNKNOWN: "no such repository",
  SIZE_INVALID: "the content length does not match the declared size",
  UNAUTHORIZED: "authentication required or the credentials were rejected (see `ovm login`)",
  DENIED: "access denied: the credentials do not allow this operation",
  UNSUPPORTED: "the registry does not support this operation",
  TOOMANYREQUESTS: "the registry is rate limiting requests",
  NOT_FOUND: "not found",
  REGISTRY_UNAVAILABLE: "the registry failed (server error)",
};

/** SAFE_QUERY are query parameters that carry no secret and help reading an error. */
const SAFE_QUERY = new Set(["n", "last", "digest", "mount", "from", "artifactType", "service", "scope"]);

/**
 * redactUrl returns `u` fit for an error message or a log: no user:password, and the value of
 * every query parameter that may hold a secret (upload `_state`, signed-URL tokens) replaced.
 */
export function redactUrl(u: string | URL): string {
  let url: URL;
  try {
    url = new URL(String(u));
  } catch {
    return "<invalid url>";
  }
  url.username = "";
  url.password = "";
  for (const key of [...url.searchParams.keys()]) {
    if (!SAFE_QUERY.has(key)) url.searchParams.set(key, "REDACTED");
  }
  return url.toString();
}

/** parseErrorBody reads the `errors` array of a registry error body, or nothing. */
export function parseErrorBody(text: string): RegistryErrorEntry[] {
  try {
    const body = JSON.parse(text) as { errors?: unknown };
    if (!Array.isArray(body.errors)) return [];
    return body.errors
      .filter(
        (e): e is Record<string, unknown> =>
          typeof e === "object" && e !== null && typeof e.code === "string",
      )
      .map((e) => ({
        code: String(e.code),
        message: typeof e.message === "string" ? e.message : undefined,
        detail: e.detail,
      }));
  } catch {
    return [];
  }
}

function codeForStatus(status: number): ErrorCode {
  if (status === 401) return "UNAUTHORIZED";
  if (status === 403) return "DENIED";
  if (status === 404) return "NOT_FOUND";
  if (status === 429) return "TOOMANYREQUESTS";
  if (status >= 500) return "REGISTRY_UNAVAILABLE";
  return "REGISTRY_ERROR";
}

/**
 * responseError turns an unexpected registry answer into a RegistryError whose message leads
 * with the request: `GET "<url>": 404 MANIFEST_UNKNOWN: manifest unknown (no such tag …)`.
 */
export function responseError(
  method: string,
  url: string | URL,
  status: number,
  bodyText: string,
  context?: string,
  note?: string,
): RegistryError {
  const errors = parseErrorBody(bodyText);
  // The registry's own code when it is one of the spec's; its exact words stay in `errors`.
  const sent = errors[0]?.code;
  const code: ErrorCode =
    sent && isRegistryErrorCode(sent) ? sent : sent ? "REGISTRY_ERROR" : codeForStatus(status);
  const said = errors.map((e) => `${e.code}${e.message ? `: ${e.message}` : ""}`).join("; ");
  const explain = EXPLAIN[code];
  const plain =
    !said && bodyText && !bodyText.trimStart().startsWith("{") ? bodyText.trim().slice(0, 200) : "";
  const parts = [`${method} "${redactUrl(url)}": ${status}`, said || plain || code];
  let message = parts.join(" ");
  if (note) message += ` (${note})`;
  else if (explain && !message.toLowerCase().includes(explain.toLowerCase())) message += ` (${explain})`;
  if (context) message = `${context}: ${message}`;
  return new RegistryError(code, message, {
    method,
    url: redactUrl(url),
    status,
    errors,
    transient: isTransientStatus(status),
  });
}

/** networkError wraps a failure to reach the registry or a connection lost mid-answer. */
export function networkError(
  method: string,
  url: string | URL,
  cause: unknown,
  midBody = false,
): RegistryError {
  const why = (cause as { code?: string; message?: string })?.message ?? String(cause);
  const ecode = (cause as { code?: string })?.code;
  return new RegistryError(
    midBody ? "CONNECTION_LOST" : "REGISTRY_UNREACHABLE",
    `${method} "${redactUrl(url)}": ${midBody ? "connection lost" : "cannot reach the registry"}: ${why}${ecode && !why.includes(ecode) ? ` (${ecode})` : ""}`,
    { method, url: redactUrl(url), transient: true, cause },
  );
}

/** NETWORK_CODES are the error codes of failures worth retrying: the peer went away or never answered. */
const NETWORK_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "ENETUNREACH",
  "EHOSTUNREACH",
  "EAI_AGAIN",
  "UND_ERR_SOCKET",
  "UND_ERR_CLOSED",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_RES_CONTENT_LENGTH_MISMATCH",
  "ERR_STREAM_PREMATURE_CLOSE",
]);

/** isNetworkFailure tells whether `e` is a dropped or refused connection (not an HTTP answer). */
export function isNetworkFailure(e: unknown): boolean {
  if (e instanceof RegistryError) return e.code === "CONNECTION_LOST" || e.code === "REGISTRY_UNREACHABLE";
  const code = (e as { code?: string })?.code;
  return typeof code === "string" && NETWORK_CODES.has(code);
}
