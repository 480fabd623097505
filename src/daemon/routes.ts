import type { IncomingMessage, ServerResponse } from "node:http";
import type { Readable } from "node:stream";
import { timingSafeEqual } from "node:crypto";
import { OvmsError } from "../core/errors.js";
import type {
  InjectRequest,
  KillRequest,
  StdinRequest,
  SnapshotRequest,
  StartRequest,
  StopRequest,
} from "../api/types.generated.js";
import { badRequest, type Contract, type ParsedRequest } from "./contract.js";
import type { Controller } from "./controller.js";
import { toApiError } from "./errors.js";
import type { Logger } from "./log.js";

/** Reply is what a route answers: a JSON body, or a stream of records sent as NDJSON. */
export type Reply = { status: number; body: unknown } | { status: number; records: Readable };

/** Route handles one operation of the contract, given its validated parameters and body. */
export type Route = (req: ParsedRequest, ctx: RequestContext) => Promise<Reply>;

/** RequestContext says where a request came from and tells when its client goes away. */
export interface RequestContext {
  /** remote: the request came over TCP (not from this host's UNIX socket). */
  remote: boolean;
  /** signal aborts when the client goes away before its answer is complete. */
  signal: AbortSignal;
  /** closed settles when the connection of this request closes: `lost` when the answer was not complete. */
  closed: Promise<{ lost: boolean }>;
}

/** MAX_BODY bounds a request body: the largest legitimate one is an inject of a few MiB, base64. */
const MAX_BODY = 16 << 20;

const flag = (v: string | number | undefined) => v === "1" || v === "true";
const json = async (status: number, body: Promise<unknown>): Promise<Reply> => ({ status, body: await body });

/**
 * routes maps each operationId of spec/api/ovms-runtime.openapi.yaml to the controller
 * call that serves it. The contract has already checked parameters and bodies.
 */
export function routes(c: Controller): Record<string, Route> {
  return {
    version: () => json(200, c.version()),
    startInstance: (r, ctx) => {
      const body = r.body as StartRequest;
      // An attached start is held by this request's connection until it is answered.
      return json(
        202,
        c.start(body, { allowPaths: !ctx.remote, ...(body.attach ? { lifeline: ctx.signal } : {}) }),
      );
    },
    stopInstance: (r) => json(200, c.stop(r.body as StopRequest)),
    killInstance: (r) => json(200, c.kill(r.body as KillRequest)),
    writeStdin: (r) => json(200, c.stdin(r.body as StdinRequest)),
    snapshotInstance: (r) => json(200, c.snapshot(r.body as SnapshotRequest)),
    injectInstance: (r) => json(200, c.inject(r.body as InjectRequest)),
    getStatus: (r) => json(200, c.status(r.params.instance_id)),
    listInstances: (r) => json(200, c.list(flag(r.query.all))),
    removeInstance: (r) => json(200, c.remove(r.params.instance_id, flag(r.query.force))),
    listPools: async () => ({ status: 200, body: c.listPools() }),
    emptyPool: (r) => json(200, c.emptyPool(r.params.reference)),
    getLogs: async (r, ctx) => {
      const tail = r.query.tail as number | undefined;
      const follow = flag(r.query.follow);
      const attach = flag(r.query.attach);
      if (attach && !follow)
        throw badRequest("GET /logs/{instance_id}", [
          { path: "/query/attach", message: "needs follow=1: only a followed stream can hold an instance" },
        ]);
      const records = await c.logs(r.params.instance_id, { follow, ...(tail !== undefined ? { tail } : {}) });
      if (attach) await c.attach(r.params.instance_id, ctx.closed);
      return { status: 200, records };
    },
  };
}

/** HandlerOptions configure the request handler of one listener. */
export interface HandlerOptions {
  /** token: every request must carry `Authorization: Bearer <token>` (TCP listeners). */
  token?: string;
}

/**
 * requestHandler turns HTTP requests into route calls: authenticate (TCP), match the
 * contract's path and method, read and parse the JSON body, validate it, call the route,
 * and write the reply. Every failure becomes the contract's error body through toApiError.
 */
export function requestHandler(
  contract: Contract,
  table: Record<string, Route>,
  log: Logger,
  opts: HandlerOptions = {},
) {
  for (const op of contract.operations) {
    if (!table[op.operationId])
      throw new OvmsError("INTERNAL", `the contract's operation ${op.operationId} has no route`);
  }
  const want = opts.token ? Buffer.from(`Bearer ${opts.token}`) : undefined;

  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const t0 = performance.now();
    const method = req.method ?? "GET";
    const url = new URL(req.url ?? "/", "http://localhost");
    const done = (status: number) =>
      log.debug("request", { method, path: url.pathname, status, ms: Math.round(performance.now() - t0) });
    // The client going away before its answer is complete: a lifeline lost (lifelines.ts).
    const gone = new AbortController();
    const closed = new Promise<{ lost: boolean }>((resolve) =>
      res.once("close", () => {
        const lost = !res.writableFinished;
        if (lost) gone.abort(new OvmsError("CANCELLED", `${method} ${url.pathname}: the client went away`));
        resolve({ lost });
      }),
    );
    try {
      if (want) {
        const got = Buffer.from(req.headers.authorization ?? "");
        if (got.length !== want.length || !timingSafeEqual(got, want)) {
          throw new OvmsError(
            "UNAUTHORIZED",
            "a bearer token is required on this listener (Authorization: Bearer <token>)",
          );
        }
      }
      const m = contract.match(method, url.pathname);
      if (!("op" in m)) {
        if (m.allowed.length) {
          res.setHeader("allow", m.allowed.join(", "));
          throw new OvmsError(
            "METHOD_NOT_ALLOWED",
            `${method} ${url.pathname}: method not allowed (allowed: ${m.allowed.join(", ")})`,
          );
        }
        throw new OvmsError("NOT_FOUND", `${method} ${url.pathname}: no such endpoint`);
      }
      const text = await readBody(req, res);
      let body: unknown;
      if (text.length) {
        try {
          body = JSON.parse(text);
        } catch (e) {
          throw badRequest(`${method} ${m.op.template}`, [
            { path: "", message: `not valid JSON: ${(e as Error).message}` },
          ]);
        }
      }
      const parsed = contract.parse(m.op, m.params, url.searchParams, body, text.length > 0);
      const reply = await table[m.op.operationId](parsed, {
        remote: want !== undefined,
        signal: gone.signal,
        closed,
      });
      if ("records" in reply) {
        await streamRecords(res, reply.status, reply.records);
      } else {
        send(res, reply.status, reply.body);
      }
      done(reply.status);
    } catch (e) {
      const { status, body } = toApiError(e);
      if (status >= 500)
        log.error(`${method} ${url.pathname}: ${body.error.message}`, {
          code: body.error.code,
          stack: (e as Error)?.stack?.split("\n").slice(1, 4).join(" |"),
        });
      if (!res.headersSent) {
        send(res, status, body);
        // A refused oversized body is not drained: the connection goes once the answer is out.
        if (res.getHeader("connection") === "close") res.on("finish", () => req.destroy());
      } else res.destroy();
      done(status);
    }
  };
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body) + "\n";
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/**
 * streamRecords writes one JSON record per line (application/x-ndjson), waiting when the
 * client reads slowly, and closes the record source when the client goes away.
 */
async function streamRecords(res: ServerResponse, status: number, records: Readable): Promise<void> {
  res.writeHead(status, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
  res.flushHeaders();
  let clientGone = false;
  const gone = () => {
    clientGone = true;
    records.destroy();
  };
  res.on("close", gone);
  try {
    for await (const rec of records) {
      if (res.destroyed) break;
      if (!res.write(JSON.stringify(rec) + "\n")) {
        await new Promise<void>((r) => {
          res.once("drain", r);
          res.once("close", r);
        });
      }
    }
  } catch (e) {
    // The client went away and the source was closed under the loop: nothing went wrong.
    if (!clientGone) throw e;
  } finally {
    res.off("close", gone);
    records.destroy();
    if (!res.destroyed) res.end();
  }
}

/**
 * readBody reads a request body of at most MAX_BODY bytes: a larger declared Content-Length
 * is refused before a byte is read, and a body that grows past the limit (chunked) is refused
 * as soon as it does. Either way the connection is closed after the answer, so the rest of
 * the body is never read.
 */
async function readBody(req: IncomingMessage, res: ServerResponse): Promise<string> {
  const tooLarge = (n: string) => {
    res.setHeader("connection", "close");
    return new OvmsError(
      "BAD_REQUEST",
      `request body of ${n} bytes is larger than the limit of ${MAX_BODY} bytes`,
      {
        details: { problems: [{ path: "", message: `larger than ${MAX_BODY} bytes` }] },
      },
    );
  };
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > MAX_BODY) throw tooLarge(String(declared));
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > MAX_BODY) throw tooLarge(`more than ${MAX_BODY}`);
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString("utf8");
}
