import { transition } from "../lifecycle.js";
import type { QmpClient } from "./qmp-client.js";
import type { InstanceRecord, InstanceRecords } from "./records.js";
import type { Live, Supervisor } from "./supervisor.js";

/** ReattachContext is what re-attaching needs of the runtime. */
export interface ReattachContext {
  procs: Supervisor;
  records: InstanceRecords;
  onExit(id: string, code: number | null, signal: NodeJS.Signals | null): void;
  connectQmp(rec: InstanceRecord, timeoutMs: number): Promise<QmpClient>;
  watchBoot(rec: InstanceRecord, live: Live): void;
}

/**
 * reattach watches a QEMU of an earlier daemon by its pid and reads its state over QMP. One
 * whose monitor does not answer (another client holds it) is kept, watched by pid; stop falls
 * back to signals. A stop in progress stays one: `stopping` only ever ends.
 */
export async function reattach(rec: InstanceRecord, ctx: ReattachContext): Promise<void> {
  const id = rec.instance_id;
  const live = ctx.procs.attach(id, rec.pid!, (code, signal) => ctx.onExit(id, code, signal));
  let status: string | undefined;
  try {
    live.qmp = await ctx.connectQmp(rec, 3000);
    status = (await live.qmp.execute<{ status: string }>("query-status")).status;
  } catch {
    rec.reason = "re-attached without QMP: the monitor did not answer";
  }
  if (status !== undefined && rec.state !== "stopping") {
    const to = status === "paused" ? "paused" : rec.state === "stalled" ? "stalled" : "running";
    if (rec.state !== to) transition(rec, to);
  }
  await ctx.records.save(rec);
  // A boot the earlier daemon watched is watched on (its silence counted from now).
  if (rec.boot?.phase === "booting" || rec.boot?.phase === "stalled") ctx.watchBoot(rec, live);
}
