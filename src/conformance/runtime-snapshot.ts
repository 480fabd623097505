import { isDigest } from "../core/digest.js";
import { normalizeReference } from "../core/reference.js";
import { Store } from "../store/store.js";
import { Manual, Skip, expect, failsMust, type Check } from "./check.js";
import { checkStoredArtifact } from "./artifact-suite.js";
import { Marker } from "./guest.js";
import { counterOf, type Guest, type RuntimeContext } from "./runtime-context.js";
import { counterCounting, lastCount, snapshotOfCounter, takenSnapshot } from "./runtime-guests.js";

/**
 * Runtime-Snapshot (rfc §9): `POST /snapshot` of the counting guest (§5.8), then restores of
 * the snapshot artifact (§5.7): a restored guest goes on counting from where it was — it is
 * not booted again — as a clone with an identity of its own; a start that contradicts the
 * snapshot is refused before anything starts (§5.6). Runtime-Basic's own snapshot duty (answer
 * 200 or 501) is here too, since it asks the same question.
 */

type C = Check<RuntimeContext>;
const snap = { level: "runtime-snapshot" as const, requirement: "MUST" as const };

/** CLONES are the roles of the restored instances, removed once the snapshot checks are done. */
export const CLONES = ["clone1", "clone2"];

/** clone restores the snapshot under a role's name, once per role. */
export function clone(ctx: RuntimeContext, role: string): Promise<Guest> {
  return ctx.once(`the restored ${role}`, async () => {
    const s = await takenSnapshot(ctx);
    return ctx.start("counter", role, {}, s.ref.reference);
  });
}

/** BASIC_SNAPSHOT is Runtime-Basic's requirement on /snapshot. */
export const BASIC_SNAPSHOT: C[] = [
  {
    level: "runtime-basic",
    requirement: "MUST",
    id: "runtime.snapshot.answer",
    section: "§5.8, §9",
    title: "POST /snapshot takes a snapshot (200) or answers 501 NOT_IMPLEMENTED",
    async run(ctx) {
      const s = await ctx
        .need("the counter guest counting", () => counterCounting(ctx))
        .then(() => snapshotOfCounter(ctx));
      const r = s.answer;
      expect(
        r.status === 200 || (r.status === 501 && (r.body as any)?.error?.code === "NOT_IMPLEMENTED"),
        `answered ${r.status} ${r.text.slice(0, 240)}`,
      );
      return { message: r.status === 200 ? `took ${r.body.reference}` : "not implemented" };
    },
  },
];

/** SNAPSHOT_CHECKS are the Runtime-Snapshot level. */
export const SNAPSHOT_CHECKS: C[] = [
  {
    ...snap,
    requirement: "SHOULD",
    id: "runtime.snapshot.implemented",
    section: "§9",
    title: "the runtime takes snapshots (RECOMMENDED)",
    async run(ctx) {
      const s = await ctx
        .need("the counter guest counting", () => counterCounting(ctx))
        .then(() => snapshotOfCounter(ctx));
      expect(s.answer.status === 200, `POST /snapshot answered ${s.answer.status}`);
      return { measured: { snapshot_ms: s.answer.ms, ramsnap_bytes: s.answer.body.size } };
    },
  },
  {
    ...snap,
    id: "runtime.snapshot.response",
    section: "§5.8",
    title: "the answer names the snapshot artifact: its digest, its normalized reference, the ramsnap's size",
    async run(ctx) {
      const s = await takenSnapshot(ctx);
      expect(isDigest(s.ref.snapshot_ref), `snapshot_ref ${s.ref.snapshot_ref} is not a digest`);
      expect(
        s.ref.reference === normalizeReference(s.tag),
        `reference ${s.ref.reference}, want ${normalizeReference(s.tag)}`,
      );
      expect(Number.isSafeInteger(s.ref.size) && s.ref.size > 0, `size ${s.ref.size}`);
    },
  },
  {
    ...snap,
    id: "runtime.snapshot.resumes",
    section: "§5.8",
    title: "with stop: false the snapshotted guest goes on running",
    async run(ctx) {
      const s = await takenSnapshot(ctx);
      const info = await ctx.status(s.source.id);
      expect(info?.state === "running", `the source is ${info?.state} after the snapshot`);
      const after = await lastCount(ctx, s.source.id);
      await ctx.line(s.source, new RegExp(`^OVMS-COUNTER: ${after + 2}$`), 60_000);
    },
  },
  {
    ...snap,
    id: "runtime.snapshot.artifact",
    section: "§5.8, §3.5",
    title:
      "the snapshot artifact meets the Artifact level, and its subject is the artifact the guest came from",
    async run(ctx) {
      const s = await takenSnapshot(ctx);
      if (!ctx.settings.runtimeStore)
        throw new Skip(
          "the runtime's store is not given (--runtime-store DIR); `ovm conformance artifact REF --store DIR` checks it",
        );
      const store = await Store.open(ctx.settings.runtimeStore);
      const results = await checkStoredArtifact(store, s.ref.snapshot_ref);
      const failed = results.filter(failsMust);
      expect(!failed.length, failed.map((r) => `${r.id} (${r.section}): ${r.message}`).join("\n"));
      const oci = await store.readJson<{ subject?: { digest: string } }>(
        s.ref.snapshot_ref as `sha256:${string}`,
      );
      expect(
        oci.subject?.digest === ctx.fixtures.counter.digest,
        `subject ${oci.subject?.digest}, the guest came from ${ctx.fixtures.counter.digest}`,
      );
      return { message: `${results.filter((r) => r.status === "pass").length} artifact checks passed` };
    },
  },
  {
    ...snap,
    id: "runtime.restore.continues",
    section: "§5.7",
    title:
      "starting the snapshot artifact restores the guest: it counts on from where it was, without booting",
    async run(ctx) {
      const s = await takenSnapshot(ctx);
      const g = await clone(ctx, "clone1");
      await ctx.waitFor(g, "running", (i) => i.state === "running");
      const first = counterOf(await ctx.line(g, Marker.counter, 60_000));
      const logs = await ctx.logs(g.id);
      expect(
        !logs.some((x) => Marker.ready.test(x.line)),
        "the clone printed OVMS-READY: it was booted, not restored",
      );
      expect(
        first >= s.before,
        `the clone's first count is ${first}; the guest had counted to ${s.before} before the snapshot`,
      );
      return { message: `counted to ${s.before} before the snapshot; the clone went on at ${first}` };
    },
  },
  {
    ...snap,
    id: "runtime.restore.clones",
    section: "§5.7",
    title: "each restore is a clone of its own: another id and name, running beside the first",
    async run(ctx) {
      const a = await ctx.need("the restored clone1", () => clone(ctx, "clone1"));
      const b = await clone(ctx, "clone2");
      expect(a.id !== b.id && a.name !== b.name, `both clones are ${a.id}`);
      const [sa, sb] = await Promise.all(
        [a, b].map((g) => ctx.waitFor(g, "running", (i) => i.state === "running")),
      );
      expect(sa.state === "running" && sb.state === "running", "the clones do not run side by side");
    },
  },
  {
    ...snap,
    id: "runtime.restore.compatibility",
    section: "§5.6",
    title: "overrides that contradict the snapshot are refused before anything starts, naming the item",
    async run(ctx) {
      const s = await takenSnapshot(ctx);
      const count = async () => (await ctx.api.get("/instances?all=1")).body?.instances?.length;
      const before = await count();
      const bad: string[] = [];
      for (const [what, o, code, word] of [
        ["memory", { memory: 256 << 20 }, "MANIFEST_INVALID", /memory/i],
        ["cpus", { cpus: 2 }, "MANIFEST_INVALID", /cpu/i],
        ["machine", { machine: "q35" }, "MANIFEST_INVALID", /machine/i],
        ["cmdline", { cmdline: "quiet" }, undefined, /cmdline|command line/i],
      ] as [string, object, string | undefined, RegExp][]) {
        const r = await ctx.api.post("/start", {
          manifest: s.ref.reference,
          overrides: ctx.overrides({ ...o, name: ctx.name(`compat-${what}`) }),
        });
        if (r.status === 202) {
          bad.push(`a ${what} override was accepted`);
        } else if ((code && r.body?.error?.code !== code) || r.status < 400 || r.status >= 500) {
          bad.push(
            `a ${what} override answered ${r.status} ${r.body?.error?.code ?? ""}${code ? `, want ${code}` : ""}`,
          );
        } else if (!word.test(r.body?.error?.message ?? "")) {
          bad.push(`the refusal of a ${what} override does not name it: ${r.body?.error?.message}`);
        }
      }
      expect(!bad.length, bad.join("; "));
      expect((await count()) === before, "an instance was created anyway");
    },
  },
  {
    ...snap,
    requirement: "SHOULD",
    id: "runtime.snapshot.of-clone",
    section: "§5.8",
    title: "a restored instance can be snapshotted (generation 2), its subject the snapshot it came from",
    async run(ctx) {
      const s = await takenSnapshot(ctx);
      const g = await ctx.need("the restored clone1", () => clone(ctx, "clone1"));
      const r = await ctx.api.post("/snapshot", {
        instance_id: g.id,
        tag: `ovms-conformance/snapshot:clone-${ctx.runId}`,
      });
      expect(r.status === 200, `answered ${r.status} ${r.text.slice(0, 200)}, want 200`);
      if (!ctx.settings.runtimeStore) return { message: "subject not checked (no --runtime-store)" };
      const store = await Store.open(ctx.settings.runtimeStore);
      const oci = await store.readJson<{ subject?: { digest: string } }>(
        r.body.snapshot_ref as `sha256:${string}`,
      );
      expect(
        oci.subject?.digest === s.ref.snapshot_ref,
        `subject ${oci.subject?.digest}, the clone came from ${s.ref.snapshot_ref}`,
      );
    },
  },
  {
    ...snap,
    requirement: "INFO",
    id: "runtime.timing.restore",
    section: "§5.7",
    title: "restore time as the runtime reports it (start_ms) and as seen from outside",
    async run(ctx) {
      const g = await ctx.need("the restored clone1", () => clone(ctx, "clone1"));
      const s = await ctx.status(g.id);
      const running = (ctx.states.get(g.id) ?? []).find((x) => x.state === "running");
      return {
        measured: {
          start_ms: s?.metrics?.start_ms ?? "not reported",
          start_answer_ms: g.start.ms,
          running_seen_after_ms: running ? Math.round(running.at - g.sentAt) : "not seen",
        },
      };
    },
  },
  {
    ...snap,
    id: "runtime.restore.preload",
    section: "§2.2, §5.7",
    title: "preload_hint and mlock_required are honoured",
    async run() {
      throw new Manual(
        "not visible over the API: with preload_hint the first start of a snapshot must not pay for decompression (compare its start_ms with later ones); with mlock_required and too low a RLIMIT_MEMLOCK the start must be refused with INSUFFICIENT_RESOURCES",
      );
    },
  },
];
