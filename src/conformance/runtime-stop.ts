import type { InstanceInfo, InstanceState } from "../api/types.generated.js";
import { Skip, expect, type Check } from "./check.js";
import { Marker } from "./guest.js";
import { sleep, type Guest, type RuntimeContext } from "./runtime-context.js";
import type { Answer, Followed } from "./runtime-api.js";
import { counterCounting, ivshmemBooted, lastCount } from "./runtime-guests.js";
import { readProcess, sameProcess, type VmmProcess } from "./vmm-process.js";

/**
 * The stop sequence of rfc §6.5 seen from outside: a guest that handles the ACPI power button
 * powers off when asked (the runtime asked it first); a guest that ignores it keeps running for
 * `timeout_ms` and is then ended anyway (the runtime escalates), passing through `stopping`;
 * `force` skips the wait; no VMM outlives its instance; ended instances leave the default list
 * and can be removed.
 */

type C = Check<RuntimeContext>;
const basic = { level: "runtime-basic" as const, requirement: "MUST" as const };
const TERMINAL: InstanceState[] = ["exited", "failed"];

/** Stopped is what the suite saw while one instance was being stopped. */
export interface Stopped {
  guest: Guest;
  answer: Answer;
  /** sentAt: when the stop was sent; endedAt: when status first showed a final state. */
  sentAt: number;
  endedAt?: number;
  /** states are the states status showed from the stop request on, in order. */
  states: InstanceState[];
  final?: InstanceInfo;
  /** vmm is the VMM process as /proc showed it before the stop (a runtime on this host). */
  vmm?: VmmProcess;
  countBefore?: number;
  countAfter?: number;
}

/**
 * stopWatched sends `POST /stop` and, while it runs, polls status (every 100 ms) until the
 * instance is final, so that the states it passes through are seen even when the answer only
 * comes at the end.
 */
async function stopWatched(
  ctx: RuntimeContext,
  g: Guest,
  body: Record<string, unknown>,
  limitMs: number,
): Promise<Stopped> {
  const before = await ctx.status(g.id);
  const vmm = before?.pid ? readProcess(before.pid) : undefined;
  const sentAt = performance.now();
  const answering = ctx.api.post("/stop", { instance_id: g.name, ...body });
  const out: Omit<Stopped, "answer"> = { guest: g, sentAt, states: [], ...(vmm ? { vmm } : {}) };
  const deadline = sentAt + limitMs;
  while (performance.now() < deadline) {
    const s = await ctx.status(g.id);
    if (s && out.states[out.states.length - 1] !== s.state) out.states.push(s.state);
    if (s && TERMINAL.includes(s.state)) {
      out.endedAt = performance.now();
      out.final = s;
      break;
    }
    await sleep(100);
  }
  return { ...out, answer: await answering };
}

/** gracefulIvshmem stops the ivshmem guest gracefully with a long timeout: it powers itself off. */
function gracefulIvshmem(ctx: RuntimeContext): Promise<Stopped> {
  return ctx.once("the graceful stop of the ivshmem guest", async () => {
    const g = await ivshmemBooted(ctx);
    return stopWatched(ctx, g, { timeout_ms: 120_000 }, 150_000);
  });
}

/** ESCALATE_MS is the grace a guest deaf to ACPI gets before the runtime must end it anyway. */
const ESCALATE_MS = 3000;

/** escalatedCounter stops the counter guest (deaf to ACPI) with a short timeout. */
function escalatedCounter(ctx: RuntimeContext): Promise<Stopped> {
  return ctx.once("the graceful stop of the counter guest", async () => {
    const g = await counterCounting(ctx);
    const countBefore = await lastCount(ctx, g.id);
    const s = await stopWatched(ctx, g, { timeout_ms: ESCALATE_MS }, ESCALATE_MS + 60_000);
    return { ...s, countBefore, countAfter: await lastCount(ctx, g.id) };
  });
}

const ms = (a: number, b?: number) => (b === undefined ? "never" : `${Math.round(b - a)} ms`);

/** STOP_CHECKS run once the other checks are done with the shared guests. */
export const STOP_CHECKS: C[] = [
  {
    ...basic,
    id: "runtime.stop.graceful",
    section: "§6.5",
    title: "a stop first asks the guest to power off (ACPI), and a guest that does ends the instance early",
    async run(ctx) {
      await ctx.need("the ivshmem guest booted", () => ivshmemBooted(ctx));
      const s = await gracefulIvshmem(ctx);
      expect(s.endedAt !== undefined, `the instance did not end (states seen: ${s.states.join(" → ")})`);
      const logs = await ctx.logs(s.guest.id);
      expect(
        logs.some((x) => Marker.powerOff.test(x.line)),
        "the guest's ACPI power-button handler never ran (no OVMS-POWEROFF line)",
      );
      expect(s.final?.state === "exited", `ended ${s.final?.state} (${s.final?.reason ?? ""}), want exited`);
      return { measured: { stop_ms: Math.round(s.endedAt - s.sentAt), timeout_ms: 120_000 } };
    },
  },
  {
    ...basic,
    id: "runtime.stop.answer",
    section: "§6.3",
    title: "POST /stop answers exited or stopping, and stopping an ended instance answers exited",
    async run(ctx) {
      const s = await ctx.need("the graceful stop of the ivshmem guest", () => gracefulIvshmem(ctx));
      expect(s.answer.status === 200, `answered ${s.answer.status}: ${s.answer.text.slice(0, 200)}`);
      const st = s.answer.body?.status;
      expect(st === "exited" || st === "stopping", `status ${JSON.stringify(st)}`);
      if (st === "exited") {
        const now = await ctx.status(s.guest.id);
        expect(now && TERMINAL.includes(now.state), `answered exited while status says ${now?.state}`);
      }
      const again = await ctx.api.post("/stop", { instance_id: s.guest.id });
      expect(
        again.status === 200 && again.body?.status === "exited",
        `a second stop answered ${again.status} ${again.text.slice(0, 200)}, want 200 {"status":"exited"}`,
      );
    },
  },
  {
    ...basic,
    id: "runtime.vmm.no-orphan",
    section: "§6.5",
    title: "no VMM process outlives its instance",
    async run(ctx) {
      const stops = [
        await ctx.need("the graceful stop of the ivshmem guest", () => gracefulIvshmem(ctx)),
        await ctx.need("the graceful stop of the counter guest", () => escalatedCounter(ctx)),
      ];
      const seen = stops.filter((s) => s.vmm);
      if (!seen.length)
        throw new Skip(
          "the VMM processes are not visible from here (no pid, or another host or PID namespace)",
        );
      for (const s of seen) {
        const deadline = performance.now() + 10_000;
        while (sameProcess(s.vmm!) && performance.now() < deadline) await sleep(100);
        expect(
          !sameProcess(s.vmm!),
          `VMM pid ${s.vmm!.pid} of ${s.guest.name} still runs 10 s after the stop answered`,
        );
      }
      return { message: `pids ${seen.map((s) => s.vmm!.pid).join(", ")} gone` };
    },
  },
  {
    ...basic,
    id: "runtime.list.all",
    section: "§6.3",
    title: "GET /instances leaves ended instances out; all=1 lists them",
    async run(ctx) {
      const s = await ctx.need("the graceful stop of the ivshmem guest", () => gracefulIvshmem(ctx));
      const live = await ctx.api.get("/instances");
      const all = await ctx.api.get("/instances?all=1");
      expect(live.status === 200 && all.status === 200, `answered ${live.status} and ${all.status}`);
      const ids = (r: Answer) =>
        (r.body?.instances ?? []).map((i: InstanceInfo) => (ctx.record(i), i.instance_id));
      expect(!ids(live).includes(s.guest.id), "the exited instance is in the default list");
      expect(ids(all).includes(s.guest.id), "the exited instance is missing from ?all=1");
    },
  },
  {
    ...basic,
    id: "runtime.inject.conflict",
    section: "§6.3",
    title: "inject into an instance that is not running is 409 CONFLICT",
    async run(ctx) {
      const s = await ctx.need("the graceful stop of the ivshmem guest", () => gracefulIvshmem(ctx));
      const r = await ctx.api.post("/inject", {
        instance_id: s.guest.id,
        content: { mmio: { data: "aGk=" } },
      });
      expect(
        r.body?.error?.code === "CONFLICT",
        `answered ${r.status} ${r.text.slice(0, 200)}, want CONFLICT`,
      );
    },
  },
  {
    ...basic,
    id: "runtime.stop.escalation",
    section: "§6.5",
    title: "a guest that ignores ACPI keeps running for timeout_ms, then the runtime ends it anyway",
    async run(ctx) {
      await ctx.need("the counter guest counting", () => counterCounting(ctx));
      const s = await escalatedCounter(ctx);
      expect(
        s.endedAt !== undefined,
        `not ended ${ESCALATE_MS + 60_000} ms after a stop with timeout_ms ${ESCALATE_MS} (states: ${s.states.join(" → ")})`,
      );
      const grace = (s.countAfter ?? 0) - (s.countBefore ?? 0);
      // The guest counts 5 a second: one that was killed at once prints at most a line or two more.
      expect(
        grace >= 4,
        `the guest printed ${grace} more counts after the stop request: it was not given timeout_ms ${ESCALATE_MS}`,
      );
      return { measured: { ended_after_ms: Math.round(s.endedAt - s.sentAt), counts_during_grace: grace } };
    },
  },
  {
    ...basic,
    id: "runtime.lifecycle.stopping",
    section: "§6.5",
    title: "a stopping instance shows `stopping` until its VMM is gone",
    async run(ctx) {
      const s = await ctx.need("the graceful stop of the counter guest", () => escalatedCounter(ctx));
      expect(
        s.states.includes("stopping"),
        `status went ${s.states.join(" → ")} during a ${ESCALATE_MS} ms graceful stop; never \`stopping\``,
      );
      return { message: s.states.join(" → ") };
    },
  },
  {
    ...basic,
    id: "runtime.logs.follow-ends",
    section: "§6.3",
    title: "a followed log ends when the instance ends",
    async run(ctx) {
      const f = await ctx.peek<Followed>("the counter follow stream");
      if (!f) throw new Skip("runtime.logs.follow opened no stream");
      const s = await ctx.need("the graceful stop of the counter guest", () => escalatedCounter(ctx));
      const ended = await Promise.race([f.ended, sleep(15_000).then(() => "timeout" as const)]);
      expect(ended !== "timeout", "the stream is still open 15 s after the instance ended");
      expect(ended === "end", `the stream ${ended === "error" ? "failed" : "was closed"} instead of ending`);
      return { measured: { after_end_ms: s.endedAt ? Math.round((f.endedAt ?? 0) - s.endedAt) : "?" } };
    },
  },
  {
    ...basic,
    id: "runtime.remove",
    section: "§6.3",
    title: "DELETE removes an ended instance; it is not found afterwards",
    async run(ctx) {
      const s = await ctx.need("the graceful stop of the ivshmem guest", () => gracefulIvshmem(ctx));
      const r = await ctx.api.delete(`/instances/${encodeURIComponent(s.guest.name)}`);
      expect(
        r.status === 200 && r.body?.status === "removed",
        `answered ${r.status} ${r.text.slice(0, 200)}`,
      );
      const after = await ctx.api.get(`/status/${encodeURIComponent(s.guest.id)}`);
      expect(
        after.status === 404 && after.body?.error?.code === "NOT_FOUND",
        `GET /status afterwards answered ${after.status}`,
      );
    },
  },
];

/** extInstance starts the extensions fixture once (runtime.manifest.extensions judges the answer). */
function extInstance(ctx: RuntimeContext): Promise<Guest> {
  return ctx.once("the extensions instance", () => ctx.start("extensions", "ext"));
}

/** FORCE_CHECKS start throw-away instances of the extensions fixture: force stop, force remove. */
export const FORCE_CHECKS: C[] = [
  {
    ...basic,
    id: "runtime.manifest.extensions",
    section: "§2.3",
    title: "an unknown `extensions` key is ignored, never a reason to refuse",
    async run(ctx) {
      await extInstance(ctx);
    },
  },
  {
    ...basic,
    id: "runtime.stop.force",
    section: "§6.5",
    title: "force: true ends the instance without waiting for the guest",
    async run(ctx) {
      const g = await ctx.need("the extensions instance", () => extInstance(ctx));
      const s = await stopWatched(ctx, g, { force: true, timeout_ms: 600_000 }, 60_000);
      expect(s.answer.status === 200, `answered ${s.answer.status}: ${s.answer.text.slice(0, 200)}`);
      expect(
        s.endedAt !== undefined && s.endedAt - s.sentAt < 30_000,
        `not ended ${ms(s.sentAt, s.endedAt)} after a forced stop (timeout_ms 600000)`,
      );
      return { measured: { stop_ms: Math.round(s.endedAt! - s.sentAt) } };
    },
  },
  {
    ...basic,
    id: "runtime.remove.force",
    section: "§6.3",
    title: "DELETE ?force=1 stops a live instance and removes it",
    async run(ctx) {
      const g = await ctx.start("extensions", "ext2");
      const r = await ctx.api.delete(`/instances/${encodeURIComponent(g.id)}?force=1`);
      expect(
        r.status === 200 && r.body?.status === "removed",
        `answered ${r.status} ${r.text.slice(0, 200)}`,
      );
      const after = await ctx.api.get(`/status/${encodeURIComponent(g.id)}`);
      expect(after.status === 404, `GET /status afterwards answered ${after.status}`);
    },
  },
];
