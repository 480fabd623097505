import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";
import type { Dispatcher } from "undici";
import { OvmsError } from "../core/errors.js";
import { cancelled } from "./cancel.js";
import { RegistryError, networkError, redactUrl } from "./registry-error.js";
import {
  isReplayable,
  type ResponseBody,
  type Transport,
  type TransportRequest,
  type TransportResponse,
} from "./transport.js";

/** UndiciOptions configure the HTTP layer. */
export interface UndiciOptions {
  /** caFile is a PEM bundle of certificate authorities to trust besides the system ones. */
  caFile?: string;
  userAgent: string;
}

/** UndiciHttp is undici's `request` with the connection pool to send it through. */
export interface UndiciHttp {
  request: typeof import("undici").request;
  dispatcher: Dispatcher;
}

/**
 * UndiciTransport is the HTTP itself: one undici connection pool (keep-alive) for every
 * registry a client talks to. It returns every answer, whatever its status; a failure to
 * reach the registry or a connection lost is a RegistryError whose `cause` is the socket's
 * error (the layers above decide on it), an untrusted certificate is TLS_ERROR.
 */
export class UndiciTransport implements Transport {
  private readonly connect?: { ca: string[] };
  /** The pool, made on first use: loading undici costs ~50 ms, and a transfer worker that only takes the fast path never needs it. */
  private http?: Promise<UndiciHttp>;

  constructor(private readonly opts: UndiciOptions) {
    if (opts.caFile) {
      let ca: string;
      try {
        ca = readFileSync(opts.caFile, "utf8");
      } catch (e) {
        throw new OvmsError("FILE_NOT_FOUND", `--ca-file ${opts.caFile}: ${(e as Error).message}`);
      }
      // The CA file adds to the system roots instead of replacing them.
      this.connect = { ca: [...rootCertificates, ca] };
    }
  }

  /** undici returns undici's `request` and the client's connection pool, loading and making them once. */
  undici(): Promise<UndiciHttp> {
    this.http ??= import("undici").then((u) => ({
      request: u.request,
      dispatcher: new u.Agent({
        connect: this.connect,
        keepAliveTimeout: 30_000,
        headersTimeout: 60_000,
        bodyTimeout: 120_000,
      }),
    }));
    return this.http;
  }

  async send(req: TransportRequest): Promise<TransportResponse> {
    const url = req.url;
    try {
      const { request, dispatcher } = await this.undici();
      const res = await request(url, {
        method: req.method,
        headers: { "user-agent": this.opts.userAgent, ...(req.headers ?? {}) },
        body: req.body ?? null,
        dispatcher,
        highWaterMark: req.highWaterMark,
        signal: req.signal,
      });
      return { statusCode: res.statusCode, headers: res.headers, body: res.body as ResponseBody, url };
    } catch (e) {
      if (req.signal?.aborted) throw cancelled(`${req.method} "${redactUrl(url)}"`, req.signal);
      if (url.protocol === "https:" && isCertificateError(e)) {
        throw new RegistryError(
          "TLS_ERROR",
          `${req.method} "${redactUrl(url)}": the registry's certificate is not trusted: ${(e as Error).message} (give its CA with --ca-file)`,
          { method: req.method, url: redactUrl(url), cause: e },
        );
      }
      // A streamed body that broke on the way is a lost connection: the caller may start over.
      throw networkError(req.method, url, e, !isReplayable(req));
    }
  }

  /** close ends every connection of the pool. */
  async close(): Promise<void> {
    if (this.http) await (await this.http).dispatcher.close();
  }
}

/** isCertificateError tells whether the registry's certificate could not be verified. */
function isCertificateError(e: unknown): boolean {
  const code = String((e as { code?: string })?.code ?? "");
  return /^(UNABLE_TO_|SELF_SIGNED_CERT|DEPTH_ZERO_SELF_SIGNED_CERT|CERT_|ERR_TLS_CERT_ALTNAME_INVALID|ERR_SSL_.*CERTIFICATE)/.test(
    code,
  );
}
