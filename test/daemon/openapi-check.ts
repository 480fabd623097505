import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import * as ajvFormats from "ajv-formats";
import { parse as parseYaml } from "yaml";
import { ROOT } from "../helpers.js";

/**
 * Test helper: holds every response the daemon tests receive to the runtime API document
 * (spec/api/ovms-runtime.openapi.yaml), the way Firecracker checks its API against its
 * OpenAPI file. The checker loads the YAML on its own (not through src/daemon/contract.ts),
 * so a bug in the daemon's loader cannot hide a response that breaks the contract.
 */

type AddFormats = (a: Ajv2020) => unknown;
const fmt = ajvFormats as unknown as { default: AddFormats | { default: AddFormats } };
const addFormats: AddFormats = typeof fmt.default === "function" ? fmt.default : fmt.default.default;

const ID = "urn:test:ovms-runtime-api";

interface Op {
  id: string;
  method: string;
  pattern: RegExp;
  responses: Record<string, { contentType?: string; validate?: ValidateFunction }>;
}

/** ContractChecker validates a response (status, content type, body) against its operation. */
export class ContractChecker {
  private readonly ops: Op[] = [];
  /** seen records `operationId status` of every checked response, for coverage assertions. */
  readonly seen = new Set<string>();

  constructor(path = join(ROOT, "spec/api/ovms-runtime.openapi.yaml")) {
    const doc = parseYaml(readFileSync(path, "utf8")) as Record<string, any>;
    const ajv = new Ajv2020({ allErrors: true, strict: false });
    addFormats(ajv);
    ajv.addSchema({ ...doc, $id: ID });
    const esc = (s: string) => s.replace(/~/g, "~0").replace(/\//g, "~1");
    for (const [template, item] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
      for (const [method, op] of Object.entries(item)) {
        if (!op?.operationId) continue;
        const pattern = new RegExp(`^${template.replace(/\{[^}]+\}/g, "[^/]+")}$`);
        const responses: Op["responses"] = {};
        for (const [status, r0] of Object.entries(op.responses as Record<string, any>)) {
          let pointer = `/paths/${esc(template)}/${method}/responses/${status}`;
          let r = r0;
          if (typeof r.$ref === "string") {
            pointer = r.$ref.slice(1);
            r = pointer
              .split("/")
              .slice(1)
              .reduce((o: any, k: string) => o[k.replace(/~1/g, "/").replace(/~0/g, "~")], doc);
          }
          const [contentType] = Object.keys(r.content ?? {});
          responses[status] = contentType
            ? {
                contentType,
                validate: ajv.compile({ $ref: `${ID}#${pointer}/content/${esc(contentType)}/schema` }),
              }
            : {};
        }
        this.ops.push({ id: op.operationId, method: method.toUpperCase(), pattern, responses });
      }
    }
  }

  /**
   * check fails the test when the operation does not document `status`, when the content
   * type differs, or when the body (each record, for NDJSON) does not match the schema.
   */
  check(method: string, path: string, status: number, contentType: string | undefined, body: unknown): void {
    const op = this.ops.find((o) => o.method === method && o.pattern.test(path));
    assert.ok(op, `${method} ${path} is not an operation of the contract`);
    const r = op.responses[String(status)];
    assert.ok(
      r,
      `${method} ${path} answered ${status}, which the contract does not document for ${op.id}: ${JSON.stringify(body)}`,
    );
    this.seen.add(`${op.id} ${status}`);
    if (!r.validate) return;
    assert.equal(
      (contentType ?? "").split(";")[0].trim(),
      r.contentType,
      `${method} ${path} ${status}: content type`,
    );
    const items = r.contentType === "application/x-ndjson" ? (body as unknown[]) : [body];
    for (const item of items) {
      assert.ok(
        r.validate(item),
        `${method} ${path} ${status}: body breaks the contract: ${JSON.stringify(r.validate.errors)}\n${JSON.stringify(item)}`,
      );
    }
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
