import assert from "node:assert/strict";
import { request } from "node:http";
import { join } from "node:path";
import { OpenApiContract } from "../../src/conformance/openapi.js";
import { ROOT } from "../helpers.js";

/**
 * Test helper: holds every response the daemon tests receive to the runtime API document
 * (spec/api/ovms-runtime.openapi.yaml), the way Firecracker checks its API against its
 * OpenAPI file. The checking is the conformance suite's (src/conformance/openapi.ts), which
 * loads the YAML on its own (not through src/daemon/contract.ts), so a bug in the daemon's
 * loader cannot hide a response that breaks the contract, and the suite and these tests judge
 * responses the same way.
 */

/** ContractChecker validates a response (status, content type, body) against its operation. */
export class ContractChecker {
  private readonly contract: OpenApiContract;

  constructor(path = join(ROOT, "spec/api/ovms-runtime.openapi.yaml")) {
    this.contract = new OpenApiContract(path);
  }

  /** seen records `operationId status` of every checked response, for coverage assertions. */
  get seen(): Set<string> {
    return this.contract.seen;
  }

  /**
   * check fails the test when the operation does not document `status`, when the content
   * type differs, or when the body (each record, for NDJSON) does not match the schema.
   */
  check(method: string, path: string, status: number, contentType: string | undefined, body: unknown): void {
    const { problems } = this.contract.check(method, path, status, contentType, body);
    assert.deepEqual(problems, [], problems.join("\n"));
  }
}

/** Reply is a checked response: status, headers and the parsed body (an array of records for NDJSON). */
export interface Reply<T = any> {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: T;
}

/** Target says where requests go: a UNIX socket, or a TCP address. */
export type Target = { socketPath: string } | { host: string; port: number };

/**
 * Api sends requests to a daemon and checks every response against the contract before the
 * test sees it. `raw` sends a body as given (for invalid JSON); `headers` adds headers.
 */
export class Api {
  constructor(
    readonly target: Target,
    readonly checker: ContractChecker,
  ) {}

  request<T = any>(
    method: string,
    path: string,
    body?: unknown,
    opts: { raw?: string; headers?: Record<string, string> } = {},
  ): Promise<Reply<T>> {
    const payload = opts.raw ?? (body === undefined ? undefined : JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = request(
        {
          ...this.target,
          method,
          path,
          headers: {
            host: "localhost",
            ...(payload !== undefined ? { "content-type": "application/json" } : {}),
            ...(opts.headers ?? {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("error", reject);
          res.on("end", () => {
            try {
              const text = Buffer.concat(chunks).toString("utf8");
              const type = res.headers["content-type"];
              const parsed: unknown = type?.startsWith("application/x-ndjson")
                ? text
                    .split("\n")
                    .filter((l) => l.trim())
                    .map((l) => JSON.parse(l))
                : text
                  ? JSON.parse(text)
                  : undefined;
              this.checker.check(method, path.split("?")[0], res.statusCode ?? 0, type, parsed);
              resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed as T });
            } catch (e) {
              reject(e);
            }
          });
        },
      );
      req.on("error", reject);
      req.end(payload);
    });
  }

  get<T = any>(path: string) {
    return this.request<T>("GET", path);
  }

  post<T = any>(path: string, body: unknown) {
    return this.request<T>("POST", path, body);
  }

  /**
   * follow opens `GET /logs/{id}?follow=1…` and calls `onRecord` with each checked record
   * until it returns true (then the stream is closed) or the stream ends. Resolves with the
   * records seen.
   */
  follow(
    path: string,
    onRecord: (rec: { ts: string; stream: string; line: string }) => boolean,
    timeoutMs = 60_000,
  ): Promise<{ line: string }[]> {
    return new Promise((resolve, reject) => {
      const seen: { line: string }[] = [];
      const timer = setTimeout(() => {
        req.destroy();
        reject(
          new Error(
            `follow ${path}: no matching record in ${timeoutMs} ms (saw ${seen.length}: ${seen
              .slice(-3)
              .map((r) => r.line)
              .join(" | ")})`,
          ),
        );
      }, timeoutMs);
      const req = request({ ...this.target, method: "GET", path, headers: { host: "localhost" } }, (res) => {
        let partial = "";
        let done = false;
        const finish = () => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          req.destroy();
          resolve(seen);
        };
        res.setEncoding("utf8");
        if (res.statusCode !== 200) {
          // An error before the first record is an ordinary JSON answer: check it and fail.
          let text = "";
          res.on("data", (c: string) => (text += c));
          res.on("end", () => {
            clearTimeout(timer);
            try {
              this.checker.check(
                "GET",
                path.split("?")[0],
                res.statusCode ?? 0,
                res.headers["content-type"],
                JSON.parse(text),
              );
              reject(new Error(`follow ${path}: ${res.statusCode} ${text}`));
            } catch (e) {
              reject(e);
            }
          });
          return;
        }
        res.on("data", (c: string) => {
          if (done) return;
          partial += c;
          const lines = partial.split("\n");
          partial = lines.pop()!;
          try {
            for (const l of lines) {
              if (!l.trim()) continue;
              const rec = JSON.parse(l);
              this.checker.check(
                "GET",
                path.split("?")[0],
                res.statusCode ?? 0,
                res.headers["content-type"],
                [rec],
              );
              seen.push(rec);
              if (onRecord(rec)) return finish();
            }
          } catch (e) {
            done = true;
            clearTimeout(timer);
            req.destroy();
            reject(e);
          }
        });
        res.on("end", finish);
      });
      req.on("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      req.end();
    });
  }
}
