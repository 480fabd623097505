import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";
import { Agent, request, type Dispatcher } from "undici";
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

/**
 * UndiciTransport is the HTTP itself: one undici connection pool (keep-alive) for every
 * registry a client talks to. It returns every answer, whatever its status; a failure to
 * reach the registry or a connection lost is a RegistryError whose `cause` is the socket's
 * error (the layers above decide on it), an untrusted certificate is TLS_ERROR.
 */
export class UndiciTransport implements Transport {
  readonly dispatcher: Dispatcher;

  constructor(private readonly opts: UndiciOptions) {
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
  }

  async send(req: TransportRequest): Promise<TransportResponse> {
    const url = req.url;
    try {
      const res = await request(url, {
        method: req.method,
        headers: { "user-agent": this.opts.userAgent, ...(req.headers ?? {}) },
        body: req.body ?? null,
        dispatcher: this.dispatcher,
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
    await this.dispatcher.close();
  }
}

/** isCertificateError tells whether the registry's certificate could not be verified. */
function isCertificateError(e: unknown): boolean {
  const code = String((e as { code?: string })?.code ?? "");
  return /^(UNABLE_TO_|SELF_SIGNED_CERT|DEPTH_ZERO_SELF_SIGNED_CERT|CERT_|ERR_TLS_CERT_ALTNAME_INVALID|ERR_SSL_.*CERTIFICATE)/.test(
    code,
  );
}
