import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import type { PreparedArtifact } from "../../artifact/prepare.js";
import { transition } from "../lifecycle.js";
import { RuntimeError } from "../runtime-error.js";
import {
  TERMINAL_STATES,
  type Injection,
  type Instance,
  type KillAction,
  type Runtime,
  type SnapshotCapture,
  type SnapshotOptions,
  type StartOptions,
  type StopOptions,
} from "../types.js";
import { qemuVersion } from "./accel.js";
import { DEFAULT_BOOT_TIMEOUT_MS, trackBoot } from "./boot-watchdog.js";
import type { ConfineSetting } from "./confine.js";
import { injectInto } from "./ivshmem.js";
import { Migration } from "./migration.js";
import { VmmLauncher } from "./launcher.js";
import type { QmpClient } from "./qmp-client.js";
import { InstanceRecords, type InstanceRecord } from "./records.js";
import { toInstance } from "./record-views.js";
import { takeSnapshot } from "./snapshot-take.js";
import { reattach } from "./reattach.js";
import {
  bringUp,
  checkPlanHost,
  takeFromPool,
  launchQemu,
  lostPort,
  planInstance,
  type PlanContext,
  type Planned,
} from "./start-steps.js";
import { InstanceConsole } from "./instance-console.js";
import { signalInstance, writeStdin, type SignalDeps } from "./control-channel.js";
import { Supervisor, connectQmp, isOurQemu, kill, procMetrics, type Live } from "./supervisor.js";
import { trace } from "./trace.js";
import { QemuWarmPool } from "./warm-pool.js";
import { PortBook, type Probe } from "../ports.js";
import * as net from "./network.js";

/**
 * QemuRuntime is the reference Runtime: one QEMU process per instance, each with its own
 * folder under `<stateDir>/instances/<id>` (state.json, serial.log, overlay.qcow2, qemu.log),
 * confined as the launcher (launcher.ts) decides, its boot watched (boot-watchdog.ts). QEMU runs
 * detached from the daemon, so instances outlive a daemon restart; `recover` re-attaches to
 * them (reattach.ts). It composes the planner (plan.ts, start-steps.ts), the records, process
 * supervision, migration, snapshots (snapshot-take.ts), the warm pool (warm-pool.ts: clones
 * restored ahead and paused, so a start is identity, ports and `cont`) and the serial log;
 * every state change goes through the lifecycle's `transition`.
 */
export class QemuRuntime implements Runtime {
  readonly name = "qemu";
  private readonly records: InstanceRecords;
  private readonly procs = new Supervisor();
  private readonly migration = new Migration();
  private readonly warm: QemuWarmPool;
  private readonly console: InstanceConsole;
  private readonly loaded = new Set<string>(); // pool processes restored already, paused

  private constructor(
    readonly stateDir: string,
    private readonly shmRoot: string,
    private readonly ports: PortBook,
    private readonly vmm: VmmLauncher,
    private readonly bootTimeoutMs: number,
  ) {
    this.records = new InstanceRecords(stateDir);
    this.console = new InstanceConsole(this.records, this.procs);
    this.warm = new QemuWarmPool({
      launch: async (a) => {
        const plan = await planInstance(this.planContext(), a, { name: `pool-${randomUUID().slice(0, 8)}` });
        const { rec, live } = await this.launch(a, plan, performance.now(), true);
        await this.migration.load(live.qmp!, rec.shm_dir, a.ramSnapshot!.deviceStateFile);
        this.loaded.add(rec.instance_id);
        return rec.instance_id;
      },
      usable: (id) => {
        const rec = this.records.get(id);
        const live = this.procs.get(id);
        return !!rec && !!live && rec.state === "starting" && !live.qmp?.isClosed;
      },
      discard: (id) => this.discard(id),
      restored: (id) => this.loaded.has(id),
    });
  }

  /**
   * create makes a runtime keeping instances under `stateDir`. As root, QEMU runs as `runAs`
   * (default `nobody`), confined in namespaces unless `confine` is `off` or bubblewrap is
   * missing (then it drops to that user itself, `-runas`), with per-instance cgroup limits
   * unless `limits` is false. A booting guest's console may stay silent `bootTimeoutMs`
   * (default 60 s, 0: not watched) before it is `stalled`. `portProbe` replaces the check
   * that a host port is free (tests use it to lose the race with another program on purpose).
   * `backgroundSnapshots` (default true) lets QEMUs use userfaultfd for snapshots that pause
   * the guest only for its device state (launcher.ts, background.ts).
   */
  static async create(opts: {
    stateDir: string;
    shmDir?: string;
    runAs?: string | null;
    portProbe?: Probe;
    confine?: ConfineSetting;
    limits?: boolean;
    bootTimeoutMs?: number;
    backgroundSnapshots?: boolean;
  }): Promise<QemuRuntime> {
    const vmm = await VmmLauncher.create(opts);
    const shm = opts.shmDir ?? (existsSync("/dev/shm") ? "/dev/shm/ovms" : join(opts.stateDir, "shm"));
    const ports = new PortBook(opts.portProbe);
    const rt = new QemuRuntime(opts.stateDir, shm, ports, vmm, opts.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS);
    void net.hasUserNetworking(); // asked now, so that no start waits for the answer
    await mkdir(join(opts.stateDir, "instances"), { recursive: true, mode: 0o755 });
    await vmm.checkReachable([join(opts.stateDir, "instances")]);
    await mkdir(shm, { recursive: true });
    return rt;
  }

  /** confinement is how this runtime's QEMUs run: `namespaces`, `user` (-runas) or `none`. */
  get confinement(): VmmLauncher["mode"] {
    return this.vmm.mode;
  }

  /** backgroundSnapshots tells whether this runtime's QEMUs may use userfaultfd: snapshots are then `background` by default. */
  get backgroundSnapshots(): boolean {
    return this.vmm.userfaultfd;
  }

  /** pool is the Runtime's warm-pool capability: clones restored ahead and paused (QemuWarmPool). */
  get pool(): QemuWarmPool {
    return this.warm;
  }

  /** version is the QEMU version, read once (`qemu-system-x86_64 --version`). */
  version(): Promise<string> {
    return qemuVersion();
  }

  async start(a: PreparedArtifact, opts: StartOptions = {}): Promise<Instance> {
    const t0 = performance.now();
    trace("start: begin");
    await this.version();
    // A clone the pool holds already has its memory: the host check is for a new process only.
    const poolable = !!a.ramSnapshot && this.warm.hasReady(a);
    const plan = await planInstance(this.planContext(), a, opts, { hostCheck: !poolable });
    trace("start: planned");
    if (plan.network) await net.requireUserNetworking();
    // Host ports are claimed before anything is created: one in use refuses the start (rfc §6.6).
    const claim = await this.ports.claim(plan.network?.ports ?? [], net.portHolders(this.records.all()));
    if (plan.network) plan.network.published = claim.ports;
    const pooled = a.ramSnapshot
      ? takeFromPool(this.warm, this.records, this.procs, this.vmm.user.name, a, plan)
      : undefined;
    if (!pooled && poolable)
      await checkPlanHost(this.planContext(), plan).catch((e: unknown) => {
        claim.release();
        throw e;
      });
    const { rec, live } = await (
      pooled
        ? net.publishPooled(pooled, plan.network?.published, async () => {
            await this.discard(pooled.rec.instance_id);
            this.warm.refillSoon(a);
          })
        : this.launch(a, plan, t0).catch((e) => lostPort(this.records, e))
    ).finally(() => claim.release()); // from here on the instance's record holds its ports
    rec.name = plan.name;
    rec.started_at = new Date().toISOString();
    let spoke: Promise<void> | undefined;
    if (pooled) {
      rec.pooled = true;
      spoke = new Promise((r) => this.watchBoot(rec, live, t0, r));
    }
    const restoredAhead = !!pooled && this.loaded.delete(rec.instance_id);
    await bringUp(this.records, this.migration, a, { rec, live, restoredAhead, t0 });
    // No process figures in a start's answer: a process that has just started has none yet.
    const info = toInstance(rec);
    trace("start: done");
    if (pooled) this.warm.refillSoon(a, spoke);
    return info;
  }

  /** launch starts an instance's QEMU (launchQemu); `pool`: a warm-pool process, its boot not watched. */
  private launch(a: PreparedArtifact, plan: Planned, t0: number, pool = false) {
    return launchQemu(
      {
        records: this.records,
        procs: this.procs,
        vmm: this.vmm,
        migration: this.migration,
        shmRoot: this.shmRoot,
        onExit: (id, code, signal) => void this.onExit(id, code, signal),
        watchBoot: (rec, live) => this.watchBoot(rec, live, t0),
        connectQmp: (rec, ms) => this.connectQmp(rec, ms),
      },
      a,
      plan,
      pool,
    );
  }

  /** discard stops and removes a warm-pool process that is no longer wanted. */
  private async discard(id: string): Promise<void> {
    if (!this.records.get(id)) return;
    await this.stop(id, { force: true }).catch(() => undefined);
    await this.remove(id, { force: true }).catch(() => undefined);
  }

  snapshot<R>(ref: string, opts: SnapshotOptions, sink: (c: SnapshotCapture) => Promise<R>): Promise<R> {
    return takeSnapshot(
      {
        runtimeName: this.name,
        records: this.records,
        procs: this.procs,
        migration: this.migration,
        version: () => this.version(),
        grant: (paths) => this.vmm.user.grant(paths),
        stop: (id) => this.stop(id, { force: true }),
        userfaultfd: this.vmm.userfaultfd,
      },
      ref,
      opts,
      sink,
    );
  }

  async stop(ref: string, opts: StopOptions = {}): Promise<Instance> {
    const rec = this.records.find(ref);
    const live = this.procs.get(rec.instance_id);
    if (TERMINAL_STATES.has(rec.state) || !live) return this.info(rec);
    // Marked before the save: QEMU may end meanwhile, and that exit was asked for.
    live.stopping = true;
    if (rec.state !== "stopping") transition(rec, "stopping");
    await this.records.save(rec);
    await this.procs.terminate(live, () => rec.pid, opts);
    return this.info(rec);
  }

  async kill(ref: string, signal: number): Promise<{ instance: Instance; action: KillAction }> {
    const r = await signalInstance(this.control(), ref, signal);
    return { instance: await this.info(r.rec), action: r.action };
  }

  stdin(ref: string, data: Buffer, close: boolean): Promise<number> {
    return writeStdin(this.control(), ref, data, close);
  }

  /** control is what OVMS-Init's control channel needs of the runtime (control-channel.ts). */
  private control(): SignalDeps {
    const { records, procs, console } = this;
    return {
      records,
      procs,
      send: (id, p, d) => console.control(id, p, d),
      stop: (id, o) => this.stop(id, o),
    };
  }

  inject(ref: string, req: Injection): Promise<number> {
    return injectInto(this.records.find(ref), req);
  }

  async status(ref: string): Promise<Instance> {
    return this.info(this.records.find(ref));
  }

  async list(opts: { all?: boolean } = {}): Promise<Instance[]> {
    const recs = [...this.records.all()].filter(
      (r) => !r.pool && (opts.all || !TERMINAL_STATES.has(r.state)),
    );
    recs.sort((a, b) => a.created_at.localeCompare(b.created_at));
    return Promise.all(recs.map((r) => this.info(r)));
  }

  logs(ref: string, opts: { follow?: boolean; tail?: number } = {}): Promise<Readable> {
    return this.console.logs(ref, opts);
  }

  consoleOutput(ref: string, opts: { tailBytes?: number; follow?: boolean } = {}): Promise<Readable> {
    return this.console.output(ref, opts);
  }

  consoleInput(ref: string, data: Buffer): Promise<number> {
    return this.console.input(ref, data);
  }

  async remove(ref: string, opts: { force?: boolean } = {}): Promise<void> {
    const rec = this.records.find(ref);
    if (!TERMINAL_STATES.has(rec.state)) {
      if (!opts.force)
        throw new RuntimeError(
          "CONFLICT",
          `instance ${rec.instance_id} is ${rec.state}: stop it first (or force)`,
        );
      await this.stop(rec.instance_id, { force: true });
    }
    await this.records.remove(rec);
    await this.vmm.release(rec.instance_id);
  }

  async recover(): Promise<void> {
    await this.version().catch(() => undefined);
    await this.records.recover({
      isOurs: (rec) => isOurQemu(rec.pid!, rec.instance_id),
      kill: (rec) => kill(rec.pid),
      reattach: (rec) =>
        reattach(rec, {
          procs: this.procs,
          records: this.records,
          onExit: (id, code, signal) => void this.onExit(id, code, signal),
          connectQmp: (r, ms) => this.connectQmp(r, ms),
          watchBoot: (r, live) => this.watchBoot(r, live, performance.now()),
        }),
      release: (rec) => this.vmm.release(rec.instance_id),
    });
  }

  private planContext(): PlanContext {
    return {
      runtimeName: this.name,
      records: this.records,
      shmRoot: this.shmRoot,
      qemuUser: this.vmm.user.name,
      bootTimeoutMs: this.bootTimeoutMs,
    };
  }

  async close(): Promise<void> {
    this.console.close();
    await this.warm.close();
    this.procs.detachAll();
  }

  /** info is a record as the runtime's Instance, with the live process's metrics. */
  private async info(r: InstanceRecord): Promise<Instance> {
    const info = toInstance(r);
    if (info.pid) Object.assign(info.metrics, await procMetrics(info.pid));
    return info;
  }

  /** onExit records how QEMU ended, frees its memory files and wakes whoever waits for the end. */
  private async onExit(id: string, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    const rec = this.records.get(id);
    const live = this.procs.get(id);
    if (!rec) return this.procs.ended(id);
    live?.qmp?.close();
    await this.records.recordExit(rec, code, signal, live?.stopping ?? false);
    await rm(rec.shm_dir, { recursive: true, force: true }).catch(() => undefined);
    await this.vmm.release(id);
    this.loaded.delete(id);
    this.procs.ended(id);
  }

  /** watchBoot records boot_ms (start request to first console output) and runs the boot watchdog (trackBoot). */
  private watchBoot(rec: InstanceRecord, live: Live, t0: number, onFirstOutput?: () => void): void {
    const serial = join(this.records.dir(rec.instance_id), "serial.log");
    const save = () => this.records.save(rec).catch(() => undefined);
    live.watchers.add(trackBoot(rec, serial, t0, save, onFirstOutput));
  }

  /** connectQmp connects to a starting QEMU's monitor and follows its pause/resume events. */
  private async connectQmp(rec: InstanceRecord, timeoutMs: number): Promise<QmpClient> {
    const sock = join(rec.shm_dir, "qmp.sock");
    const qmp = await connectQmp(sock, timeoutMs, () => TERMINAL_STATES.has(rec.state));
    qmp.on("event", (e: { event: string }) => void this.records.recordEvent(rec, e.event));
    return qmp;
  }
}
