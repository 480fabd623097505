import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import {
  ERRORS,
  HTTP_STATUS,
  REGISTRY_ERROR_CODES,
  isApiErrorCode,
  isErrorCode,
  type ErrorCode,
} from "../../src/core/error-codes.js";
import { OvmsError, exitStatus, isRetryable } from "../../src/core/errors.js";
import { toApiError } from "../../src/daemon/errors.js";

const root = new URL("../../../", import.meta.url);
const openapi = parseYaml(readFileSync(new URL("spec/api/ovms-runtime.openapi.yaml", root), "utf8")) as {
  info: { description: string };
  components: { schemas: { ErrorCode: { enum: string[] } } };
};

test("the API codes of the table are exactly the OpenAPI ErrorCode enum, with the document's HTTP statuses", () => {
  const enumCodes = openapi.components.schemas.ErrorCode.enum;
  assert.deepEqual([...enumCodes].sort(), Object.keys(HTTP_STATUS).sort());
  // The table in info.description: | `CODE` | STATUS | meaning |
  const documented = new Map(
    [...openapi.info.description.matchAll(/^\s*\| `([A-Z_]+)` \| (\d{3}) \|/gm)].map((m) => [
      m[1],
      Number(m[2]),
    ]),
  );
  for (const code of enumCodes)
    assert.equal(HTTP_STATUS[code as keyof typeof HTTP_STATUS], documented.get(code), code);
});

test("every code has one row: an API code of the contract, its HTTP status, exit 1 or 2", () => {
  for (const [code, spec] of Object.entries(ERRORS)) {
    assert.ok(isApiErrorCode(spec.api), `${code}: api ${spec.api}`);
    assert.equal(spec.http, HTTP_STATUS[spec.api], code);
    assert.ok(spec.exit === 1 || spec.exit === 2, code);
    // A contract code answers as itself.
    if (isApiErrorCode(code)) assert.equal(spec.api, code);
  }
  for (const c of REGISTRY_ERROR_CODES) assert.ok(isErrorCode(c), c);
  assert.equal(isErrorCode("SIZE_MISMATCH"), false, "folded into DIGEST_MISMATCH");
});

test("edges: HTTP status and cause_code in the daemon, exit status and retryability in the CLI", () => {
  const cases: [ErrorCode, number, string, 1 | 2][] = [
    ["FILE_NOT_FOUND", 400, "BAD_REQUEST", 1],
    ["DISK_INVALID", 422, "MANIFEST_INVALID", 1],
    ["RESTORE_FAILED", 422, "MANIFEST_INVALID", 1],
    ["USAGE", 400, "BAD_REQUEST", 2],
    ["INVALID_REFERENCE", 400, "INVALID_REFERENCE", 2],
    ["ARTIFACT_INCOMPLETE", 404, "ARTIFACT_NOT_FOUND", 1],
    ["CONFLICT", 409, "CONFLICT", 1],
  ];
  for (const [code, status, api, exit] of cases) {
    const e = new OvmsError(code, "x");
    const a = toApiError(e);
    assert.equal(a.status, status, code);
    assert.equal(a.body.error.code, api, code);
    if (api !== code) assert.equal(a.body.error.details?.cause_code, code);
    else assert.equal(a.body.error.details, undefined);
    assert.equal(exitStatus(e), exit, code);
  }
  assert.equal(isRetryable(new OvmsError("TOOMANYREQUESTS", "x")), true);
  assert.equal(isRetryable(new OvmsError("MANIFEST_UNKNOWN", "x")), false);
  assert.equal(toApiError(new Error("boom")).status, 500);
  assert.equal(exitStatus(new Error("boom")), 1);
});
