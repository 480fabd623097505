import type { InstanceInfo } from "../api/types.generated.js";
import { Manual, Skip, expect, type Check } from "./check.js";
import { Marker, injectLength } from "./guest.js";
import { counterOf, reachable, type RuntimeContext } from "./runtime-context.js";
import { counterCounting, counterGuest, ivshmemBooted, ivshmemGuest } from "./runtime-guests.js";

/**
 * Runtime-Basic (rfc §9): the instance's life as a client sees it — start, status, logs,
 * inject, the lifecycle of §6.5 — on the shared guests. The refusals and the error model are
 * in runtime-errors.ts, the stop sequence in runtime-stop.ts.
 */

type C = Check<RuntimeContext>;
const basic = { level: "runtime-basic" as const, requirement: "MUST" as const };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** BASIC_START are the checks from `GET /version` to a guest that injected bytes reach. */
export const BASIC_START: C[] = [
  {
    ...basic,
    id: "runtime.version",
    section: "§6.3",
    title: "GET /version answers the runtime's identity and API v0.1",
    async run(ctx) {
      const r = await ctx.api.get("/version");
      expect(r.status === 200, `answered ${r.status}: ${r.text.slice(0, 200)}`);
      ctx.version = r.body;
      expect(r.body?.api === "v0.1", `api is ${JSON.stringify(r.body?.api)}, want "v0.1"`);
      return {
        message: `${r.body.name} ${r.body.version}, VMM ${r.body.runtime?.name} ${r.body.runtime?.version}`,
      };
    },
  },
  {
    ...basic,
    id: "runtime.start.accepted",
    section: "§6.3",
    title: "POST /start answers 202 with the instance id, status `starting` and the name asked for",
    async run(ctx) {
      // Both shared guests boot at once: two cores boot two TCG guests in the time of one.
      const [a, b] = await Promise.all([ivshmemGuest(ctx), counterGuest(ctx)]);
      for (const g of [a, b]) {
        expect(UUID.test(g.start.body.instance_id), `instance_id ${g.start.body.instance_id} is not a UUID`);
        expect(g.start.body.status === "starting", `status is ${g.start.body.status}, want starting`);
        expect(g.start.body.name === g.name, `name is ${g.start.body.name}, asked for ${g.name}`);
      }
      return {
        message: `${a.name} from ${ctx.fixtures.ivshmem.manifest}; ${b.name} from ${ctx.fixtures.counter.manifest}`,
      };
    },
  },
  {
    ...basic,
    id: "runtime.lifecycle.running",
    section: "§6.5",
    title: "a started instance reaches `running`",
    async run(ctx) {
      const [a, b] = await Promise.all([ivshmemGuest(ctx), counterGuest(ctx)]);
      const t0 = performance.now();
      await Promise.all([a, b].map((g) => ctx.waitFor(g, "running", (i) => i.state === "running")));
      return { measured: { waited_ms: Math.round(performance.now() - t0) } };
    },
  },
  {
    ...basic,
    id: "runtime.boot.disk-chain",
    section: "§4.3–§4.4",
    title: "the guest boots on the disk chain: base layer, then the diff over it, under an overlay",
    async run(ctx) {
      const g = await ctx.need("the ivshmem guest booted", () => ivshmemBooted(ctx));
      await ctx.line(g, Marker.disk, 10_000);
      await ctx.line(g, Marker.layer, 10_000);
    },
  },
  {
    ...basic,
    id: "runtime.status.info",
    section: "§6.4",
    title: "status reports the artifact's digest, the resources and the declared devices",
    async run(ctx) {
      const g = await ctx.need("the ivshmem guest booted", () => ivshmemBooted(ctx));
      const s = (await ctx.status(g.id)) as InstanceInfo;
      const f = ctx.fixtures.ivshmem;
      const bad: string[] = [];
      if (s.instance_id !== g.id) bad.push(`instance_id ${s.instance_id}, started as ${g.id}`);
      if (s.artifact?.digest !== f.digest)
        bad.push(`artifact.digest ${s.artifact?.digest}, want ${f.digest}`);
      if (s.metrics?.memory_bytes !== 192 << 20)
        bad.push(`metrics.memory_bytes ${s.metrics?.memory_bytes}, the manifest says ${192 << 20}`);
      if (s.metrics?.vcpus !== 1) bad.push(`metrics.vcpus ${s.metrics?.vcpus}, the manifest says 1`);
      const dev = JSON.stringify(s.devices ?? []);
      if (dev !== JSON.stringify([{ type: "ivshmem", name: "shm0", size: 1 << 20 }]))
        bad.push(`devices ${dev}`);
      if (s.state === "running" && !(typeof s.pid === "number" && s.pid > 0))
        bad.push("no pid while running");
      expect(!bad.length, bad.join("; "));
      return { measured: { machine: s.machine, accel: s.accel } };
    },
  },
  {
    ...basic,
    id: "runtime.names",
    section: "§6.3",
    title: "an instance is found by its id and by its name, and GET /instances lists the live ones",
    async run(ctx) {
      const a = await ctx.need("the ivshmem guest", () => ivshmemGuest(ctx));
      const b = await ctx.need("the counter guest", () => counterGuest(ctx));
      for (const g of [a, b]) {
        const byName = await ctx.status(g.name);
        const byId = await ctx.status(g.id);
        expect(
          byName?.instance_id === g.id,
          `GET /status/${g.name} found ${byName?.instance_id ?? "nothing"}, want ${g.id}`,
        );
        expect(byId?.name === g.name, `GET /status/${g.id} found ${byId?.name ?? "nothing"}`);
      }
      const list = await ctx.api.get("/instances");
      expect(list.status === 200, `GET /instances answered ${list.status}`);
      const ids = (list.body?.instances ?? []).map((i: InstanceInfo) => (ctx.record(i), i.instance_id));
      for (const g of [a, b]) expect(ids.includes(g.id), `GET /instances does not list ${g.name}`);
    },
  },
  {
    ...basic,
    id: "runtime.logs.plain",
    section: "§6.3",
    title: "GET /logs answers the serial console as NDJSON records; tail=N starts with the last N",
    async run(ctx) {
      const g = await ctx.need("the ivshmem guest booted", () => ivshmemBooted(ctx));
      const all = await ctx.logs(g.id);
      expect(
        all.some((x) => Marker.ready.test(x.line)),
        `no OVMS-READY among ${all.length} records`,
      );
      expect(
        all.every((x) => x.stream === "serial"),
        "a record's stream is not `serial`",
      );
      const tail = await ctx.logs(g.id, "?tail=2");
      const want = all.slice(-2).map((x) => x.line);
      expect(
        JSON.stringify(tail.map((x) => x.line)) === JSON.stringify(want),
        `tail=2 gave ${JSON.stringify(tail.map((x) => x.line))}, the log ends with ${JSON.stringify(want)}`,
      );
      expect((await ctx.logs(g.id, "?tail=0")).length === 0, "tail=0 answered old lines");
    },
  },
  {
    ...basic,
    id: "runtime.logs.follow",
    section: "§6.3",
    title: "GET /logs?follow=1 streams lines as the guest writes them",
    async run(ctx) {
      const g = await ctx.need("the counter guest counting", () => counterCounting(ctx));
      const f = ctx.api.follow(`/logs/${encodeURIComponent(g.id)}?follow=1&tail=1`);
      ctx.follows.push(f);
      ctx.once("the counter follow stream", async () => f);
      const t0 = performance.now();
      const first = await f.next((r) => !Number.isNaN(counterOf(r.line)), 30_000);
      const later = await f.next((r) => counterOf(r.line) >= counterOf(first.line) + 3, 30_000);
      const spread = f.records.filter((x) => x.at >= t0);
      // Streamed, not buffered: the lines arrived over time, not in one piece at the end.
      const span = spread.length ? spread[spread.length - 1].at - spread[0].at : 0;
      expect(
        span >= 300,
        `${spread.length} lines arrived within ${Math.round(span)} ms: not streamed as written`,
      );
      return { message: `from ${first.line} to ${later.line} over ${Math.round(span)} ms` };
    },
  },
  {
    ...basic,
    id: "runtime.inject.reaches-guest",
    section: "§6.3",
    title: "POST /inject writes bytes into the ivshmem region the guest reads",
    async run(ctx) {
      const g = await ctx.need("the ivshmem guest booted", () => ivshmemBooted(ctx));
      const text = `conformance ${ctx.runId}`;
      let r = await ctx.api.post("/inject", {
        instance_id: g.name,
        content: { mmio: { device: "shm0", offset: 4, data: text, encoding: "utf8" } },
      });
      expect(
        r.status === 200 && r.body?.bytes === text.length,
        `utf8 inject answered ${r.status} ${r.text.slice(0, 200)}`,
      );
      r = await ctx.api.post("/inject", {
        instance_id: g.id,
        content: { mmio: { data: injectLength(text.length) } },
      });
      expect(
        r.status === 200 && r.body?.bytes === 4,
        `base64 inject answered ${r.status} ${r.text.slice(0, 200)}`,
      );
      await ctx.line(g, new RegExp(`^OVMS-INJECT: ${text}$`), 60_000);
    },
  },
];

/** BASIC_END are the checks that judge the whole run: transitions seen, timing reported. */
export const BASIC_END: C[] = [
  {
    ...basic,
    id: "runtime.lifecycle.transitions",
    section: "§6.5",
    title: "every change of state seen is a move of the lifecycle; exited and failed are final",
    async run(ctx) {
      const bad: string[] = [];
      for (const [id, seq] of ctx.states) {
        for (let i = 1; i < seq.length; i++) {
          if (!reachable(seq[i - 1].state, seq[i].state))
            bad.push(`${id}: ${seq[i - 1].state} → ${seq[i].state}`);
        }
      }
      expect(!bad.length, `illegal transitions: ${bad.join("; ")}`);
      return {
        message: `${ctx.states.size} instances, ${[...ctx.states.values()].reduce((n, s) => n + s.length, 0)} states seen`,
      };
    },
  },
  {
    ...basic,
    id: "runtime.recovery",
    section: "§6.5",
    title: "after a restart the runtime re-attaches live VMMs and marks dead ones exited",
    async run() {
      throw new Manual(
        "restarting the runtime is outside the API: start a guest, restart the runtime (kill -9 it, then start it), and GET /status must show the guest `running` with the same pid; kill the VMM while the runtime is down and it must show `exited`",
      );
    },
  },
];

/** BASIC_TIMING report the cold start, while the ivshmem guest is still there to ask. */
export const BASIC_TIMING: C[] = [
  {
    ...basic,
    requirement: "INFO",
    id: "runtime.timing.cold-start",
    section: "§6.4",
    title: "cold start as the runtime reports it (start_ms, boot_ms) and as seen from outside",
    async run(ctx) {
      const g = await ctx.need("the ivshmem guest", () => ivshmemGuest(ctx));
      const seq = ctx.states.get(g.id) ?? [];
      const running = seq.find((s) => s.state === "running");
      const s = await ctx.status(g.id);
      return {
        measured: {
          start_ms: s?.metrics?.start_ms ?? "not reported",
          boot_ms: s?.metrics?.boot_ms ?? "not reported",
          start_answer_ms: g.start.ms,
          running_seen_after_ms: running ? Math.round(running.at - g.sentAt) : "not seen",
        },
      };
    },
  },
  {
    ...basic,
    requirement: "SHOULD",
    id: "runtime.timing.target",
    section: "§2.2, §6.4",
    title: "runtimeHints.coldStartTargetMs comes back as cold_start_target_ms, with met_target",
    async run(ctx) {
      const g = await ctx.need("the ivshmem guest", () => ivshmemGuest(ctx));
      const s = await ctx.status(g.id);
      if (!s) throw new Skip("the ivshmem guest is gone");
      expect(
        s.cold_start_target_ms === 600_000,
        `cold_start_target_ms is ${s.cold_start_target_ms}, the manifest says 600000`,
      );
      const met = typeof s.metrics?.start_ms === "number" ? s.metrics.start_ms <= 600_000 : undefined;
      expect(
        met === undefined || s.met_target === met,
        `met_target is ${s.met_target} with start_ms ${s.metrics?.start_ms}`,
      );
    },
  },
];
