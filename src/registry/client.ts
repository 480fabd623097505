import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { rootCertificates } from "node:tls";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { Agent, request, type Dispatcher } from "undici";
import { OvmsError } from "../spec/errors.js";
import { parseReference, type Reference } from "../spec/reference.js";
import { VERSION } from "../version.js";
import { Authorizer, type CredentialProvider } from "./auth.js";
import { dockerConfigCredentials } from "./credentials.js";
import { RegistryError, isNetworkFailure, networkError, responseError } from "./registry-error.js";
import { Repository } from "./repository.js";

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
  /** chunkSize: blobs larger than this are uploaded in PATCH chunks of this size (default 128 MiB). */
  chunkSize?: number;
  /** highWaterMark of response bodies (default 1 MiB): larger reads, fewer stream hops. */
  highWaterMark?: number;
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
  private readonly plainHttp: boolean;
  private readonly credentials: CredentialProvider;
  private readonly authorizers = new Map<string, Authorizer>();

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
    this.credentials = opts.credentials ?? dockerConfigCredentials();
    this.userAgent = opts.userAgent ?? `ovm/${VERSION}`;
    this.retry = { attempts: 5, baseMs: 200, maxMs: 10_000, ...(opts.retry ?? {}) };
    this.chunkSize = opts.chunkSize ?? 128 << 20;
    this.highWaterMark = opts.highWaterMark ?? 1 << 20;
  }

  /** repository returns the ContentStore of the repository `ref` names (its tag/digest are ignored). */
  repository(ref: Reference | string, opts: { push?: boolean } = {}): Repository {
    const r = typeof ref === "string" ? parseReference(ref) : ref;
    return new Repository(this, r.registry, r.repository, opts);
  }

  /** baseUrl is the API origin of a registry: HTTPS, HTTP for loopback or --plain-http; Docker Hub's API host. */
  baseUrl(registry: string): URL {
    const host = registry === "docker.io" ? "registry-1.docker.io" : registry;
    const scheme = this.plainHttp || isLoopbackHost(host) ? "http" : "https";
    return new URL(`${scheme}://${host}/`);
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
    const res = await this.send(registry, { method: "GET", url, scopes: [], ok: [200], retry: true, context: `login ${registry}` });
    await res.body.dump();
  }

  /**
   * send makes one registry request: it adds the Authorization the registry wants (learning it
   * from a 401 once), follows redirects of reads (without credentials to another origin), and
   * retries transient failures when the request allows it, honouring Retry-After.
   */
  async send(registry: string, opts: SendOptions): Promise<Dispatcher.ResponseData> {
    const auth = this.authorizer(registry);
    const replayable = opts.body === undefined || opts.body === null || typeof opts.body === "string" || Buffer.isBuffer(opts.body);
    const mayRetry = (opts.retry ?? (opts.method === "GET" || opts.method === "HEAD")) && replayable;
    const origin = this.baseUrl(registry).origin;
    let url = opts.url;
    let authRetried = false;
    let redirects = 0;
    for (let attempt = 1; ; attempt++) {
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
        if (mayRetry && attempt < this.retry.attempts && isNetworkFailure(e)) {
          await sleep(this.backoff(attempt));
          continue;
        }
        // A streamed body that broke on the way is a lost connection: the caller may start over.
        throw networkError(opts.method, url, e, !replayable);
      }
      const status = res.statusCode;
      if (status === 401 && sameOrigin && replayable && !authRetried) {
        await res.body.dump();
        authRetried = true;
        if (await auth.challenged(res.headers["www-authenticate"], opts.scopes, !!authorization)) {
          attempt--;
          continue;
        }
        throw this.failure(opts, url, status, "", authorization);
      }
      if (REDIRECTS.has(status) && (opts.method === "GET" || opts.method === "HEAD") && res.headers.location) {
        await res.body.dump();
        if (++redirects > 10) throw new RegistryError("REGISTRY_ERROR", `${opts.method} "${opts.url}": too many redirects`);
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
      const err = this.failure(opts, url, status, text, authorization);
      if (transient && attempt > 1) err.message += ` (after ${attempt} attempts)`;
      throw err;
    }
  }

  private failure(opts: SendOptions, url: URL, status: number, text: string, authorization?: string): RegistryError {
    const err = responseError(opts.method, url, status, text, opts.context);
    if (status === 401) {
      err.message += authorization ? " (the credentials were rejected)" : " (no credentials: run `ovm login`)";
    }
    return err;
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
