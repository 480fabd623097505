import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { rootCertificates } from "node:tls";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { Agent, request, type Dispatcher } from "undici";
import { OvmsError } from "../core/errors.js";
import { parseReference, type Reference } from "../core/reference.js";
import { VERSION } from "../version.js";
import { Authorizer, mergeScopes, parseChallenges, type CredentialProvider } from "./auth.js";
import { dockerConfigCredentials } from "./credentials.js";
import { RegistryError, isNetworkFailure, networkError, redactUrl, responseError } from "./registry-error.js";
import { Repository } from "./repository.js";
import { fastGetInto, type FastGetTarget } from "./fast-get.js";

/** RetryPolicy bounds how a request that failed transiently is tried again. */
export interface RetryPolicy {
  /** attempts is the most times one request is sent (default 5). */
  attempts: number;
  /** baseMs is the first backoff delay, doubled at each attempt (default 200 ms). */
  baseMs: number;
  /** maxMs caps one delay, Retry-After included (default 10 s). */
  maxMs: number;
}

/** RegistryClientOptions configure how OVMS reaches registries. */
export interface RegistryClientOptions {
  /** plainHttp speaks HTTP to every registry; without it only loopback registries get HTTP. */
  plainHttp?: boolean;
  /** caFile is a PEM bundle of certificate authorities to trust besides the system ones. */
  caFile?: string;
  /** credentials returns the credential of a registry (default: the docker config). */
  credentials?: CredentialProvider;
  userAgent?: string;
  retry?: Partial<RetryPolicy>;
  /**
   * chunkSize: blobs larger than this are uploaded in PATCH chunks of this size (default
   * 256 MiB: proxies in front of registries often cap request bodies; a single PUT is ~10%
   * faster on registry v2.8, so smaller blobs go in one).
   */
  chunkSize?: number;
  /** highWaterMark of response bodies (default 1 MiB): larger reads, fewer stream hops. */
  highWaterMark?: number;
  /** fastHttp reads blob bodies from plain-HTTP registries with fastGet (default true). */
  fastHttp?: boolean;
}

/** SendOptions describe one registry request. */
export interface SendOptions {
  method: "GET" | "HEAD" | "PUT" | "POST" | "PATCH" | "DELETE";
  url: URL;
  /** scopes the request needs in a bearer token, e.g. `repository:demo/vm:pull`. */
  scopes: string[];
  headers?: Record<string, string>;
  body?: Buffer | string | Readable | null;
  /** ok lists the statuses returned to the caller; any other throws a RegistryError. */
  ok: number[];
  /**
   * retry allows sending the request again after a 5xx, a 429 or a dropped connection. Only
   * for requests whose repetition cannot apply twice: reads, PUT of a manifest (same bytes,
   * same name), DELETE, POST opening an upload session. Never for PATCH or a streamed body.
   */
  retry?: boolean;
  /** context is prefixed to error messages, e.g. `blob sha256:…`. */
  context?: string;
  highWaterMark?: number;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** isLoopbackHost tells whether `host[:port]` names this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(hostPort: string): boolean {
  let host = hostPort;
  if (host.startsWith("[")) host = host.slice(1, host.indexOf("]"));
  else if (host.includes(":") && isIP(host) !== 6) host = host.slice(0, host.lastIndexOf(":"));
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  if (isIP(host) === 6) return host === "::1" || host === "0:0:0:0:0:0:0:1";
  return false;
}

/**
 * RegistryClient speaks the OCI distribution spec v1.1
 * (https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md) to any number of
 * registries: one undici connection pool, one Authorizer per registry, retries with backoff.
 * `repository(ref)` gives the ContentStore of one remote repository.
 */
export class RegistryClient {
  readonly dispatcher: Dispatcher;
  readonly userAgent: string;
  readonly retry: RetryPolicy;
  readonly chunkSize: number;
  readonly highWaterMark: number;
  readonly fastHttp: boolean;
  private readonly plainHttp: boolean;
  private readonly caFile?: string;
  private readonly credentials: CredentialProvider;
  private readonly authorizers = new Map<string, Authorizer>();
  /** schemes remembers, per loopback registry, whether it answered HTTPS or plain HTTP. */
  private readonly schemes = new Map<string, "http" | "https">();

  constructor(opts: RegistryClientOptions = {}) {
    let ca: string[] | undefined;
    if (opts.caFile) {
      try {
        ca = [readFileSync(opts.caFile, "utf8")];
      } catch (e) {
        throw new OvmsError("FILE_NOT_FOUND", `--ca-file ${opts.caFile}: ${(e as Error).message}`);
      }
    }
    // The CA file adds to the system roots instead of replacing them.
    const connect = ca ? { ca: [...rootCertificates, ...ca] } : undefined;
    this.dispatcher = new Agent({
      connect,
      keepAliveTimeout: 30_000,
      headersTimeout: 60_000,
      bodyTimeout: 120_000,
    });
    this.plainHttp = !!opts.plainHttp;
    this.caFile = opts.caFile;
    this.credentials = opts.credentials ?? dockerConfigCredentials();
    this.userAgent = opts.userAgent ?? `ovm/${VERSION}`;
    this.retry = { attempts: 5, baseMs: 200, maxMs: 10_000, ...(opts.retry ?? {}) };
    this.chunkSize = opts.chunkSize ?? 256 << 20;
    this.highWaterMark = opts.highWaterMark ?? 1 << 20;
    this.fastHttp = opts.fastHttp ?? true;
  }

  /** repository returns the ContentStore of the repository `ref` names (its tag/digest are ignored). */
  repository(ref: Reference | string, opts: { push?: boolean } = {}): Repository {
    const r = typeof ref === "string" ? parseReference(ref) : ref;
    return new Repository(this, r.registry, r.repository, opts);
  }

  /**
   * baseUrl is the API origin of a registry (Docker Hub's API host for docker.io): HTTPS, or
   * HTTP with --plain-http. A loopback registry is tried with HTTPS first and, when it turns
   * out to speak plain HTTP, with HTTP from then on (as docker does for local registries).
   */
  baseUrl(registry: string): URL {
    const host = registry === "docker.io" ? "registry-1.docker.io" : registry;
    const scheme = this.plainHttp ? "http" : (this.schemes.get(registry) ?? "https");
    return new URL(`${scheme}://${host}/`);
  }

  /** scheme is what a registry was found to speak, once known. */
  scheme(registry: string): "http" | "https" | undefined {
    return this.plainHttp ? "http" : this.schemes.get(registry);
  }

  /** options are the options this client was made with, for a twin in a worker thread. */
  get options(): {
    plainHttp: boolean;
    caFile?: string;
    userAgent: string;
    retry: RetryPolicy;
    chunkSize: number;
    highWaterMark: number;
  } {
    return {
      plainHttp: this.plainHttp,
      caFile: this.caFile,
      userAgent: this.userAgent,
      retry: this.retry,
      chunkSize: this.chunkSize,
      highWaterMark: this.highWaterMark,
    };
  }

  /** mayFallBackToHttp: a loopback registry whose HTTPS has not worked yet may be plain HTTP. */
  private mayFallBackToHttp(registry: string): boolean {
    return !this.plainHttp && this.schemes.get(registry) !== "https" && isLoopbackHost(registry);
  }

  /** authorizer returns the (shared) authentication state of a registry. */
  authorizer(registry: string): Authorizer {
    let a = this.authorizers.get(registry);
    if (!a) {
      a = new Authorizer(registry, this.credentials, this.dispatcher, this.userAgent);
      this.authorizers.set(registry, a);
    }
    return a;
  }

  /**
   * ping checks that the registry answers the API base (`GET /v2/`) with the credentials the
   * client has: the check `ovm login` makes before storing them.
   */
  async ping(registry: string): Promise<void> {
    const url = new URL("/v2/", this.baseUrl(registry));
    const res = await this.send(registry, {
      method: "GET",
      url,
      scopes: [],
      ok: [200],
      retry: true,
      context: `login ${registry}`,
    });
    await res.body.dump();
  }

  /**
   * getInto sends a GET and hands its body to `target` chunk by chunk, synchronously: over
   * plain HTTP through fastGetInto (one reused read buffer), otherwise, or when fastGetInto
   * declines, through `send`. A status `target` does not accept is an error like any other.
   */
  async getInto(registry: string, opts: SendOptions, target: FastGetTarget): Promise<void> {
    const url = opts.url;
    if (
      this.fastHttp &&
      opts.method === "GET" &&
      url.protocol === "http:" &&
      url.origin === this.baseUrl(registry).origin
    ) {
      const headers: Record<string, string> = { "user-agent": this.userAgent, ...(opts.headers ?? {}) };
      const authorization = await this.authorizer(registry).header(opts.scopes);
      if (authorization) headers.authorization = authorization;
      try {
        if (await fastGetInto(url, headers, target)) return;
      } catch (e) {
        if (isNetworkFailure(e)) throw networkError(opts.method, url, e, true);
        throw e;
      }
    }
    const res = await this.send(registry, opts);
    const flat: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers))
      if (v !== undefined) flat[k] = Array.isArray(v) ? v.join(", ") : v;
    if (!target.accept(res.statusCode, flat)) {
      await res.body.dump();
      throw new RegistryError(
        "REGISTRY_ERROR",
        `${opts.method} "${redactUrl(url)}": unexpected ${res.statusCode} answer`,
        {
          method: opts.method,
          url: redactUrl(url),
          status: res.statusCode,
        },
      );
    }
    try {
      for await (const c of res.body) target.data(c as Buffer);
    } catch (e) {
      if (isNetworkFailure(e)) throw networkError(opts.method, url, e, true);
      throw e;
    }
  }

  /**
   * send makes one registry request: it adds the Authorization the registry wants (learning it
   * from a 401 once), follows redirects of reads (without credentials to another origin), and
   * retries transient failures when the request allows it, honouring Retry-After.
   */
  async send(registry: string, opts: SendOptions): Promise<Dispatcher.ResponseData> {
    const auth = this.authorizer(registry);
    const replayable =
      opts.body === undefined ||
      opts.body === null ||
      typeof opts.body === "string" ||
      Buffer.isBuffer(opts.body);
    const mayRetry = (opts.retry ?? (opts.method === "GET" || opts.method === "HEAD")) && replayable;
    let url = opts.url;
    let authRetried = false;
    let redirects = 0;
    for (let attempt = 1; ; attempt++) {
      const origin = this.baseUrl(registry).origin;
      if (
        url.protocol === "https:" &&
        this.schemes.get(registry) === "http" &&
        url.origin.replace(/^https:/, "http:") === origin
      ) {
        url = new URL(url.toString().replace(/^https:/, "http:"));
      }
      const headers: Record<string, string> = { "user-agent": this.userAgent, ...(opts.headers ?? {}) };
      const sameOrigin = url.origin === origin;
      const authorization = sameOrigin ? await auth.header(opts.scopes) : undefined;
      if (authorization) headers.authorization = authorization;
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, {
          method: opts.method,
          headers,
          body: opts.body ?? null,
          dispatcher: this.dispatcher,
          highWaterMark: opts.highWaterMark,
        });
      } catch (e) {
        if (url.protocol === "https:" && sameOrigin && this.mayFallBackToHttp(registry) && isNotTls(e)) {
          this.schemes.set(registry, "http");
          attempt--;
          continue;
        }
        if (url.protocol === "https:" && isCertificateError(e)) {
          throw new RegistryError(
            "TLS_ERROR",
            `${opts.method} "${redactUrl(url)}": the registry's certificate is not trusted: ${(e as Error).message} (give its CA with --ca-file)`,
            { method: opts.method, url: redactUrl(url), cause: e },
          );
        }
        if (mayRetry && attempt < this.retry.attempts && isNetworkFailure(e)) {
          await sleep(this.backoff(attempt));
          continue;
        }
        // A streamed body that broke on the way is a lost connection: the caller may start over.
        const err = networkError(opts.method, url, e, !replayable);
        err.attempts = attempt;
        throw err;
      }
      if (url.protocol === "https:" && sameOrigin && !this.schemes.has(registry))
        this.schemes.set(registry, "https");
      const status = res.statusCode;
      if (status === 401 && sameOrigin && replayable && !authRetried) {
        await res.body.dump();
        authRetried = true;
        if (await auth.challenged(res.headers["www-authenticate"], opts.scopes, !!authorization)) {
          attempt--;
          continue;
        }
        throw await this.failure(opts, url, status, "", auth, authorization, res.headers["www-authenticate"]);
      }
      if (
        REDIRECTS.has(status) &&
        (opts.method === "GET" || opts.method === "HEAD") &&
        res.headers.location
      ) {
        await res.body.dump();
        if (++redirects > 10)
          throw new RegistryError("REGISTRY_ERROR", `${opts.method} "${opts.url}": too many redirects`);
        url = new URL(String(res.headers.location), url);
        attempt--;
        continue;
      }
      if (opts.ok.includes(status)) return res;
      const transient = status === 429 || status >= 500;
      if (transient && mayRetry && attempt < this.retry.attempts) {
        await res.body.dump();
        await sleep(this.retryAfter(res.headers["retry-after"]) ?? this.backoff(attempt));
        continue;
      }
      const text = opts.method === "HEAD" ? "" : await readText(res);
      const err = await this.failure(
        opts,
        url,
        status,
        text,
        auth,
        authorization,
        res.headers["www-authenticate"],
      );
      err.attempts = attempt;
      if (transient && attempt > 1) err.message += ` (after ${attempt} attempts)`;
      throw err;
    }
  }

  private async failure(
    opts: SendOptions,
    url: URL,
    status: number,
    text: string,
    auth: Authorizer,
    authorization?: string,
    challenge?: string | string[],
  ): Promise<RegistryError> {
    let note: string | undefined;
    if (status === 401) {
      const bearer = parseChallenges(challenge).find((c) => c.scheme === "bearer");
      if (!authorization || (await auth.anonymous()))
        note = `no credentials for ${auth.registry}: run \`ovm login ${auth.registry}\``;
      else if (bearer?.params.error === "insufficient_scope")
        note = `the credentials do not grant ${mergeScopes([bearer.params.scope ?? opts.scopes.join(" ")]).join(" ")}`;
      else note = "the credentials were rejected";
    }
    return responseError(opts.method, url, status, text, opts.context, note);
  }

  /** backoff is the delay before attempt `attempt + 1`: exponential with ±25% jitter, capped. */
  private backoff(attempt: number): number {
    const d = Math.min(this.retry.maxMs, this.retry.baseMs * 2 ** (attempt - 1));
    return Math.round(d * (0.75 + Math.random() * 0.5));
  }

  /** retryAfter reads a Retry-After header (seconds or an HTTP date) as milliseconds, capped. */
  private retryAfter(h: string | string[] | undefined): number | undefined {
    const v = Array.isArray(h) ? h[0] : h;
    if (v === undefined) return undefined;
    const secs = Number(v);
    const ms = Number.isFinite(secs) ? secs * 1000 : Date.parse(v) - Date.now();
    if (!Number.isFinite(ms)) return undefined;
    return Math.max(0, Math.min(this.retry.maxMs, ms));
  }

  /** close ends every connection of the client. */
  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}

/** isNotTls tells whether a TLS handshake failed because the peer does not speak TLS (a plain HTTP server). */
function isNotTls(e: unknown): boolean {
  const code = String((e as { code?: string })?.code ?? "");
  const msg = String((e as Error)?.message ?? "");
  return (
    code === "ERR_SSL_WRONG_VERSION_NUMBER" ||
    code === "ERR_SSL_PACKET_LENGTH_TOO_LONG" ||
    code === "EPROTO" ||
    /wrong version number|packet length too long/i.test(msg)
  );
}

/** isCertificateError tells whether the registry's certificate could not be verified. */
function isCertificateError(e: unknown): boolean {
  const code = String((e as { code?: string })?.code ?? "");
  return /^(UNABLE_TO_|SELF_SIGNED_CERT|DEPTH_ZERO_SELF_SIGNED_CERT|CERT_|ERR_TLS_CERT_ALTNAME_INVALID|ERR_SSL_.*CERTIFICATE)/.test(
    code,
  );
}

/** readText reads a (small) error body, at most 64 KiB of it. */
export async function readText(res: Dispatcher.ResponseData, limit = 64 << 10): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of res.body) {
      const b = c as Buffer;
      if (n < limit) chunks.push(b.subarray(0, limit - n));
      n += b.length;
    }
  } catch {
    // A broken error body still leaves the status to report.
  }
  return Buffer.concat(chunks).toString("utf8");
}
