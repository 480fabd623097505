import { randomUUID } from "node:crypto";
import { join } from "node:path";
import type { PreparedArtifact } from "../../artifact/prepare.js";
import { RuntimeError } from "../runtime-error.js";
import { TERMINAL_STATES, type StartOptions } from "../types.js";
import { QEMU_BINARY, chooseAccel } from "./accel.js";
import { qemuArgv } from "./argv.js";
import { bootTimeout } from "./boot-watchdog.js";
import { clockArgs, hostTscKhz, withKernelArgs } from "./clock.js";
import { readHostFacts } from "./host-facts.js";
import * as net from "./network.js";
import type { VmmLauncher } from "./launcher.js";
import { checkHost, defaultName, draftPlan, finishPlan, qemuConfig, type Plan } from "./plan.js";
import type { QmpClient } from "./qmp-client.js";
import { newRecord, type InstanceRecord, type InstanceRecords } from "./records.js";
import { kill, type Live, type Supervisor } from "./supervisor.js";
import type { QemuWarmPool } from "./warm-pool.js";
import type { Migration } from "./migration.js";
import { trace } from "./trace.js";
import { transition } from "../lifecycle.js";

/** Planned is a plan with what the runtime adds: kernel arguments, and the boot watchdog's timeout. */
export type Planned = Plan & { kernelArgsAdded: string[]; bootTimeoutMs: number };

/** PlanContext is what planning a start needs of the runtime. */
export interface PlanContext {
  runtimeName: string;
  records: InstanceRecords;
  shmRoot: string;
  qemuUser?: string;
  bootTimeoutMs: number;
}

/**
 * planInstance decides an instance's shape (draftPlan), checks the host can hold it
 * (checkHost), and only then chooses the accelerator: the KVM probe is the slow part. A cold
 * boot gets the kernel arguments its clock needs (clockArgs) and the boot watchdog's timeout.
 */
export async function planInstance(
  ctx: PlanContext,
  a: PreparedArtifact,
  opts: StartOptions,
  { hostCheck = true }: { hostCheck?: boolean } = {},
): Promise<Planned> {
  const name = opts.name ?? defaultName(a.manifest.name, randomUUID().slice(0, 6));
  const owner = ctx.records.named(name);
  const draft = draftPlan(a, opts, {
    runtime: ctx.runtimeName,
    name,
    ...(owner ? { owner: { id: owner.instance_id, state: owner.state } } : {}),
  });
  if (hostCheck) await checkPlanHost(ctx, draft);
  const plan = finishPlan(draft, draft.accel ?? (await chooseAccel(opts.accel, a.kernelPath)));
  const added = a.ramSnapshot ? [] : clockArgs({ ...plan, tscKhz: await hostTscKhz() });
  plan.cmdline = withKernelArgs(plan.cmdline, added);
  return {
    ...plan,
    kernelArgsAdded: added,
    bootTimeoutMs: bootTimeout(opts.bootTimeoutMs, ctx.bootTimeoutMs),
  };
}

/** checkPlanHost checks that the host can hold what a plan asks for (plan.ts checkHost). */
export async function checkPlanHost(ctx: PlanContext, plan: Parameters<typeof checkHost>[0]): Promise<void> {
  checkHost(plan, await readHostFacts(ctx.shmRoot, plan.memLock, ctx.qemuUser));
}

/**
 * takeFromPool hands a ready warm-pool process to a restore: no I/O, no await (the hot path).
 * Pool processes are planned without overrides: the snapshot's NIC in mode user, no forwards.
 */
export function takeFromPool(
  warm: QemuWarmPool,
  records: InstanceRecords,
  procs: Supervisor,
  qemuUser: string | undefined,
  a: PreparedArtifact,
  plan: Plan,
): { rec: InstanceRecord; live: Live } | undefined {
  const nic = a.ramSnapshot!.metadata.network;
  if (!net.poolServes(nic && { mode: "user", mac: nic.mac }, plan.network, qemuUser)) return undefined;
  const id = warm.take(a);
  if (id === undefined) return undefined;
  const rec = records.get(id)!;
  delete rec.pool;
  rec.name = plan.name;
  rec.created_at = new Date().toISOString();
  return { rec, live: procs.get(id)! };
}

/**
 * bringUp takes a launched QEMU, or a pool's clone, to the state its instance runs in: `cont`
 * for a clone restored ahead, the device state for any other restore, else what QEMU says (a
 * cold boot may be paused). It records start_ms; a failure ends the instance (failStart).
 */
export async function bringUp(
  records: InstanceRecords,
  migration: Migration,
  a: PreparedArtifact,
  { rec, live, restoredAhead, t0 }: { rec: InstanceRecord; live: Live; restoredAhead: boolean; t0: number },
): Promise<void> {
  let saved = false;
  try {
    if (restoredAhead) {
      // The record is written while QEMU resumes, as it will be once `cont` returns: a
      // failed `cont` rewrites it as failed (failStart), so it never outlives a lie.
      if (rec.state === "starting") transition(rec, "running");
      await Promise.all([live.qmp!.execute("cont"), records.save(rec)]);
      saved = true;
      trace("start: cont returned");
    } else if (a.ramSnapshot) {
      await migration.restore(live.qmp!, rec.shm_dir, a.ramSnapshot.deviceStateFile);
      if (rec.state === "starting") transition(rec, "running");
    } else {
      const st = await live.qmp!.execute<{ status: string }>("query-status");
      if (rec.state === "starting") transition(rec, st.status === "paused" ? "paused" : "running");
    }
    rec.start_ms = Math.round(performance.now() - t0);
    // A start served by a restored clone was written above; start_ms goes with its next write.
    if (!saved) await records.save(rec);
  } catch (e) {
    await failStart(records, rec, live, e);
  }
}

/** failStart ends an instance that could not start (failed, with QEMU's last words) and throws START_FAILED. */
export async function failStart(
  records: InstanceRecords,
  rec: InstanceRecord,
  live: Live,
  e: unknown,
): Promise<never> {
  if (!TERMINAL_STATES.has(rec.state)) {
    // QEMU first: in a sandbox the child is bwrap, which ends with QEMU but does not take it along.
    kill(rec.pid);
    live.child?.kill("SIGKILL");
    await live.exited;
  }
  await records.recordStartFailure(rec, e);
  throw new RuntimeError("START_FAILED", `instance ${rec.instance_id}: ${rec.reason}`, {
    details: { instance_id: rec.instance_id },
  });
}

/** lostPort: QEMU could not bind a published port (taken after the probe): CONFLICT, nothing left. */
export async function lostPort(records: InstanceRecords, e: unknown): Promise<never> {
  const rec = records.get(String((e as RuntimeError).details?.instance_id));
  const rule = rec?.reason && net.forwardFailure(rec.reason);
  if (rule) await records.remove(rec);
  throw rule ? net.lostPortError(rule) : e;
}

/** LaunchContext is what launching an instance's QEMU needs of the runtime. */
export interface LaunchContext {
  records: InstanceRecords;
  procs: Supervisor;
  vmm: VmmLauncher;
  migration: Migration;
  shmRoot: string;
  onExit(id: string, code: number | null, signal: NodeJS.Signals | null): void;
  watchBoot(rec: InstanceRecord, live: Live): void;
  connectQmp(rec: InstanceRecord, timeoutMs: number): Promise<QmpClient>;
}

/**
 * launchQemu creates an instance's folder and overlay and starts its QEMU, connected over QMP.
 * For a restore QEMU waits at `-incoming defer`; the pool keeps such processes ready (`pool`:
 * their boot is not watched until one is handed out).
 */
export async function launchQemu(
  ctx: LaunchContext,
  a: PreparedArtifact,
  plan: Planned,
  pool: boolean,
): Promise<{ rec: InstanceRecord; live: Live }> {
  const { records, vmm } = ctx;
  const id = randomUUID();
  const dir = records.dir(id);
  const shmDir = join(ctx.shmRoot, id);
  const cfg = qemuConfig(a, plan, { id, dir, shmDir, runAs: vmm.runAs, vmgenid: randomUUID() });
  await records.createFiles(a, cfg, shmDir, (extra) => vmm.grant(a, cfg, dir, extra), plan.launch);
  const argv = qemuArgv(cfg);
  const rec = newRecord(a, plan, cfg, {
    shmDir,
    argv: [QEMU_BINARY, ...argv],
    pool,
    kernelArgsAdded: plan.kernelArgsAdded,
    bootTimeoutMs: plan.bootTimeoutMs,
  });
  records.add(rec);
  await records.save(rec);
  const onExit = (code: number | null, signal: NodeJS.Signals | null) => ctx.onExit(id, code, signal);
  const { live, ...launched } = await vmm.spawn(ctx.procs, a, cfg, argv, join(dir, "qemu.log"), onExit);
  Object.assign(rec, launched);
  if (rec.state === "created") transition(rec, "starting");
  await records.save(rec);
  if (!pool) ctx.watchBoot(rec, live);
  try {
    live.qmp = await ctx.connectQmp(rec, 10_000);
    if (a.ramSnapshot) await ctx.migration.prepareIncoming(live.qmp, a.ramSnapshot.metadata);
  } catch (e) {
    await failStart(records, rec, live, e);
  }
  return { rec, live };
}
