import { request, type IncomingMessage } from "node:http";
import { StringDecoder } from "node:string_decoder";
import type { LogRecord } from "../api/types.generated.js";
import type { OpenApiContract } from "./openapi.js";

/** RuntimeTarget says where a runtime answers: its UNIX socket, or a TCP URL with a bearer token. */
export interface RuntimeTarget {
  socketPath?: string;
  url?: string;
  token?: string;
}

/** Answer is one response as the suite saw it: status, headers, the parsed body and the raw text. */
export interface Answer<T = any> {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  contentType?: string;
  /** body is the parsed JSON (an array of records for NDJSON); undefined when the text is not JSON. */
  body: T;
  text: string;
  /** ms is how long the answer took, from sending to the last byte. */
  ms: number;
}

/** ErrorSeen is one error answer, kept so the error model can be checked over the whole run. */
export interface ErrorSeen {
  method: string;
  path: string;
  status: number;
  code?: string;
}

/** RequestOptions: a raw body (invalid JSON), extra headers, or another token (null: none). */
export interface RequestOptions {
  raw?: string;
  headers?: Record<string, string>;
  token?: string | null;
  timeoutMs?: number;
}

/** Followed is an open `GET /logs?follow=1` stream. */
export interface Followed {
  /** records holds every record received, with its arrival time (performance.now()). */
  records: { rec: LogRecord; at: number }[];
  /** ended settles when the runtime ends the stream (or close() was called, or it failed). */
  ended: Promise<"end" | "closed" | "error">;
  /** endedAt is when the stream ended, once it has. */
  endedAt?: number;
  /** next waits for a record `match` accepts (including those already received after `from`). */
  next(match: (rec: LogRecord) => boolean, timeoutMs: number, from?: number): Promise<LogRecord>;
  close(): void;
}

/**
 * RuntimeApi is the suite's only way to a runtime: plain HTTP/1.1 over the runtime's socket
 * (or TCP with its token), black-box. It keeps what it needs to judge the run as a whole:
 * every response is checked against the OpenAPI document (problems go to `violations`) and
 * every error answer is recorded (`errors`), so the error model is checked on every request,
 * not only on those a check was written for. It never throws for an HTTP status: checks look.
 */
export class RuntimeApi {
  readonly violations: string[] = [];
  readonly errors: ErrorSeen[] = [];
  /** onAnswer is told every whole answer (the suite notes every instance a start created). */
  onAnswer?: (method: string, path: string, answer: Answer) => void;
  private readonly url?: URL;

  constructor(
    readonly target: RuntimeTarget,
    private readonly contract: OpenApiContract,
  ) {
    if (target.url) this.url = new URL(target.url);
  }

  /** where names the runtime for messages. */
  get where(): string {
    return this.url ? this.url.origin : (this.target.socketPath ?? "(nowhere)");
  }

  get<T = any>(path: string, opts?: RequestOptions): Promise<Answer<T>> {
    return this.request<T>("GET", path, undefined, opts);
  }

  post<T = any>(path: string, body: unknown, opts?: RequestOptions): Promise<Answer<T>> {
    return this.request<T>("POST", path, body, opts);
  }

  delete<T = any>(path: string, opts?: RequestOptions): Promise<Answer<T>> {
    return this.request<T>("DELETE", path, undefined, opts);
  }

  /** request sends one request and reads the whole answer; the contract checks it on the way. */
  async request<T = any>(
    method: string,
    path: string,
    body?: unknown,
    opts: RequestOptions = {},
  ): Promise<Answer<T>> {
    const t0 = performance.now();
    const payload = opts.raw ?? (body === undefined ? undefined : JSON.stringify(body));
    const res = await this.send(method, path, payload, opts);
    const text = await readAll(res);
    const contentType = header(res.headers["content-type"]);
    let parsed: unknown;
    try {
      parsed = contentType?.startsWith("application/x-ndjson")
        ? text
            .split("\n")
            .filter((l) => l.trim())
            .map((l) => JSON.parse(l))
        : text
          ? JSON.parse(text)
          : undefined;
    } catch {
      parsed = undefined;
      this.violations.push(
        `${method} ${path} ${res.statusCode}: the body is not JSON: ${text.slice(0, 200)}`,
      );
    }
    const status = res.statusCode ?? 0;
    this.judge(method, path, status, contentType, parsed);
    const answer: Answer<T> = {
      status,
      headers: res.headers,
      contentType,
      body: parsed as T,
      text,
      ms: Math.round(performance.now() - t0),
    };
    this.onAnswer?.(method, path, answer);
    return answer;
  }

  /**
   * follow opens `GET /logs/{id}?follow=1…` and collects records as they arrive, each checked
   * against the document; `next` waits for one. The stream stays open until the runtime ends
   * it or close() is called.
   */
  follow(path: string): Followed {
    const records: Followed["records"] = [];
    const waiters = new Set<() => void>();
    const wake = () => waiters.forEach((w) => w());
    let req: ReturnType<typeof request> | undefined;
    let settle!: (how: "end" | "closed" | "error") => void;
    let closed = false;
    const f: Followed = {
      records,
      ended: new Promise((r) => (settle = r)),
      next: (match, timeoutMs, from = 0) =>
        new Promise((resolve, reject) => {
          const look = () => {
            const hit = records.find((x) => x.at >= from && match(x.rec));
            if (hit) return done(() => resolve(hit.rec));
            if (f.endedAt !== undefined)
              return done(() => reject(new Error(`the log stream ${path} ended before the line came`)));
          };
          const timer = setTimeout(
            () =>
              done(() =>
                reject(
                  new Error(
                    `no such line on ${path} in ${timeoutMs} ms (last: ${records
                      .slice(-2)
                      .map((x) => x.rec.line)
                      .join(" | ")})`,
                  ),
                ),
              ),
            timeoutMs,
          );
          const done = (fn: () => void) => {
            clearTimeout(timer);
            waiters.delete(look);
            fn();
          };
          waiters.add(look);
          look();
        }),
      close: () => {
        closed = true;
        req?.destroy();
      },
    };
    const end = (how: "end" | "closed" | "error") => {
      if (f.endedAt !== undefined) return;
      f.endedAt = performance.now();
      settle(closed ? "closed" : how);
      wake();
    };
    this.send("GET", path, undefined, { timeoutMs: 0 }, (r) => (req = r))
      .then((res) => {
        const type = header(res.headers["content-type"]);
        if (res.statusCode !== 200) {
          return readAll(res).then((text) => {
            let body: unknown;
            try {
              body = JSON.parse(text);
            } catch {
              body = text;
            }
            this.judge("GET", path, res.statusCode ?? 0, type, body);
            end("error");
          });
        }
        const decoder = new StringDecoder("utf8");
        let partial = "";
        res.on("data", (c: Buffer) => {
          partial += decoder.write(c);
          const lines = partial.split("\n");
          partial = lines.pop()!;
          for (const l of lines) {
            if (!l.trim()) continue;
            let rec: LogRecord;
            try {
              rec = JSON.parse(l) as LogRecord;
            } catch {
              this.violations.push(`GET ${path}: a streamed line is not JSON: ${l.slice(0, 200)}`);
              continue;
            }
            this.judge("GET", path, 200, type, [rec]);
            records.push({ rec, at: performance.now() });
          }
          wake();
        });
        res.on("end", () => end("end"));
        res.on("close", () => end("end"));
        res.on("error", () => end("error"));
      })
      .catch(() => end("error"));
    return f;
  }

  /** judge checks one response against the document and records error answers. */
  private judge(
    method: string,
    path: string,
    status: number,
    contentType: string | undefined,
    body: unknown,
  ) {
    const bare = path.split("?")[0];
    const { problems } = this.contract.check(method, bare, status, contentType, body);
    this.violations.push(...problems);
    if (status >= 400) {
      const code = (body as { error?: { code?: unknown } } | undefined)?.error?.code;
      this.errors.push({ method, path: bare, status, ...(typeof code === "string" ? { code } : {}) });
    }
  }

  private send(
    method: string,
    path: string,
    payload: string | undefined,
    opts: RequestOptions,
    onRequest?: (r: ReturnType<typeof request>) => void,
  ): Promise<IncomingMessage> {
    const headers: Record<string, string> = {
      host: "localhost",
      accept: "application/json, application/x-ndjson",
    };
    if (payload !== undefined) {
      headers["content-type"] = "application/json";
      headers["content-length"] = String(Buffer.byteLength(payload));
    }
    const token = opts.token === undefined ? this.target.token : opts.token;
    if (token) headers.authorization = `Bearer ${token}`;
    Object.assign(headers, opts.headers ?? {});
    const timeoutMs = opts.timeoutMs ?? 180_000;
    return new Promise((resolve, reject) => {
      const req = request(
        this.url
          ? { host: this.url.hostname, port: this.url.port || 80, path, method, headers }
          : { socketPath: this.target.socketPath, path, method, headers },
        (res) => {
          if (timeoutMs === 0) req.setTimeout(0);
          resolve(res);
        },
      );
      onRequest?.(req);
      if (timeoutMs > 0)
        req.setTimeout(timeoutMs, () =>
          req.destroy(new Error(`${method} ${path}: no answer from ${this.where} in ${timeoutMs} ms`)),
        );
      req.on("error", (e) => reject(new Error(`${method} ${path} on ${this.where}: ${e.message}`)));
      req.end(payload);
    });
  }
}

function header(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

async function readAll(res: IncomingMessage, limit = 16 << 20): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > limit) {
      res.destroy();
      throw new Error(`answer larger than ${limit} bytes`);
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString("utf8");
}
