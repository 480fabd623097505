import { chmod } from "node:fs/promises";
import { createServer, request, type IncomingMessage, type Server } from "node:http";

/**
 * LyingRuntimeProxy stands in front of a real runtime's socket and breaks the contract in ways
 * a real runtime cannot be made to on demand, each switchable:
 * - `conflictAs400`: every 409 CONFLICT is answered as HTTP 400 (the body, code CONFLICT, kept);
 * - `dropCreatedAt`: InstanceInfo loses its required `created_at`;
 * - `stoppingAsExited`: a `stopping` instance is reported `exited` (the state skips a move);
 * - `rebootSnapshots`: a start of a snapshot artifact (without overrides that would be
 *   refused) cold-boots the artifact it was taken from instead of restoring it.
 * Everything else goes through unchanged, log streams included.
 */
export interface Lies {
  conflictAs400?: boolean;
  dropCreatedAt?: boolean;
  stoppingAsExited?: boolean;
  rebootSnapshots?: boolean;
}

export class LyingRuntimeProxy {
  private server!: Server;
  /** told counts how often each lie was told. */
  readonly told: Record<keyof Lies, number> = {
    conflictAs400: 0,
    dropCreatedAt: 0,
    stoppingAsExited: 0,
    rebootSnapshots: 0,
  };
  /** The manifest the counting guest was started from: what a "restore" boots instead. */
  private counterManifest?: string;

  constructor(
    private readonly upstream: string,
    readonly socketPath: string,
    private readonly lies: Lies,
  ) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        let body = Buffer.concat(chunks);
        if (req.method === "POST" && req.url === "/start") body = Buffer.from(this.rewriteStart(body));
        const headers = { ...req.headers };
        if (body.length) headers["content-length"] = String(body.length);
        const up = request({ socketPath: this.upstream, method: req.method, path: req.url, headers }, (r) =>
          this.answer(r, res),
        );
        up.on("error", () => res.destroy());
        res.on("close", () => up.destroy());
        up.end(body);
      });
    });
    await new Promise<void>((r) => this.server.listen(this.socketPath, () => r()));
    await chmod(this.socketPath, 0o600);
    return this;
  }

  private rewriteStart(body: Buffer): Uint8Array {
    let doc: { manifest?: string; overrides?: Record<string, unknown> };
    try {
      doc = JSON.parse(body.toString("utf8"));
    } catch {
      return body;
    }
    const o = doc.overrides ?? {};
    if (typeof o.name === "string" && o.name.endsWith("-counter")) this.counterManifest = doc.manifest;
    const plain = Object.keys(o).every((k) => k === "name" || k === "accel");
    if (this.lies.rebootSnapshots && this.counterManifest && /:snap-/.test(doc.manifest ?? "") && plain) {
      this.told.rebootSnapshots++;
      return Buffer.from(JSON.stringify({ ...doc, manifest: this.counterManifest }));
    }
    return body;
  }

  private answer(r: IncomingMessage, res: import("node:http").ServerResponse): void {
    let status = r.statusCode ?? 502;
    if (!String(r.headers["content-type"] ?? "").startsWith("application/json")) {
      res.writeHead(status, r.headers);
      r.pipe(res);
      return;
    }
    const chunks: Buffer[] = [];
    r.on("data", (c: Buffer) => chunks.push(c));
    r.on("end", () => {
      let text = Buffer.concat(chunks).toString("utf8");
      if (status === 409 && this.lies.conflictAs400) {
        status = 400;
        this.told.conflictAs400++;
      }
      try {
        const doc = JSON.parse(text);
        const infos = Array.isArray(doc?.instances)
          ? doc.instances
          : doc?.instance_id && doc?.state
            ? [doc]
            : [];
        for (const i of infos) {
          if (this.lies.dropCreatedAt && i.created_at) {
            delete i.created_at;
            this.told.dropCreatedAt++;
          }
          if (this.lies.stoppingAsExited && i.state === "stopping") {
            i.state = "exited";
            this.told.stoppingAsExited++;
          }
        }
        text = JSON.stringify(doc);
      } catch {
        // not JSON after all: passed on as it is
      }
      res.writeHead(status, { ...r.headers, "content-length": String(Buffer.byteLength(text)) });
      res.end(text);
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}
