import { request, type IncomingMessage } from "node:http";
import { StringDecoder } from "node:string_decoder";
import { OvmsError } from "../core/errors.js";
import { isApiErrorCode } from "../core/error-codes.js";
import { resolveSocketPath } from "../api/paths.js";
import type {
  ErrorBody,
  InjectRequest,
  InjectResponse,
  InstanceInfo,
  InstanceList,
  LogRecord,
  PoolInfo,
  PoolList,
  PoolRemoveResponse,
  RemoveResponse,
  SnapshotRequest,
  SnapshotResponse,
  StartRequest,
  StartResponse,
  StopRequest,
  StopResponse,
  KillRequest,
  KillResponse,
  StdinRequest,
  StdinResponse,
  VersionInfo,
} from "../api/types.generated.js";

/**
 * DaemonError is an error answer of the runtime API: `code` is the contract's stable code
 * (NOT_FOUND, CONFLICT, …), `status` the HTTP status, `details` the body's details.
 */
export class DaemonError extends OvmsError {
  readonly status: number;

  constructor(status: number, body: ErrorBody["error"]) {
    // Another runtime may answer with a code outside the contract: kept in details, never lost.
    const code = isApiErrorCode(body.code) ? body.code : "INTERNAL";
    const details = code === body.code ? body.details : { ...(body.details ?? {}), remote_code: body.code };
    super(code, body.message, details ? { details } : {});
    this.status = status;
  }
}

/** DAEMON_UNAVAILABLE is the code of a client error when nothing answers on the socket. */
export const DAEMON_UNAVAILABLE = "DAEMON_UNAVAILABLE" as const;

/** ClientOptions say where the daemon is: a UNIX socket (default) or a TCP address with a token. */
export interface ClientOptions {
  /** socketPath of the daemon (default: `--socket`/OVMD_SOCKET/the default path). */
  socketPath?: string;
  /** url of a TCP listener, e.g. `http://127.0.0.1:7070`; used instead of the socket. */
  url?: string;
  /** token sent as `Authorization: Bearer` (TCP listeners require one). */
  token?: string;
  /** timeoutMs bounds connecting and waiting for response headers (default 120 s; log follows are not bounded once streaming). */
  timeoutMs?: number;
}

/**
 * OvmdClient is the typed client of the runtime API (spec/api/ovms-runtime.openapi.yaml):
 * one method per operation, error answers thrown as DaemonError, and a connection that
 * nobody answers as an OvmsError with code DAEMON_UNAVAILABLE.
 */
export class OvmdClient {
  readonly socketPath?: string;
  readonly url?: URL;
  private readonly token?: string;
  private readonly timeoutMs: number;

  constructor(opts: ClientOptions = {}) {
    if (opts.url) this.url = new URL(opts.url);
    else this.socketPath = resolveSocketPath(opts.socketPath);
    this.token = opts.token;
    this.timeoutMs = opts.timeoutMs ?? 120_000;
  }

  /** where names the daemon's address for messages. */
  get where(): string {
    return this.url ? this.url.origin : this.socketPath!;
  }

  version(): Promise<VersionInfo> {
    return this.json("GET", "/version");
  }

  /**
   * start waits as long as the daemon works on it: a pull of a large artifact takes a while.
   * `signal` drops the request; for an attached start (`req.attach`) that tells the daemon the
   * client is gone, and it stops what it started.
   */
  start(req: StartRequest, opts: { signal?: AbortSignal } = {}): Promise<StartResponse> {
    return this.json("POST", "/start", req, 0, opts.signal);
  }

  stop(req: StopRequest): Promise<StopResponse> {
    return this.json("POST", "/stop", req, this.timeoutMs + (req.timeout_ms ?? 10_000));
  }

  /** kill sends a signal: SIGKILL stops the VM, others reach a container's program (POST /kill). */
  kill(req: KillRequest): Promise<KillResponse> {
    return this.json("POST", "/kill", req);
  }

  /** stdin writes to a container program's stdin (POST /stdin); it waits while the guest boots. */
  stdin(req: StdinRequest): Promise<StdinResponse> {
    return this.json("POST", "/stdin", req, 0);
  }

  snapshot(req: SnapshotRequest): Promise<SnapshotResponse> {
    return this.json("POST", "/snapshot", req);
  }

  inject(req: InjectRequest): Promise<InjectResponse> {
    return this.json("POST", "/inject", req);
  }

  status(id: string): Promise<InstanceInfo> {
    return this.json("GET", `/status/${encodeURIComponent(id)}`);
  }

  async list(opts: { all?: boolean } = {}): Promise<InstanceInfo[]> {
    const r = await this.json<InstanceList>("GET", `/instances${opts.all ? "?all=1" : ""}`);
    return r.instances;
  }

  /** pools lists the warm pools (paused VMM processes kept ready per hot snapshot). */
  async pools(): Promise<PoolInfo[]> {
    return (await this.json<PoolList>("GET", "/pool")).pools;
  }

  /** emptyPool empties the warm pool of a snapshot artifact, named by reference or manifest digest. */
  emptyPool(reference: string): Promise<PoolRemoveResponse> {
    return this.json("DELETE", `/pool/${encodeURIComponent(reference)}`);
  }

  remove(id: string, opts: { force?: boolean } = {}): Promise<RemoveResponse> {
    return this.json("DELETE", `/instances/${encodeURIComponent(id)}${opts.force ? "?force=1" : ""}`);
  }

  /**
   * logs streams an instance's serial log records (NDJSON). With `follow` the iteration goes
   * on until the instance ends; breaking out of the loop closes the connection. With `attach`
   * the connection holds the instance: the daemon stops it if the connection closes first.
   */
  async logs(
    id: string,
    opts: { follow?: boolean; tail?: number; attach?: boolean } = {},
  ): Promise<AsyncIterable<LogRecord>> {
    const q = new URLSearchParams();
    if (opts.follow) q.set("follow", "1");
    if (opts.tail !== undefined) q.set("tail", String(opts.tail));
    if (opts.attach) q.set("attach", "1");
    const qs = q.toString();
    const res = await this.send(
      "GET",
      `/logs/${encodeURIComponent(id)}${qs ? `?${qs}` : ""}`,
      undefined,
      !!opts.follow,
    );
    if (res.statusCode !== 200) throw await this.errorOf("GET", `/logs/${id}`, res);
    return ndjson(res);
  }

  /** json sends one request and parses its JSON answer, or throws the error it carries. */
  private async json<T>(
    method: string,
    path: string,
    body?: unknown,
    timeoutMs = this.timeoutMs,
    signal?: AbortSignal,
  ): Promise<T> {
    const res = await this.send(method, path, body, false, timeoutMs, signal);
    if ((res.statusCode ?? 500) >= 400) throw await this.errorOf(method, path, res);
    const text = await readText(res);
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new OvmsError(
        "DAEMON_PROTOCOL",
        `${method} ${path}: the daemon at ${this.where} answered ${res.statusCode} with a body that is not JSON`,
      );
    }
  }

  private async errorOf(method: string, path: string, res: IncomingMessage): Promise<OvmsError> {
    const text = await readText(res);
    try {
      const body = JSON.parse(text) as ErrorBody;
      if (body?.error?.code && body.error.message) return new DaemonError(res.statusCode ?? 500, body.error);
    } catch {
      // not the contract's error shape; fall through
    }
    return new OvmsError(
      "DAEMON_PROTOCOL",
      `${method} ${path}: HTTP ${res.statusCode} from ${this.where}: ${text.slice(0, 200)}`,
    );
  }

  /** send makes one HTTP request; `stream` leaves the response unbounded in time once headers arrive. */
  private send(
    method: string,
    path: string,
    body?: unknown,
    stream = false,
    timeoutMs = this.timeoutMs,
    signal?: AbortSignal,
  ): Promise<IncomingMessage> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = {
      host: "localhost",
      accept: "application/json, application/x-ndjson",
    };
    if (payload) {
      headers["content-type"] = "application/json";
      headers["content-length"] = String(payload.length);
    }
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    return new Promise((resolve, reject) => {
      const req = request(
        this.url
          ? { host: this.url.hostname, port: this.url.port || 80, path, method, headers }
          : { socketPath: this.socketPath, path, method, headers },
        (res) => {
          if (stream) req.setTimeout(0);
          resolve(res);
        },
      );
      if (timeoutMs > 0) {
        req.setTimeout(timeoutMs, () =>
          req.destroy(
            new OvmsError(
              "DAEMON_TIMEOUT",
              `${method} ${path}: no answer from ${this.where} in ${timeoutMs} ms`,
            ),
          ),
        );
      }
      if (signal) {
        const drop = () =>
          req.destroy(
            new OvmsError("CANCELLED", `${method} ${path}: dropped (${String(signal.reason ?? "aborted")})`),
          );
        if (signal.aborted) drop();
        else signal.addEventListener("abort", drop, { once: true });
        req.once("close", () => signal.removeEventListener("abort", drop));
      }
      req.on("error", (e: NodeJS.ErrnoException) => {
        if (e instanceof OvmsError) return reject(e);
        if (e.code === "ENOENT" || e.code === "ECONNREFUSED" || e.code === "ENOTSOCK") {
          return reject(
            new OvmsError(
              DAEMON_UNAVAILABLE,
              `no ovmd answers on ${this.where} (${e.code}); start one with \`ovm serve\` (or \`ovm run\` starts one)`,
              { cause: e },
            ),
          );
        }
        if (e.code === "EACCES") {
          return reject(
            new OvmsError(
              DAEMON_UNAVAILABLE,
              `${this.where}: permission denied (the socket belongs to another user or group)`,
              { cause: e },
            ),
          );
        }
        reject(
          new OvmsError("DAEMON_PROTOCOL", `${method} ${path} on ${this.where}: ${e.message}`, { cause: e }),
        );
      });
      req.end(payload);
    });
  }
}

/** isDaemonUnavailable tells whether `e` says nobody answers on the daemon's address. */
export function isDaemonUnavailable(e: unknown): boolean {
  return e instanceof OvmsError && e.code === DAEMON_UNAVAILABLE;
}

async function readText(res: IncomingMessage, limit = 16 << 20): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > limit) {
      res.destroy();
      throw new OvmsError("DAEMON_PROTOCOL", `answer larger than ${limit} bytes`);
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** ndjson yields one parsed record per line of a response body. */
async function* ndjson(res: IncomingMessage): AsyncGenerator<LogRecord> {
  // A decoder, not Buffer#toString: a UTF-8 character may straddle two chunks.
  const decoder = new StringDecoder("utf8");
  let partial = "";
  try {
    for await (const c of res as AsyncIterable<Buffer>) {
      partial += decoder.write(c);
      const lines = partial.split("\n");
      partial = lines.pop()!;
      for (const line of lines) if (line.trim()) yield JSON.parse(line) as LogRecord;
    }
    if (partial.trim()) yield JSON.parse(partial) as LogRecord;
  } finally {
    res.destroy();
  }
}
