import { isIP } from "node:net";
import type { Transport, TransportRequest, TransportResponse } from "./transport.js";

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

/** apiHost is the host that serves a registry's API (Docker Hub's is not docker.io). */
export function apiHost(registry: string): string {
  return registry === "docker.io" ? "registry-1.docker.io" : registry;
}

/**
 * SchemeFallback decides HTTPS or HTTP for one registry. With `plainHttp` it is always HTTP.
 * Otherwise a loopback registry is tried with HTTPS first and, when it turns out to speak
 * plain HTTP (the TLS handshake meets an HTTP answer), with HTTP from then on, as docker does
 * for local registries; the answer is remembered for every later request of the client.
 * Requests built before the scheme was known are rewritten to it.
 */
export class SchemeFallback implements Transport {
  private known?: "http" | "https";

  constructor(
    private readonly inner: Transport,
    /** registry is `host[:port]` as in references. */
    readonly registry: string,
    private readonly plainHttp = false,
  ) {}

  /** scheme is what the registry was found to speak, once known (always http with plainHttp). */
  get scheme(): "http" | "https" | undefined {
    return this.plainHttp ? "http" : this.known;
  }

  /** baseUrl is the API origin of the registry: HTTPS until it is known to speak HTTP. */
  baseUrl(): URL {
    return new URL(`${this.scheme ?? "https"}://${apiHost(this.registry)}/`);
  }

  async send(req: TransportRequest): Promise<TransportResponse> {
    let url = req.url;
    const host = apiHost(this.registry);
    if (url.protocol === "https:" && url.host === host && this.scheme === "http")
      url = new URL(url.toString().replace(/^https:/, "http:"));
    try {
      const res = await this.inner.send(url === req.url ? req : { ...req, url });
      if (url.protocol === "https:" && url.host === host && !this.known) this.known = "https";
      return res;
    } catch (e) {
      const mayFallBack =
        !this.plainHttp && this.known !== "https" && isLoopbackHost(this.registry) && url.host === host;
      if (url.protocol !== "https:" || !mayFallBack || !isNotTls((e as Error).cause ?? e)) throw e;
      this.known = "http";
      return this.inner.send({ ...req, url: new URL(url.toString().replace(/^https:/, "http:")) });
    }
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
