import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";

/**
 * FaultProxy is an HTTP proxy in front of a real registry that produces, on demand, the faults
 * a real registry does not: a flipped byte in a blob, a connection cut in the middle of a
 * blob, a blob that stalls half-way, 429/503 answers. It also serves `tags/list?n=&last=` pages with a `Link` header the
 * way the distribution spec describes, which registry v2.8 does not implement (it ignores `n`).
 * Everything else goes through unchanged (the Host header too, so the registry's Location
 * headers point back at the proxy).
 */
export class FaultProxy {
  /** requests records every request that reached the proxy. */
  readonly requests: { method: string; path: string; range?: string; status?: number }[] = [];
  private flips = new Map<string, number | undefined>();
  private cuts = new Map<string, number>();
  private stalls = new Map<string, { after: number; reached: () => void }>();
  private failures: {
    match: (method: string, path: string) => boolean;
    status: number;
    left: number;
    headers: Record<string, string>;
  }[] = [];
  private custom: {
    match: (method: string, path: string) => boolean;
    left: number;
    handle: (req: IncomingMessage, res: ServerResponse, upstream: number) => void;
  }[] = [];
  private server!: Server;
  port = 0;

  constructor(private readonly upstream: number) {}

  /** host is `127.0.0.1:<port>` of the proxy. */
  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", () => r()));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  /** flipByte corrupts byte `offset` (default: the middle) of every GET of blob `digest`. */
  flipByte(digest: string, offset?: number): void {
    this.flips.set(digest, offset);
  }

  /** cutOnce drops the connection of the next GET of blob `digest` after `after` bytes of its body. */
  cutOnce(digest: string, after: number): void {
    this.cuts.set(digest, after);
  }

  /**
   * stallOnce sends the first `after` bytes of the next GET of blob `digest`, then nothing
   * more (the connection stays open, as with a registry that hangs); the promise resolves
   * when those bytes are sent, so a test can interrupt the download right in the middle.
   */
  stallOnce(digest: string, after: number): Promise<void> {
    return new Promise((reached) => this.stalls.set(digest, { after, reached }));
  }

  /** fail answers `status` to the next `times` requests `match` accepts (then lets them through). */
  fail(
    match: (method: string, path: string) => boolean,
    status: number,
    times: number,
    headers: Record<string, string> = {},
  ): void {
    this.failures.push({ match, status, left: times, headers });
  }

  /**
   * answer lets `handle` answer the next `times` requests `match` accepts (default: all of
   * them), for faults that need a response of their own: a wrong Content-Length, an endless
   * body, an oversized manifest, a redirect loop. `upstream` is the real registry's port.
   */
  answer(
    match: (method: string, path: string) => boolean,
    handle: (req: IncomingMessage, res: ServerResponse, upstream: number) => void,
    times = Infinity,
  ): void {
    this.custom.push({ match, handle, left: times });
  }

  /** reset forgets every fault and the request log. */
  reset(): void {
    this.custom = [];
    this.flips.clear();
    this.cuts.clear();
    this.stalls.clear();
    this.failures = [];
    this.requests.length = 0;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = req.url ?? "/";
    const method = req.method ?? "GET";
    const entry: FaultProxy["requests"][number] = { method, path };
    if (req.headers.range) entry.range = String(req.headers.range);
    this.requests.push(entry);

    const c = this.custom.find((x) => x.left > 0 && x.match(method, path));
    if (c) {
      c.left--;
      c.handle(req, res, this.upstream);
      return;
    }

    const f = this.failures.find((x) => x.left > 0 && x.match(method, path));
    if (f) {
      f.left--;
      entry.status = f.status;
      req.resume();
      const body =
        f.status === 429
          ? JSON.stringify({ errors: [{ code: "TOOMANYREQUESTS", message: "slow down" }] })
          : JSON.stringify({ errors: [{ code: "UNAVAILABLE", message: "service unavailable" }] });
      res.writeHead(f.status, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
        ...f.headers,
      });
      res.end(body);
      return;
    }

    const url = new URL(path, "http://x");
    const tagsList = /^\/v2\/(.+)\/tags\/list$/.exec(url.pathname);
    if (tagsList && method === "GET" && url.searchParams.has("n")) {
      this.paginate(req, res, url, tagsList[1], entry);
      return;
    }

    const blob = /^\/v2\/.+\/blobs\/(sha256:[a-f0-9]{64})$/.exec(url.pathname)?.[1];
    const up = request(
      { host: "127.0.0.1", port: this.upstream, method, path, headers: req.headers },
      (ur) => {
        entry.status = ur.statusCode;
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        if (!(method === "GET" && blob && (ur.statusCode === 200 || ur.statusCode === 206))) {
          ur.pipe(res);
          return;
        }
        let pos =
          ur.statusCode === 206
            ? Number(/bytes (\d+)-/.exec(String(ur.headers["content-range"]))?.[1] ?? 0)
            : 0;
        const total = Number(ur.headers["content-length"] ?? 0) + pos;
        const flipAt = this.flips.has(blob) ? (this.flips.get(blob) ?? Math.floor(total / 2)) : -1;
        const cutAt = this.cuts.get(blob);
        if (cutAt !== undefined) this.cuts.delete(blob);
        const stall = this.stalls.get(blob);
        if (stall) this.stalls.delete(blob);
        let stalled = false;
        // A client that goes away ends the upstream request too.
        res.on("close", () => ur.destroy());
        let sent = 0;
        ur.on("data", (chunk: Buffer) => {
          if (stalled) return;
          let c = chunk;
          if (flipAt >= pos && flipAt < pos + c.length) {
            c = Buffer.from(c);
            c[flipAt - pos] ^= 0xff;
          }
          pos += c.length;
          if (cutAt !== undefined && sent + c.length >= cutAt) {
            res.write(c.subarray(0, cutAt - sent));
            ur.destroy();
            // Destroying the socket mid-body is what a dropped connection looks like to the client.
            setImmediate(() => res.socket?.destroy());
            return;
          }
          if (stall && sent + c.length >= stall.after) {
            res.write(c.subarray(0, stall.after - sent));
            stalled = true;
            ur.pause();
            stall.reached();
            return;
          }
          sent += c.length;
          if (!res.write(c)) {
            ur.pause();
            res.once("drain", () => ur.resume());
          }
        });
        ur.on("end", () => {
          if (!stalled) res.end();
        });
      },
    );
    up.on("error", () => res.destroy());
    req.pipe(up);
  }

  private paginate(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    name: string,
    entry: FaultProxy["requests"][number],
  ): void {
    const n = Number(url.searchParams.get("n"));
    const last = url.searchParams.get("last");
    const headers = { ...req.headers };
    const up = request(
      { host: "127.0.0.1", port: this.upstream, method: "GET", path: `/v2/${name}/tags/list`, headers },
      (ur) => {
        const chunks: Buffer[] = [];
        ur.on("data", (c: Buffer) => chunks.push(c));
        ur.on("end", () => {
          entry.status = ur.statusCode;
          if (ur.statusCode !== 200) {
            res.writeHead(ur.statusCode ?? 502, ur.headers);
            res.end(Buffer.concat(chunks));
            return;
          }
          const all = (
            (JSON.parse(Buffer.concat(chunks).toString()) as { tags?: string[] }).tags ?? []
          ).sort();
          const rest = last ? all.filter((t) => t > last) : all;
          const page = rest.slice(0, n);
          const h: Record<string, string> = { "content-type": "application/json" };
          if (rest.length > n)
            h.link = `</v2/${name}/tags/list?n=${n}&last=${encodeURIComponent(page[page.length - 1])}>; rel="next"`;
          const body = JSON.stringify({ name, tags: page });
          res.writeHead(200, { ...h, "content-length": Buffer.byteLength(body) });
          res.end(body);
        });
      },
    );
    up.on("error", () => res.destroy());
    up.end();
  }
}

/** faultProxy starts a proxy to `upstreamPort` for one test and closes it when the test ends. */
export async function faultProxy(
  t: { after: (fn: () => Promise<void>) => void },
  upstreamPort: number,
): Promise<FaultProxy> {
  const p = await new FaultProxy(upstreamPort).start();
  t.after(() => p.close());
  return p;
}
