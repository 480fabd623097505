import type { SnapshotResponse } from "../api/types.generated.js";
import { Skip } from "./check.js";
import type { Answer } from "./runtime-api.js";
import { counterOf, type Guest, type RuntimeContext } from "./runtime-context.js";
import { Marker } from "./guest.js";

/**
 * The guests the runtime checks share, each started once per run (a TCG boot costs seconds):
 * the `ivshmem` guest (q35, a device, a cooperative ACPI handler) and the `counter` guest
 * (microvm, counting, deaf to the ACPI button), plus the snapshot of the counter. Checks that
 * merely use one call `ctx.need(...)` through these, so a guest that never came up fails one
 * check and skips the rest.
 */

/** COUNTING matches a counter line of at least 3: the guest has been counting for a while. */
const COUNTING = /^OVMS-COUNTER: ([3-9]|\d{2,})$/;

/** ivshmemGuest starts the ivshmem fixture. */
export function ivshmemGuest(ctx: RuntimeContext): Promise<Guest> {
  return ctx.once("the ivshmem guest", () => ctx.start("ivshmem", "ivshmem"));
}

/** counterGuest starts the counter fixture. */
export function counterGuest(ctx: RuntimeContext): Promise<Guest> {
  return ctx.once("the counter guest", () => ctx.start("counter", "counter"));
}

/** ivshmemBooted waits until the ivshmem guest runs and its init found the device. */
export function ivshmemBooted(ctx: RuntimeContext): Promise<Guest> {
  return ctx.once("the ivshmem guest booted", async () => {
    const g = await ivshmemGuest(ctx);
    await ctx.waitFor(g, "running", (i) => i.state === "running");
    await ctx.line(g, Marker.ivshmemReady);
    return g;
  });
}

/** counterCounting waits until the counter guest runs and has counted to 3. */
export function counterCounting(ctx: RuntimeContext): Promise<Guest> {
  return ctx.once("the counter guest counting", async () => {
    const g = await counterGuest(ctx);
    await ctx.waitFor(g, "running", (i) => i.state === "running");
    await ctx.line(g, COUNTING);
    return g;
  });
}

/** lastCount is the highest counter value in an instance's log so far. */
export async function lastCount(ctx: RuntimeContext, ref: string): Promise<number> {
  const counts = (await ctx.logs(ref)).map((r) => counterOf(r.line)).filter((n) => !Number.isNaN(n));
  return counts.length ? Math.max(...counts) : -1;
}

/** Snapshot is the answer to the one `POST /snapshot` of the run, and the count before it. */
export interface Snapshot {
  answer: Answer<SnapshotResponse>;
  tag: string;
  /** before is the highest count the guest had printed when the snapshot was asked for. */
  before: number;
  source: Guest;
}

/**
 * snapshotOfCounter asks the runtime for a snapshot of the counting guest (`stop: false`, so
 * it goes on), once; the answer may be 200 or 501, the checks judge it.
 */
export function snapshotOfCounter(ctx: RuntimeContext): Promise<Snapshot> {
  return ctx.once("the snapshot of the counter guest", async () => {
    const source = await counterCounting(ctx);
    const before = await lastCount(ctx, source.id);
    const tag = `${ctx.settings.registry ?? "ovms-conformance/snapshot"}:snap-${ctx.runId}`;
    const answer = await ctx.api.post<SnapshotResponse>("/snapshot", {
      instance_id: source.name,
      tag,
      stop: false,
    });
    return { answer, tag, before, source };
  });
}

/** takenSnapshot is the snapshot, when the runtime took one (else the check is skipped). */
export async function takenSnapshot(ctx: RuntimeContext): Promise<Snapshot & { ref: SnapshotResponse }> {
  const s = await ctx.need("the snapshot of the counter guest", () => snapshotOfCounter(ctx));
  if (s.answer.status !== 200)
    throw new Skip(`the runtime took no snapshot (POST /snapshot answered ${s.answer.status})`);
  return { ...s, ref: s.answer.body };
}
