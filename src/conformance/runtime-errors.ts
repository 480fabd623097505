import { HTTP_STATUS, isApiErrorCode } from "../core/error-codes.js";
import { Violation, expect, type Check } from "./check.js";
import type { Answer } from "./runtime-api.js";
import { sleep, type RuntimeContext } from "./runtime-context.js";
import type { FixtureName } from "./runtime-fixtures.js";
import { counterGuest, ivshmemGuest } from "./runtime-guests.js";

/**
 * The error model of rfc §6.1–§6.2 on every bad request the RFC names, and the artifacts a
 * runtime must refuse (§2, §4.2, §5): each check looks at the code; whether each error's HTTP
 * status is the one its code has, and whether its body has the contract's shape, is judged
 * once over every answer of the run (ERROR_MODEL).
 */

type C = Check<RuntimeContext>;
const basic = { level: "runtime-basic" as const, requirement: "MUST" as const };
const NO_SUCH = "00000000-0000-4000-8000-00000000c0de";

/** codeOf is the error code of an answer, if it has one. */
function codeOf(r: Answer): string | undefined {
  return r.body?.error?.code;
}

/** want fails unless the answer is an error with `code`. */
function want(r: Answer, code: string, what: string): void {
  expect(codeOf(r) === code, `${what} answered ${r.status} ${r.text.slice(0, 240)}; want ${code}`);
}

/** refused starts a fixture that must be refused with `code`; an instance the runtime made anyway must end `failed` without booting. */
async function refused(
  ctx: RuntimeContext,
  fixture: FixtureName,
  code: string,
  orFailed = false,
): Promise<string> {
  const r = await ctx.api.post("/start", {
    manifest: ctx.fixtures[fixture].manifest,
    overrides: ctx.overrides({ name: ctx.name(fixture) }),
  });
  if (r.status === 202 && orFailed) {
    // rfc §6.3: failures found after the answer put the instance in `failed`; it must not boot.
    const id = r.body.instance_id as string;
    const s = await ctx
      .waitFor({ id, name: ctx.name(fixture) }, "failed", (i) => i.state === "failed", 60_000)
      .catch((e: Error) => {
        throw new Violation(`accepted (202) and did not fail: ${e.message}`);
      });
    const booted = (await ctx.logs(id)).some((x) => /^OVMS-(DISK|READY)/.test(x.line));
    expect(!booted, "accepted, and the guest booted from it");
    return `accepted, then failed: ${s.reason ?? ""}`;
  }
  want(r, code, `POST /start of the ${fixture} fixture`);
  return r.body.error.message;
}

/** REFUSALS are the artifacts every runtime must refuse. */
export const REFUSALS: C[] = [
  {
    ...basic,
    id: "runtime.refuse.invalid-manifest",
    section: "§2.1, §6.2",
    title: "an OVMS manifest that breaks the schema is 422 MANIFEST_INVALID, every problem named by its path",
    async run(ctx) {
      const r = await ctx.api.post("/start", {
        manifest: ctx.fixtures.invalid.manifest,
        overrides: ctx.overrides({ name: ctx.name("invalid") }),
      });
      want(r, "MANIFEST_INVALID", "POST /start of the invalid fixture");
      const paths = (r.body.error.details?.problems ?? []).map((p: { path: string }) => p.path);
      const missing = ["/bogus", "/version"].filter((p) => !paths.includes(p));
      expect(
        !missing.length,
        `details.problems names ${JSON.stringify(paths)}; missing ${missing.join(", ")}`,
      );
    },
  },
  {
    ...basic,
    id: "runtime.refuse.uefi",
    section: "§2.2",
    title: "metadata.platform.uefi: true is refused with NOT_IMPLEMENTED",
    async run(ctx) {
      return { message: await refused(ctx, "uefi", "NOT_IMPLEMENTED") };
    },
  },
  {
    ...basic,
    id: "runtime.refuse.ramsnap-compression",
    section: "§2.2, §9",
    title:
      "a RAM snapshot the runtime cannot restore (compression zstd) is refused with NOT_IMPLEMENTED, never cold-booted",
    async run(ctx) {
      return { message: await refused(ctx, "zstd", "NOT_IMPLEMENTED") };
    },
  },
  {
    ...basic,
    id: "runtime.refuse.backing-name",
    section: "§4.2–§4.3",
    title: "a diff whose qcow2 backing name is a host path (not its parent's digest) is refused",
    async run(ctx) {
      return { message: await refused(ctx, "backing-path", "MANIFEST_INVALID", true) };
    },
  },
  {
    ...basic,
    id: "runtime.refuse.tar-entries",
    section: "§4.2–§4.3",
    title: "a disk layer tar with more than the one disk file is refused",
    async run(ctx) {
      return { message: await refused(ctx, "tar-extra", "MANIFEST_INVALID", true) };
    },
  },
];

/** ERRORS are the bad requests of §6 and the answer each must get. */
export const ERRORS: C[] = [
  {
    ...basic,
    id: "runtime.errors.unknown-member",
    section: "§6.1",
    title: "a body with a member the schema does not define is 400 BAD_REQUEST with details.problems",
    async run(ctx) {
      const r = await ctx.api.post("/stop", { instance_id: NO_SUCH, bogus: 1 });
      want(r, "BAD_REQUEST", "POST /stop with an unknown member");
      const problems = r.body.error.details?.problems;
      expect(Array.isArray(problems) && problems.length > 0, "no details.problems");
    },
  },
  {
    ...basic,
    id: "runtime.errors.schema",
    section: "§6.1",
    title: "bodies that break their schema are 400 BAD_REQUEST: bad JSON, a value out of range, a bad name",
    async run(ctx) {
      const m = ctx.fixtures.extensions.manifest;
      want(
        await ctx.api.request("POST", "/start", undefined, { raw: "{" }),
        "BAD_REQUEST",
        "POST /start with `{`",
      );
      want(
        await ctx.api.post("/start", { manifest: m, overrides: { memory: 1024 } }),
        "BAD_REQUEST",
        "memory 1024",
      );
      want(
        await ctx.api.post("/start", { manifest: m, overrides: { name: "-bad name" } }),
        "BAD_REQUEST",
        "name `-bad name`",
      );
      want(
        await ctx.api.post("/stop", { instance_id: NO_SUCH, timeout_ms: -1 }),
        "BAD_REQUEST",
        "timeout_ms -1",
      );
      const g = await ctx.need("the ivshmem guest", () => ivshmemGuest(ctx));
      want(
        await ctx.api.get(`/logs/${encodeURIComponent(g.id)}?tail=-1`),
        "BAD_REQUEST",
        "GET /logs?tail=-1",
      );
      want(await ctx.api.get("/instances?all=maybe"), "BAD_REQUEST", "GET /instances?all=maybe");
      want(await ctx.api.post("/start", {}), "BAD_REQUEST", "POST /start without manifest");
    },
  },
  {
    ...basic,
    id: "runtime.errors.invalid-reference",
    section: "§3.8, §6.2",
    title: "a reference that cannot be parsed is 400 INVALID_REFERENCE",
    async run(ctx) {
      want(
        await ctx.api.post("/start", { manifest: "Demo/VM::1" }),
        "INVALID_REFERENCE",
        "manifest `Demo/VM::1`",
      );
    },
  },
  {
    ...basic,
    id: "runtime.errors.artifact-not-found",
    section: "§6.2",
    title: "an artifact in neither the store nor its registry is 404 ARTIFACT_NOT_FOUND",
    async run(ctx) {
      // Nothing listens on the discard port: the pull fails at once, whatever the runtime's network.
      const ref = ctx.settings.registry
        ? `${ctx.settings.registry}:missing-${ctx.runId}`
        : `127.0.0.1:9/ovms-conformance/missing:${ctx.runId}`;
      want(await ctx.api.post("/start", { manifest: ref }), "ARTIFACT_NOT_FOUND", `manifest ${ref}`);
    },
  },
  {
    ...basic,
    id: "runtime.errors.not-found",
    section: "§6.2",
    title: "every operation on an unknown instance is 404 NOT_FOUND",
    async run(ctx) {
      const id = encodeURIComponent(NO_SUCH);
      const bad: string[] = [];
      for (const [what, r] of [
        ["GET /status", await ctx.api.get(`/status/${id}`)],
        ["GET /logs", await ctx.api.get(`/logs/${id}`)],
        ["DELETE /instances", await ctx.api.delete(`/instances/${id}`)],
        ["POST /stop", await ctx.api.post("/stop", { instance_id: NO_SUCH })],
        [
          "POST /inject",
          await ctx.api.post("/inject", { instance_id: NO_SUCH, content: { mmio: { data: "aGk=" } } }),
        ],
        [
          "POST /snapshot",
          await ctx.api.post("/snapshot", { instance_id: NO_SUCH, tag: "ovms-conformance/none:1" }),
        ],
      ] as [string, Answer][]) {
        // A runtime without snapshots may answer 501 before it looks the instance up.
        if (what === "POST /snapshot" && codeOf(r) === "NOT_IMPLEMENTED") continue;
        if (codeOf(r) !== "NOT_FOUND")
          bad.push(`${what} answered ${r.status} ${codeOf(r) ?? r.text.slice(0, 80)}`);
      }
      expect(!bad.length, bad.join("; "));
    },
  },
  {
    ...basic,
    id: "runtime.errors.name-conflict",
    section: "§6.2",
    title: "a name already in use is 409 CONFLICT, and nothing is created",
    async run(ctx) {
      const g = await ctx.need("the ivshmem guest", () => ivshmemGuest(ctx));
      const count = async () => (await ctx.api.get("/instances?all=1")).body?.instances?.length;
      const before = await count();
      const r = await ctx.api.post("/start", {
        manifest: ctx.fixtures.extensions.manifest,
        overrides: { name: g.name },
      });
      want(r, "CONFLICT", `a second start named ${g.name}`);
      expect((await count()) === before, "an instance was created anyway");
    },
  },
  {
    ...basic,
    id: "runtime.errors.remove-live",
    section: "§6.3",
    title: "DELETE of a live instance without force is 409 CONFLICT",
    async run(ctx) {
      const g = await ctx.need("the counter guest", () => counterGuest(ctx));
      want(await ctx.api.delete(`/instances/${encodeURIComponent(g.id)}`), "CONFLICT", `DELETE ${g.name}`);
    },
  },
  {
    ...basic,
    id: "runtime.errors.inject",
    section: "§6.3",
    title: "inject of an unknown device, of bad base64, or past the region's end is 400 BAD_REQUEST",
    async run(ctx) {
      const g = await ctx.need("the ivshmem guest", () => ivshmemGuest(ctx));
      // The region exists once the instance does; wait until it is live so CONFLICT is not the answer.
      await ctx.waitFor(g, "running", (i) => i.state === "running");
      for (const [what, mmio] of [
        ["an unknown device", { device: "nope", data: "aGk=" }],
        ["bad base64", { data: "not base64!" }],
        ["a write past the end", { offset: (1 << 20) - 2, data: "aGVsbG8=" }],
      ] as [string, object][]) {
        want(
          await ctx.api.post("/inject", { instance_id: g.id, content: { mmio } }),
          "BAD_REQUEST",
          `inject of ${what}`,
        );
      }
    },
  },
];

/** ERROR_MODEL judges every error answer of the run; it runs last. */
export const ERROR_MODEL: C[] = [
  {
    ...basic,
    id: "runtime.api.openapi",
    section: "§6, OpenAPI",
    title: "every response matches the OpenAPI document: a documented status, its content type and schema",
    async run(ctx) {
      // Let late answers (log streams closing) land before judging.
      await sleep(100);
      const v = [...new Set(ctx.api.violations)];
      expect(
        !v.length,
        `${v.length} response(s) break the document:\n${v.slice(0, 8).join("\n")}${v.length > 8 ? "\n…" : ""}`,
      );
      return { message: `${ctx.api.errors.length} error answers among all responses, all valid` };
    },
  },
  {
    ...basic,
    id: "runtime.errors.http-status",
    section: "§6.2",
    title: "every error answer uses a code of the contract with its HTTP status",
    async run(ctx) {
      const bad = ctx.api.errors
        .filter((e) => e.code !== undefined && (!isApiErrorCode(e.code) || HTTP_STATUS[e.code] !== e.status))
        .map(
          (e) =>
            `${e.method} ${e.path}: ${e.status} with ${e.code}${isApiErrorCode(e.code!) ? ` (want ${HTTP_STATUS[e.code]})` : " (not a code of the contract)"}`,
        );
      const shapeless = ctx.api.errors
        .filter((e) => e.code === undefined)
        .map((e) => `${e.method} ${e.path}: ${e.status} without an error code`);
      const all = [...new Set([...bad, ...shapeless])];
      expect(!all.length, all.slice(0, 8).join("\n"));
      return { message: `${ctx.api.errors.length} error answers checked` };
    },
  },
];
