import { createServer, request, type Server } from "node:http";

/**
 * SubjectDroppingProxy stands in front of a real registry and gives manifests back without
 * their `subject` (re-serialized, so their bytes no longer hash to their digest): the fault of
 * a registry that stores manifests as it understands them instead of byte for byte. A real
 * registry cannot be made to do this on demand; everything else passes through unchanged
 * (the Host header too, so the registry's Location headers point back at the proxy).
 */
export class SubjectDroppingProxy {
  private server!: Server;
  port = 0;
  /** dropped counts the manifests given back without their subject. */
  dropped = 0;

  constructor(private readonly upstream: number) {}

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const up = request(
        { host: "127.0.0.1", port: this.upstream, method: req.method, path: req.url, headers: req.headers },
        (r) => {
          const manifest =
            req.method === "GET" && /\/manifests\//.test(req.url ?? "") && r.statusCode === 200;
          if (!manifest) {
            res.writeHead(r.statusCode ?? 502, r.headers);
            r.pipe(res);
            return;
          }
          const chunks: Buffer[] = [];
          r.on("data", (c: Buffer) => chunks.push(c));
          r.on("end", () => {
            let body = Buffer.concat(chunks);
            try {
              const doc = JSON.parse(body.toString("utf8"));
              if (doc.subject) {
                delete doc.subject;
                body = Buffer.from(JSON.stringify(doc));
                this.dropped++;
              }
            } catch {
              // not JSON: passed on as it is
            }
            res.writeHead(r.statusCode ?? 200, { ...r.headers, "content-length": String(body.length) });
            res.end(body);
          });
        },
      );
      up.on("error", () => res.destroy());
      req.pipe(up);
    });
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", () => r()));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}
