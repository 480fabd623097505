import { parseReference, type Reference } from "../core/reference.js";
import { VERSION } from "../version.js";
import { Authorizer, type CredentialProvider } from "./auth.js";
import { AuthTransport } from "./auth-transport.js";
import { dockerConfigCredentials } from "./credentials.js";
import { fastGetInto, type FastGetTarget } from "./fast-get.js";
import { fastPutFrom, type FastPut } from "./fast-put.js";
import { getInto, type FastGet } from "./fetch-into.js";
import { RedirectTransport } from "./redirect-transport.js";
import type { ClientSettings, RegistryEndpoint } from "./registry-endpoint.js";
import { Repository } from "./repository.js";
import { retryPolicy, type RetryPolicy } from "./retry-policy.js";
import { RetryTransport } from "./retry-transport.js";
import { SchemeFallback } from "./scheme-fallback.js";
import type { TransportRequest, TransportResponse } from "./transport.js";
import { UndiciTransport } from "./undici-transport.js";

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

/** Registry is the transport stack of one registry, and the layers the client asks things of. */
interface Registry {
  scheme: SchemeFallback;
  authorizer: Authorizer;
  endpoint: RegistryEndpoint;
}

/**
 * RegistryClient speaks the OCI distribution spec v1.1
 * (https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md) to any number of
 * registries. It builds, per registry, the transport stack of transport.ts over one shared
 * undici connection pool:
 *
 *   RetryTransport → RedirectTransport → AuthTransport → SchemeFallback → UndiciTransport
 *
 * and hands out repositories (`repository(ref)`, the ContentStore of one remote repository)
 * that reach their registry through it.
 */
export class RegistryClient {
  readonly userAgent: string;
  readonly retry: RetryPolicy;
  readonly chunkSize: number;
  readonly highWaterMark: number;
  readonly fastHttp: boolean;
  private readonly http: UndiciTransport;
  private readonly plainHttp: boolean;
  private readonly caFile?: string;
  private readonly credentials: CredentialProvider;
  private readonly registries = new Map<string, Registry>();

  constructor(opts: RegistryClientOptions = {}) {
    this.userAgent = opts.userAgent ?? `ovm/${VERSION}`;
    this.http = new UndiciTransport({ caFile: opts.caFile, userAgent: this.userAgent });
    this.plainHttp = !!opts.plainHttp;
    this.caFile = opts.caFile;
    this.credentials = opts.credentials ?? dockerConfigCredentials();
    this.retry = retryPolicy(opts.retry);
    this.chunkSize = opts.chunkSize ?? 256 << 20;
    this.highWaterMark = opts.highWaterMark ?? 1 << 20;
    this.fastHttp = opts.fastHttp ?? true;
  }

  /** repository returns the ContentStore of the repository `ref` names (its tag/digest are ignored). */
  repository(ref: Reference | string, opts: { push?: boolean } = {}): Repository {
    const r = typeof ref === "string" ? parseReference(ref) : ref;
    return new Repository(this.endpoint(r.registry), r.repository, opts);
  }

  /** endpoint is the registry as its repositories see it (one per registry, shared). */
  endpoint(registry: string): RegistryEndpoint {
    return this.registry(registry).endpoint;
  }

  /**
   * baseUrl is the API origin of a registry (Docker Hub's API host for docker.io): HTTPS, or
   * HTTP with --plain-http. A loopback registry is tried with HTTPS first and, when it turns
   * out to speak plain HTTP, with HTTP from then on (as docker does for local registries).
   */
  baseUrl(registry: string): URL {
    return this.registry(registry).scheme.baseUrl();
  }

  /** scheme is what a registry was found to speak, once known. */
  scheme(registry: string): "http" | "https" | undefined {
    return this.registry(registry).scheme.scheme;
  }

  /** options are the options this client was made with, for a twin in a worker thread. */
  get options(): ClientSettings {
    return {
      plainHttp: this.plainHttp,
      caFile: this.caFile,
      userAgent: this.userAgent,
      retry: this.retry,
      chunkSize: this.chunkSize,
      highWaterMark: this.highWaterMark,
    };
  }

  /** authorizer returns the (shared) authentication state of a registry. */
  authorizer(registry: string): Authorizer {
    return this.registry(registry).authorizer;
  }

  /**
   * ping checks that the registry answers the API base (`GET /v2/`) with the credentials the
   * client has: the check `ovm login` makes before storing them.
   */
  async ping(registry: string, opts: { signal?: AbortSignal } = {}): Promise<void> {
    const res = await this.send(registry, {
      method: "GET",
      url: new URL("/v2/", this.baseUrl(registry)),
      scopes: [],
      ok: [200],
      retry: true,
      context: `login ${registry}`,
      signal: opts.signal,
    });
    await res.body.dump();
  }

  /**
   * getInto sends a GET and hands its body to `target` chunk by chunk, synchronously: over
   * plain HTTP through fastGetInto (one reused read buffer), otherwise, or when fastGetInto
   * declines, through the transport (see fetch-into.ts).
   */
  getInto(registry: string, req: TransportRequest, target: FastGetTarget): Promise<void> {
    const { transport, fastGet } = this.endpoint(registry);
    return getInto(transport, fastGet, req, target);
  }

  /** send makes one registry request through the registry's transport stack. */
  send(registry: string, req: TransportRequest): Promise<TransportResponse> {
    return this.endpoint(registry).transport.send(req);
  }

  /** close ends every connection of the client. */
  async close(): Promise<void> {
    await this.http.close();
  }

  /** registry builds (once) the transport stack of a registry. */
  private registry(registry: string): Registry {
    let r = this.registries.get(registry);
    if (r) return r;
    const scheme = new SchemeFallback(this.http, registry, this.plainHttp);
    const authorizer = new Authorizer(registry, this.credentials, () => this.http.undici(), this.userAgent);
    // Credentials go to the registry's host over HTTPS, and over HTTP only when it speaks HTTP.
    const isRegistryOrigin = (url: URL) => {
      const base = scheme.baseUrl();
      return url.host === base.host && (url.protocol === "https:" || base.protocol === "http:");
    };
    const auth = new AuthTransport(scheme, authorizer, isRegistryOrigin);
    const transport = new RetryTransport(new RedirectTransport(auth), this.retry);
    const fastGet: FastGet | undefined = this.fastHttp
      ? async (req, target) => {
          if (
            req.method !== "GET" ||
            req.url.protocol !== "http:" ||
            req.url.origin !== scheme.baseUrl().origin
          )
            return false;
          const headers: Record<string, string> = { "user-agent": this.userAgent, ...(req.headers ?? {}) };
          const authorization = await auth.authorization(req);
          if (authorization) headers.authorization = authorization;
          return fastGetInto(req.url, headers, target, { signal: req.signal });
        }
      : undefined;
    const fastPut: FastPut | undefined = this.fastHttp
      ? async (req, reader, length, onBytes) => {
          if (req.url.protocol !== "http:" || req.url.origin !== scheme.baseUrl().origin) return false;
          const headers: Record<string, string> = { "user-agent": this.userAgent, ...req.headers };
          const authorization = await auth.authorization(req);
          if (authorization) headers.authorization = authorization;
          return fastPutFrom(req.method, req.url, headers, reader, length, { signal: req.signal, onBytes });
        }
      : undefined;
    const endpoint: RegistryEndpoint = {
      registry,
      transport,
      baseUrl: () => scheme.baseUrl(),
      retry: this.retry,
      chunkSize: this.chunkSize,
      highWaterMark: this.highWaterMark,
      fastGet,
      fastPut,
      handoff: async () => ({
        // A registry found to speak HTTP is spoken HTTP to from the start in the worker.
        client: { ...this.options, plainHttp: this.plainHttp || scheme.scheme === "http" },
        auth: await authorizer.snapshot(),
      }),
    };
    r = { scheme, authorizer, endpoint };
    this.registries.set(registry, r);
    return r;
  }
}
