import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, openSync, closeSync, readFileSync } from "node:fs";
import { chown, mkdir, open, readdir, readFile, rename, rm, stat, writeFile, statfs } from "node:fs/promises";
import { freemem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { PassThrough, type Readable } from "node:stream";
import { connect, createServer } from "node:net";
import { run } from "../../artifact/exec.js";
import { createOverlay } from "../../artifact/qemu-img.js";
import type { PreparedArtifact } from "../../artifact/prepare.js";
import { RuntimeError } from "../runtime-error.js";
import {
  TERMINAL_STATES,
  type Accel,
  type Injection,
  type Instance,
  type InstanceState,
  type Machine,
  type Runtime,
  type SnapshotCapture,
  type StartOptions,
} from "../types.js";
import { QEMU_BINARY, chooseAccel } from "./accel.js";
import { defaultCpuModel, qemuArgv, type QemuConfig } from "./argv.js";
import { QmpClient } from "./qmp-client.js";

const DEFAULT_MEMORY = 256 << 20;

/** trace prints timestamped steps of a start when OVMS_TRACE is set (where the milliseconds go). */
const trace: (step: string) => void = process.env.OVMS_TRACE
  ? (step) => process.stderr.write(`${performance.now().toFixed(2)} ${step}\n`)
  : () => {};
const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;

/** InstanceRecord is an instance's state.json: what survives a daemon restart. */
interface InstanceRecord {
  instance_id: string;
  name: string;
  state: InstanceState;
  reason?: string;
  artifact: { reference: string; digest: `sha256:${string}` };
  accel: Accel;
  machine: Machine;
  pid?: number;
  created_at: string;
  started_at?: string;
  exited_at?: string;
  exit_code?: number;
  memory_bytes: number;
  vcpus: number;
  boot_ms?: number;
  start_ms?: number;
  cold_start_target_ms?: number;
  devices: { type: "ivshmem"; name: string; size: number; path: string }[];
  ram_file: string;
  shm_dir: string;
  argv: string[];
  cpu_model?: string;
  cmdline?: string;
  /** Digest of the ramsnap this instance was restored from. */
  restored_from?: string;
  /** A warm-pool process, not yet handed out (hidden from list, killed on recovery). */
  pool?: boolean;
  /** Handed out from the warm pool. */
  pooled?: boolean;
}

/** Plan is the shape of an instance, decided before anything is created. */
interface Plan {
  name: string;
  memory: number;
  vcpus: number;
  machine: Machine;
  accel: Accel;
  cpuModel: string;
  cmdline: string;
  devices: { type: "ivshmem"; name: string; size: number }[];
  memLock: boolean;
}

/** Pool is the warm pool of one snapshot artifact. */
interface Pool {
  artifact: PreparedArtifact;
  size: number;
  ready: { id: string }[];
  filling: number;
}

/** Live is what the daemon holds for a running instance besides its record. */
interface Live {
  qmp?: QmpClient;
  child?: ChildProcess;
  exited: Promise<void>;
  markExited: () => void;
  stopping?: boolean;
  snapshotting?: boolean;
  watchers: Set<() => void>;
}

/**
 * QemuRuntime is the reference Runtime: one QEMU process per instance, each with its own
 * folder under `<stateDir>/instances/<id>` (state.json, serial.log, overlay.qcow2,
 * qemu.log). QEMU runs detached from the daemon, so instances outlive a daemon restart;
 * `recover` re-attaches to them through their QMP sockets.
 */
export class QemuRuntime implements Runtime {
  readonly name = "qemu";
  private readonly records = new Map<string, InstanceRecord>();
  private readonly live = new Map<string, Live>();
  private readonly pools = new Map<string, Pool>();
  private runAsIds?: { uid: number; gid: number };
  /** poolMemoryBytes caps the guest memory all warm pools together may hold. */
  poolMemoryBytes = 2 * 1024 ** 3;
  private qemuVersion = "";

  private constructor(
    readonly stateDir: string,
    private readonly shmRoot: string,
    private readonly runAs?: string,
  ) {}

  /**
   * create makes a runtime keeping instances under `stateDir`. As root, QEMU drops to
   * `runAs` (default `nobody`) after start-up.
   */
  static async create(opts: {
    stateDir: string;
    shmDir?: string;
    runAs?: string | null;
  }): Promise<QemuRuntime> {
    const runAs =
      opts.runAs === null ? undefined : (opts.runAs ?? (process.getuid?.() === 0 ? "nobody" : undefined));
    const shm = opts.shmDir ?? (existsSync("/dev/shm") ? "/dev/shm/ovms" : join(opts.stateDir, "shm"));
    const rt = new QemuRuntime(opts.stateDir, shm, runAs);
    await mkdir(join(opts.stateDir, "instances"), { recursive: true, mode: 0o755 });
    if (runAs) await checkReachable(join(opts.stateDir, "instances"), runAs);
    await mkdir(shm, { recursive: true });
    return rt;
  }

  /** version is the QEMU version, read once (`qemu-system-x86_64 --version`). */
  async version(): Promise<string> {
    if (!this.qemuVersion) {
      const out = await run(QEMU_BINARY, ["--version"]).catch((e) => {
        throw new RuntimeError("RUNTIME_UNAVAILABLE", `QEMU is not available: ${(e as Error).message}`, {
          cause: e,
        });
      });
      this.qemuVersion = /version (\S+)/.exec(out)?.[1] ?? "unknown";
    }
    return this.qemuVersion;
  }

  private dir(id: string): string {
    return join(this.stateDir, "instances", id);
  }

  async start(a: PreparedArtifact, opts: StartOptions = {}): Promise<Instance> {
    const t0 = performance.now();
    trace("start: begin");
    await this.version();
    const plan = await this.plan(a, opts);
    trace("start: planned");
    const pooled = a.ramSnapshot ? this.takeFromPool(a, plan) : undefined;
    const { rec, live } = pooled ?? (await this.launch(a, plan, t0));
    rec.name = plan.name;
    rec.started_at = new Date().toISOString();
    if (pooled) {
      rec.pooled = true;
      this.watchBoot(rec.instance_id, t0);
    }
    try {
      if (a.ramSnapshot) await this.restoreInto(rec, live, a.ramSnapshot.deviceStateFile);
      else {
        const st = await live.qmp!.execute<{ status: string }>("query-status");
        if (rec.state === "starting") rec.state = st.status === "paused" ? "paused" : "running";
      }
      rec.start_ms = Math.round(performance.now() - t0);
      await this.save(rec);
    } catch (e) {
      await this.failStart(rec, live, e);
    }
    const info = await this.info(rec);
    trace("start: done");
    // Refill after the caller has answered: spawning QEMU blocks the event loop for a few ms.
    if (pooled) setTimeout(() => void this.fillPool(a), 50).unref();
    return info;
  }

  /**
   * plan decides an instance's shape from the manifest and the overrides, and refuses bad
   * input before anything is created. A restore takes its shape from the snapshot and refuses
   * overrides that contradict it (§5.6).
   */
  private async plan(a: PreparedArtifact, opts: StartOptions): Promise<Plan> {
    const m = a.manifest;
    const name = opts.name ?? `${(m.name.split("/").pop() ?? "vm").slice(0, 50)}-${randomUUID().slice(0, 6)}`;
    if (!NAME_RE.test(name))
      throw new RuntimeError("INVALID_ARGUMENT", `name "${name}": use 1-63 letters, digits, '_', '.' or '-'`);
    for (const r of this.records.values()) {
      if (r.name === name)
        throw new RuntimeError(
          "CONFLICT",
          `name "${name}" is already used by instance ${r.instance_id} (${r.state}); remove it first`,
        );
    }
    const devices = m.devices ?? [];
    const needsPci = devices.length > 0;
    const snap = a.ramSnapshot?.metadata;
    if (snap) {
      const bad: string[] = [];
      if (snap.runtime.name !== this.name)
        bad.push(`runtime: snapshot ${snap.runtime.name}, this runtime ${this.name}`);
      if (snap.machine !== "microvm" && snap.machine !== "q35")
        bad.push(`machine: ${snap.machine} is not supported`);
      if (opts.machine && opts.machine !== snap.machine)
        bad.push(`machine: snapshot ${snap.machine}, asked ${opts.machine}`);
      if (opts.memory !== undefined && opts.memory !== snap.memoryBytes)
        bad.push(`memory: snapshot ${snap.memoryBytes}, asked ${opts.memory}`);
      if (opts.cpus !== undefined && opts.cpus !== snap.vcpus)
        bad.push(`vcpus: snapshot ${snap.vcpus}, asked ${opts.cpus}`);
      if (opts.accel && opts.accel !== "auto" && opts.accel !== snap.accel)
        bad.push(`accel: snapshot ${snap.accel}, asked ${opts.accel}`);
      if (opts.cmdline)
        bad.push("cmdline: a restored kernel is already running; its command line cannot change");
      if (bad.length)
        throw new RuntimeError("MANIFEST_INVALID", `cannot restore ${a.reference}: ${bad.join("; ")}`);
    }
    const memory = snap?.memoryBytes ?? opts.memory ?? m.resources?.memory ?? DEFAULT_MEMORY;
    const vcpus = snap?.vcpus ?? opts.cpus ?? m.resources?.vcpus ?? 1;
    if (memory < 16 << 20)
      throw new RuntimeError("INVALID_ARGUMENT", `memory ${memory} bytes: at least 16 MiB`);
    const hinted =
      m.runtimeHints?.machine === "microvm" || m.runtimeHints?.machine === "q35"
        ? m.runtimeHints.machine
        : undefined;
    const machine =
      (snap?.machine as Machine | undefined) ?? opts.machine ?? hinted ?? (needsPci ? "q35" : "microvm");
    if (machine === "microvm" && needsPci) {
      throw new RuntimeError(
        "INVALID_ARGUMENT",
        `machine microvm has no PCI, but device ${devices[0].name} (${devices[0].type}) needs it: use q35`,
      );
    }
    const memLock = !!(snap && m.ramSnapshot?.mlock_required);
    if (memLock) await this.checkMemlock(memory);
    await this.checkMemory(memory + devices.reduce((n, d) => n + d.size, 0));
    const accel = (snap?.accel as Accel | undefined) ?? (await chooseAccel(opts.accel, a.kernelPath));
    return {
      name,
      memory,
      vcpus,
      machine,
      accel,
      cpuModel: snap?.cpuModel ?? defaultCpuModel(accel),
      cmdline: [m.kernel.args ?? "", opts.cmdline ?? ""].join(" ").trim(),
      devices,
      memLock,
    };
  }

  /**
   * launch creates an instance's folder and overlay and starts its QEMU, connected over QMP.
   * For a restore QEMU waits at `-incoming defer`; the pool keeps such processes ready.
   */
  private async launch(
    a: PreparedArtifact,
    plan: Plan,
    t0: number,
    pool = false,
  ): Promise<{ rec: InstanceRecord; live: Live }> {
    const id = randomUUID();
    const dir = this.dir(id);
    const shmDir = join(this.shmRoot, id);
    await mkdir(dir, { recursive: true, mode: 0o711 });
    await mkdir(shmDir, { recursive: true, mode: 0o711 });
    const restore = a.ramSnapshot;
    const cfg: QemuConfig = {
      id,
      machine: plan.machine,
      accel: plan.accel,
      cpuModel: plan.cpuModel,
      memoryBytes: plan.memory,
      vcpus: plan.vcpus,
      kernel: a.kernelPath,
      initrd: a.initrdPath,
      cmdline: plan.cmdline,
      serialLog: join(dir, "serial.log"),
      // Sockets live in the tmpfs folder: short paths (sun_path is 108 bytes) that the QEMU
      // user can reach after it dropped root, wherever the state directory is.
      qmpSocket: join(shmDir, "qmp.sock"),
      ramFile: restore ? restore.memoryFile : join(shmDir, "ram"),
      devices: plan.devices.map((d) => ({
        type: d.type,
        name: d.name,
        size: d.size,
        path: join(shmDir, `ivshmem-${d.name}`),
      })),
      runAs: this.runAs,
      restore: !!restore,
      vmgenid: randomUUID(),
      memLock: plan.memLock,
    };
    try {
      if (a.disks.length) {
        const top = a.disks[a.disks.length - 1];
        cfg.disk = join(dir, "overlay.qcow2");
        await createOverlay(cfg.disk, top.path, top.format);
      }
      await writeFile(cfg.serialLog, "");
      const mine = [dir, shmDir, cfg.serialLog, ...(cfg.disk ? [cfg.disk] : [])];
      // A private (share=off) mapping still opens the file read-write, so the QEMU user must own it.
      if (restore) mine.push(restore.memoryFile);
      if (this.runAs) await this.grantTo(this.runAs, mine);
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      await rm(shmDir, { recursive: true, force: true });
      throw e;
    }
    const argv = qemuArgv(cfg);
    const rec: InstanceRecord = {
      instance_id: id,
      name: plan.name,
      state: "created",
      artifact: { reference: a.reference, digest: a.digest },
      accel: plan.accel,
      machine: plan.machine,
      created_at: new Date().toISOString(),
      memory_bytes: plan.memory,
      vcpus: plan.vcpus,
      cpu_model: cfg.cpuModel!,
      cmdline: cfg.cmdline,
      devices: cfg.devices,
      ram_file: cfg.ramFile,
      shm_dir: shmDir,
      argv: [QEMU_BINARY, ...argv],
    };
    if (restore) rec.restored_from = restore.digest;
    if (pool) rec.pool = true;
    if (a.manifest.runtimeHints?.coldStartTargetMs !== undefined)
      rec.cold_start_target_ms = a.manifest.runtimeHints.coldStartTargetMs;
    this.records.set(id, rec);
    await this.save(rec);

    const logFd = openSync(join(dir, "qemu.log"), "a");
    let child: ChildProcess;
    try {
      // Detached: QEMU is not killed with the daemon; a restarted daemon re-attaches to it.
      child = spawn(QEMU_BINARY, argv, { detached: true, stdio: ["ignore", logFd, logFd] });
    } finally {
      closeSync(logFd);
    }
    child.unref();
    rec.pid = child.pid;
    rec.state = "starting";
    await this.save(rec);
    const live = this.track(id, child);
    child.on("exit", (code, signal) => void this.onExit(id, code, signal));
    if (!pool) this.watchBoot(id, t0);
    try {
      live.qmp = await this.connectQmp(id, 10_000);
      if (restore) {
        await live.qmp.execute("migrate-set-capabilities", {
          capabilities: [
            { capability: "x-ignore-shared", state: true },
            { capability: "events", state: true },
          ],
        });
      }
    } catch (e) {
      await this.failStart(rec, live, e);
    }
    return { rec, live };
  }

  /**
   * restoreInto feeds the device state to a QEMU waiting at `-incoming defer` through a
   * `unix:` socket it listens on, waits for the incoming migration to complete, and resumes.
   */
  private async restoreInto(rec: InstanceRecord, live: Live, deviceStateFile: string): Promise<void> {
    trace("restore: begin");
    const qmp = live.qmp!;
    const sock = join(rec.shm_dir, "incoming.sock");
    const state = await this.deviceState(deviceStateFile);
    const done = qmp.waitEvent(
      "MIGRATION",
      30_000,
      (e) => e.data?.status === "completed" || e.data?.status === "failed",
    );
    await qmp.execute("migrate-incoming", { uri: `unix:${sock}` });
    trace("restore: migrate-incoming returned");
    await new Promise<void>((resolve, reject) => {
      const c = connect(sock);
      c.once("error", reject);
      c.end(state, () => resolve());
    });
    trace("restore: state sent");
    const ev = await done;
    trace("restore: migration completed");
    if (ev.data?.status !== "completed")
      throw new RuntimeError("RESTORE_FAILED", `incoming migration ${String(ev.data?.status)}`);
    await qmp.execute("cont");
    trace("restore: cont returned");
    rec.state = "running";
  }

  private readonly deviceStates = new Map<string, Buffer>();

  /** deviceState reads a snapshot's device state once (tens of KB) and keeps it for later restores. */
  private async deviceState(path: string): Promise<Buffer> {
    let b = this.deviceStates.get(path);
    if (!b) {
      b = await readFile(path);
      this.deviceStates.set(path, b);
    }
    return b;
  }

  private async failStart(rec: InstanceRecord, live: Live, e: unknown): Promise<never> {
    if (!TERMINAL_STATES.has(rec.state)) {
      live.child?.kill("SIGKILL");
      if (!live.child && rec.pid) this.kill(rec);
      await live.exited;
    }
    const log = await readFile(join(this.dir(rec.instance_id), "qemu.log"), "utf8").catch(() => "");
    rec.state = "failed";
    rec.reason = `QEMU did not start: ${log.trim().split("\n").slice(-3).join(" ") || (e as Error).message}`;
    if (e instanceof RuntimeError && e.code === "RESTORE_FAILED")
      rec.reason = `restore failed: ${e.message}; ${log.trim().split("\n").slice(-2).join(" ")}`;
    await this.save(rec);
    throw new RuntimeError("START_FAILED", `instance ${rec.instance_id}: ${rec.reason}`, {
      details: { instance_id: rec.instance_id },
    });
  }

  /**
   * configurePool keeps `size` paused QEMU processes ready for a snapshot artifact, so a
   * start only loads device state and continues. The pool refills in the background and
   * never holds more guest memory than `poolMemoryBytes` across all snapshots.
   */
  /** pool is the Runtime's warm-pool capability (see configurePool and poolStatus). */
  readonly pool = {
    configure: (a: PreparedArtifact, size: number) => this.configurePool(a, size),
    status: () => this.poolStatus(),
  };

  async configurePool(a: PreparedArtifact, size: number): Promise<void> {
    if (!a.ramSnapshot)
      throw new RuntimeError(
        "INVALID_ARGUMENT",
        `${a.reference} has no RAM snapshot: a warm pool only serves restores`,
      );
    const p = this.pools.get(a.digest) ?? { artifact: a, size: 0, ready: [], filling: 0 };
    p.size = size;
    p.artifact = a;
    this.pools.set(a.digest, p);
    while (p.ready.length > size) await this.discard(p.ready.pop()!);
    await this.fillPool(a);
  }

  /** poolStatus tells how many ready processes each pooled snapshot has. */
  poolStatus(): { digest: string; size: number; ready: number }[] {
    return [...this.pools.entries()].map(([digest, p]) => ({ digest, size: p.size, ready: p.ready.length }));
  }

  private takeFromPool(a: PreparedArtifact, plan: Plan): { rec: InstanceRecord; live: Live } | undefined {
    const p = this.pools.get(a.digest);
    for (;;) {
      const e = p?.ready.shift();
      if (!e) return undefined;
      const rec = this.records.get(e.id);
      const live = this.live.get(e.id);
      if (!rec || !live || rec.state !== "starting" || live.qmp?.isClosed) continue;
      delete rec.pool;
      rec.name = plan.name;
      rec.created_at = new Date().toISOString();
      return { rec, live };
    }
  }

  private async fillPool(a: PreparedArtifact): Promise<void> {
    const p = this.pools.get(a.digest);
    if (!p) return;
    while (p.ready.length + p.filling < p.size) {
      const mem = a.ramSnapshot!.metadata.memoryBytes;
      if (this.pooledBytes() + mem > this.poolMemoryBytes) return;
      p.filling++;
      try {
        const plan = await this.plan(a, { name: `pool-${randomUUID().slice(0, 8)}` });
        const { rec } = await this.launch(a, plan, performance.now(), true);
        p.ready.push({ id: rec.instance_id });
      } catch {
        return; // a pool that cannot fill is only a slower start, never an error
      } finally {
        p.filling--;
      }
    }
  }

  private pooledBytes(): number {
    let n = 0;
    for (const p of this.pools.values())
      n += (p.ready.length + p.filling) * (p.artifact.ramSnapshot?.metadata.memoryBytes ?? 0);
    return n;
  }

  private async discard(e: { id: string }): Promise<void> {
    const rec = this.records.get(e.id);
    if (!rec) return;
    await this.stop(e.id, { force: true }).catch(() => undefined);
    await this.remove(e.id, { force: true }).catch(() => undefined);
  }

  async snapshot<R>(
    idOrName: string,
    opts: { stop?: boolean },
    sink: (c: SnapshotCapture) => Promise<R>,
  ): Promise<R> {
    const rec = this.find(idOrName);
    const live = this.live.get(rec.instance_id);
    if ((rec.state !== "running" && rec.state !== "paused") || !live?.qmp) {
      throw new RuntimeError(
        "CONFLICT",
        `instance ${rec.instance_id} is ${rec.state}: only a running or paused instance can be snapshotted`,
      );
    }
    if (rec.restored_from) {
      throw new RuntimeError(
        "CONFLICT",
        `instance ${rec.instance_id} was restored from a snapshot: its memory is a private copy, v0.1 snapshots cold-booted instances only`,
      );
    }
    if (rec.devices.length) {
      // QEMU 7.2 checks the guest-physical address of every shared RAM block it skips; an
      // ivshmem BAR is not mapped yet when the incoming side loads RAM, so the restore would
      // fail ("Mismatched GPAs"). Refuse up front rather than produce a snapshot that cannot load.
      throw new RuntimeError(
        "CONFLICT",
        `instance ${rec.instance_id} has ivshmem device ${rec.devices[0].name}: QEMU ${await this.version()} cannot restore a shared-memory PCI BAR skipped by x-ignore-shared; v0.1 snapshots instances without ivshmem devices`,
      );
    }
    if (live.snapshotting)
      throw new RuntimeError("CONFLICT", `instance ${rec.instance_id} is already being snapshotted`);
    live.snapshotting = true;
    const qmp = live.qmp;
    const wasRunning = rec.state === "running";
    const dir = this.dir(rec.instance_id);
    const sock = join(rec.shm_dir, "migrate.sock");
    let result: R;
    try {
      await qmp.execute("stop");
      await qmp.execute("migrate-set-capabilities", {
        capabilities: [{ capability: "x-ignore-shared", state: true }],
      });
      // QEMU 7.2 cannot `exec:` under -sandbox spawn=deny: it connects to a socket we listen on.
      const chunks: Buffer[] = [];
      await rm(sock, { force: true });
      const server = createServer((c) => c.on("data", (d: Buffer) => chunks.push(d)));
      const received = new Promise<void>((resolve) =>
        server.on("connection", (c) => c.on("close", () => resolve())),
      );
      await new Promise<void>((resolve) => server.listen(sock, resolve));
      try {
        if (this.runAs) await this.grantTo(this.runAs, [sock]);
        const done = qmp.waitEvent("MIGRATION", 60_000, (e) =>
          ["completed", "failed", "cancelled"].includes(String(e.data?.status)),
        );
        await qmp.execute("migrate-set-capabilities", {
          capabilities: [{ capability: "events", state: true }],
        });
        await qmp.execute("migrate", { uri: `unix:${sock}` });
        const ev = await done;
        if (ev.data?.status !== "completed") {
          const q = await qmp
            .execute<{ "error-desc"?: string }>("query-migrate")
            .catch(() => ({}) as { "error-desc"?: string });
          throw new RuntimeError(
            "SNAPSHOT_FAILED",
            `saving device state failed (${String(ev.data?.status)}): ${q["error-desc"] ?? "no detail from QEMU"}`,
          );
        }
        await received;
      } finally {
        server.close();
        await rm(sock, { force: true });
      }
      result = await sink({
        instanceId: rec.instance_id,
        runtime: { name: this.name, version: await this.version() },
        machine: rec.machine,
        accel: rec.accel,
        cpuModel: rec.cpu_model ?? defaultCpuModel(rec.accel),
        memoryBytes: rec.memory_bytes,
        vcpus: rec.vcpus,
        cmdline: rec.cmdline ?? "",
        devices: rec.devices.map((d) => ({ type: d.type, name: d.name, size: d.size })),
        deviceState: Buffer.concat(chunks),
        memoryFile: rec.ram_file,
        ...(existsSync(join(dir, "overlay.qcow2")) ? { overlay: join(dir, "overlay.qcow2") } : {}),
        artifact: rec.artifact,
      });
    } finally {
      live.snapshotting = false;
      if (opts.stop) await this.stop(rec.instance_id, { force: true }).catch(() => undefined);
      else if (wasRunning) await qmp.execute("cont").catch(() => undefined);
    }
    return result;
  }

  async stop(idOrName: string, opts: { timeoutMs?: number; force?: boolean } = {}): Promise<Instance> {
    const rec = this.find(idOrName);
    const live = this.live.get(rec.instance_id);
    if (TERMINAL_STATES.has(rec.state) || !live) return this.info(rec);
    live.stopping = true;
    rec.state = "stopping";
    await this.save(rec);
    const waitExit = (ms: number) =>
      Promise.race([
        live.exited.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), ms)),
      ]);
    if (!live.qmp && rec.pid) {
      // No monitor: QEMU shuts down cleanly on SIGTERM.
      process.kill(rec.pid, "SIGTERM");
      if (!(await waitExit(opts.timeoutMs ?? 5000))) this.kill(rec);
    } else if (!opts.force) {
      // Ask the guest first (ACPI power button), then QEMU, then the kernel.
      await live.qmp?.execute("system_powerdown").catch(() => undefined);
      if (!(await waitExit(opts.timeoutMs ?? 10_000))) {
        await live.qmp?.execute("quit").catch(() => undefined);
        if (!(await waitExit(2000))) this.kill(rec);
      }
    } else {
      await live.qmp?.execute("quit").catch(() => undefined);
      if (!(await waitExit(1000))) this.kill(rec);
    }
    await live.exited;
    return this.info(rec);
  }

  async inject(idOrName: string, req: Injection): Promise<number> {
    const rec = this.find(idOrName);
    if (rec.state !== "running" && rec.state !== "paused") {
      throw new RuntimeError("CONFLICT", `instance ${rec.instance_id} is ${rec.state}, not running`);
    }
    const dev = req.device ? rec.devices.find((d) => d.name === req.device) : rec.devices[0];
    if (!dev) {
      throw new RuntimeError(
        "INVALID_ARGUMENT",
        req.device
          ? `instance ${rec.instance_id} has no device "${req.device}" (has: ${rec.devices.map((d) => d.name).join(", ") || "none"})`
          : `instance ${rec.instance_id} has no ivshmem device`,
      );
    }
    const offset = req.offset ?? 0;
    if (offset < 0 || offset + req.data.length > dev.size) {
      throw new RuntimeError(
        "INVALID_ARGUMENT",
        `inject of ${req.data.length} bytes at offset ${offset} does not fit device ${dev.name} (${dev.size} bytes)`,
      );
    }
    const fh = await open(dev.path, "r+");
    try {
      await fh.write(req.data, 0, req.data.length, offset);
    } finally {
      await fh.close();
    }
    return req.data.length;
  }

  async status(idOrName: string): Promise<Instance> {
    return this.info(this.find(idOrName));
  }

  async list(opts: { all?: boolean } = {}): Promise<Instance[]> {
    const recs = [...this.records.values()].filter(
      (r) => !r.pool && (opts.all || !TERMINAL_STATES.has(r.state)),
    );
    recs.sort((a, b) => a.created_at.localeCompare(b.created_at));
    return Promise.all(recs.map((r) => this.info(r)));
  }

  async logs(idOrName: string, opts: { follow?: boolean; tail?: number } = {}): Promise<Readable> {
    const rec = this.find(idOrName);
    const path = join(this.dir(rec.instance_id), "serial.log");
    const out = new PassThrough({ objectMode: true });
    let offset = 0;
    let partial = "";
    const emit = (text: string, final: boolean) => {
      partial += text;
      const lines = partial.split(/\r?\n/);
      partial = final ? "" : lines.pop()!;
      if (final && lines[lines.length - 1] === "") lines.pop();
      const ts = new Date().toISOString();
      return lines.map((line) => ({ ts, stream: "serial" as const, line }));
    };
    const readMore = async (): Promise<string> => {
      const st = await stat(path).catch(() => undefined);
      if (!st || st.size <= offset) return "";
      const fh = await open(path, "r");
      try {
        const buf = Buffer.alloc(st.size - offset);
        const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
        offset += bytesRead;
        return buf.subarray(0, bytesRead).toString("utf8");
      } finally {
        await fh.close();
      }
    };
    let records = emit(await readMore(), !opts.follow);
    if (opts.tail !== undefined) records = opts.tail === 0 ? [] : records.slice(-opts.tail);
    for (const r of records) out.write(r);
    const live = this.live.get(rec.instance_id);
    if (!opts.follow || !live) {
      for (const r of emit("", true)) out.write(r);
      out.end();
      return out;
    }
    let done = false;
    const poll = setInterval(async () => {
      if (done) return;
      for (const r of emit(await readMore(), false)) out.write(r);
    }, 50);
    const finish = async () => {
      if (done) return;
      done = true;
      clearInterval(poll);
      for (const r of emit(await readMore(), true)) out.write(r);
      out.end();
    };
    live.exited.then(finish);
    out.on("close", () => {
      done = true;
      clearInterval(poll);
    });
    return out;
  }

  async remove(idOrName: string, opts: { force?: boolean } = {}): Promise<void> {
    const rec = this.find(idOrName);
    if (!TERMINAL_STATES.has(rec.state)) {
      if (!opts.force)
        throw new RuntimeError(
          "CONFLICT",
          `instance ${rec.instance_id} is ${rec.state}: stop it first (or force)`,
        );
      await this.stop(rec.instance_id, { force: true });
    }
    this.records.delete(rec.instance_id);
    await rm(this.dir(rec.instance_id), { recursive: true, force: true });
    await rm(rec.shm_dir, { recursive: true, force: true });
  }

  async recover(): Promise<void> {
    await this.version().catch(() => undefined);
    const ids = await readdir(join(this.stateDir, "instances")).catch(() => [] as string[]);
    for (const id of ids) {
      let rec: InstanceRecord;
      try {
        rec = JSON.parse(await readFile(join(this.dir(id), "state.json"), "utf8")) as InstanceRecord;
      } catch {
        continue; // a folder without a readable state.json was never started
      }
      if (rec.pool) {
        // Warm-pool processes belong to the daemon that made them; they are not instances.
        if (rec.pid && isOurQemu(rec.pid, id)) this.kill(rec);
        await rm(this.dir(id), { recursive: true, force: true });
        await rm(rec.shm_dir, { recursive: true, force: true });
        continue;
      }
      this.records.set(id, rec);
      if (TERMINAL_STATES.has(rec.state)) continue;
      if (rec.pid && isOurQemu(rec.pid, id)) {
        const live = this.track(id);
        this.pollPid(id, rec.pid);
        try {
          live.qmp = await this.connectQmp(id, 3000);
          const st = await live.qmp.execute<{ status: string }>("query-status");
          rec.state = st.status === "paused" ? "paused" : rec.state === "stopping" ? "stopping" : "running";
        } catch {
          // QEMU lives but its monitor does not answer (another client holds it): keep the
          // instance, watched by pid; stop falls back to signals.
          rec.reason = "re-attached without QMP: the monitor did not answer";
        }
        await this.save(rec);
        continue;
      }
      rec.state = "exited";
      rec.reason = "the QEMU process ended while ovmd was not running";
      rec.exited_at ??= new Date().toISOString();
      delete rec.pid;
      await this.save(rec);
      await rm(rec.shm_dir, { recursive: true, force: true });
    }
  }

  async close(): Promise<void> {
    for (const p of this.pools.values()) for (const e of p.ready.splice(0)) await this.discard(e);
    this.pools.clear();
    for (const [, l] of this.live) {
      l.qmp?.close();
      for (const w of l.watchers) w();
    }
    this.live.clear();
  }

  /** info turns a record into the runtime's Instance, with live metrics. */
  private async info(r: InstanceRecord): Promise<Instance> {
    const now = Date.now();
    const started = r.started_at ? Date.parse(r.started_at) : undefined;
    const ended = r.exited_at ? Date.parse(r.exited_at) : now;
    const info: Instance = {
      id: r.instance_id,
      name: r.name,
      state: r.state,
      artifact: r.artifact,
      accel: r.accel,
      machine: r.machine,
      createdAt: r.created_at,
      metrics: {
        uptimeMs: started ? Math.max(0, ended - started) : 0,
        memoryBytes: r.memory_bytes,
        vcpus: r.vcpus,
      },
      devices: r.devices.map((d) => ({ type: d.type, name: d.name, size: d.size })),
    };
    if (r.reason) info.reason = r.reason;
    if (r.pid && !TERMINAL_STATES.has(r.state)) {
      info.pid = r.pid;
      Object.assign(info.metrics, await procMetrics(r.pid));
    }
    if (r.started_at) info.startedAt = r.started_at;
    if (r.exited_at) info.exitedAt = r.exited_at;
    if (r.exit_code !== undefined) info.exitCode = r.exit_code;
    if (r.boot_ms !== undefined) info.metrics.bootMs = r.boot_ms;
    if (r.start_ms !== undefined) info.metrics.startMs = r.start_ms;
    if (r.cold_start_target_ms !== undefined) info.coldStartTargetMs = r.cold_start_target_ms;
    return info;
  }

  private find(idOrName: string): InstanceRecord {
    const r =
      this.records.get(idOrName) ??
      [...this.records.values()].find(
        (x) => x.name === idOrName || (idOrName.length >= 6 && x.instance_id.startsWith(idOrName)),
      );
    if (!r) throw new RuntimeError("NOT_FOUND", `no instance "${idOrName}"`);
    return r;
  }

  private track(id: string, child?: ChildProcess): Live {
    let markExited!: () => void;
    const exited = new Promise<void>((r) => (markExited = r));
    const live: Live = { child, exited, markExited, watchers: new Set() };
    this.live.set(id, live);
    return live;
  }

  /** onExit records how QEMU ended: a clean guest poweroff or an asked-for stop is `exited`. */
  private async onExit(id: string, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    const rec = this.records.get(id);
    const live = this.live.get(id);
    if (!rec) return;
    live?.qmp?.close();
    const asked = live?.stopping ?? false;
    if (!TERMINAL_STATES.has(rec.state)) {
      rec.exited_at = new Date().toISOString();
      if (code !== null) rec.exit_code = code;
      if (code === 0 || asked) rec.state = "exited";
      else {
        rec.state = "failed";
        rec.reason = signal
          ? `QEMU was killed by ${signal}`
          : code === null
            ? "the QEMU process ended unexpectedly (re-attached: exit status unknown)"
            : `QEMU exited with status ${code}`;
        const log = await readFile(join(this.dir(id), "qemu.log"), "utf8").catch(() => "");
        if (log.trim()) rec.reason += `: ${log.trim().split("\n").slice(-2).join(" ")}`;
      }
      if (asked && !rec.reason) rec.reason = "stopped";
      delete rec.pid;
      await this.save(rec).catch(() => undefined);
    }
    await rm(rec.shm_dir, { recursive: true, force: true }).catch(() => undefined);
    if (live) {
      for (const w of live.watchers) w();
      this.live.delete(id);
      live.markExited();
    }
  }

  /** pollPid watches a re-attached QEMU (not our child, so no exit event) until it is gone. */
  private pollPid(id: string, pid: number): void {
    const live = this.live.get(id)!;
    const t = setInterval(() => {
      if (isAlive(pid)) return;
      clearInterval(t);
      void this.onExit(id, live.stopping ? 0 : null, null);
    }, 200);
    live.watchers.add(() => clearInterval(t));
  }

  /** watchBoot records boot_ms: from the start request to the guest's first console output. */
  private watchBoot(id: string, t0: number): void {
    const live = this.live.get(id)!;
    const path = join(this.dir(id), "serial.log");
    const t = setInterval(async () => {
      const rec = this.records.get(id);
      const st = await stat(path).catch(() => undefined);
      if (!rec || TERMINAL_STATES.has(rec.state)) return clearInterval(t);
      if (st && st.size > 0) {
        clearInterval(t);
        rec.boot_ms = Math.round(performance.now() - t0);
        await this.save(rec).catch(() => undefined);
      }
    }, 10);
    live.watchers.add(() => clearInterval(t));
  }

  private async connectQmp(id: string, timeoutMs: number): Promise<QmpClient> {
    const sock = join(this.records.get(id)!.shm_dir, "qmp.sock");
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rec = this.records.get(id);
      if (rec && TERMINAL_STATES.has(rec.state))
        throw new RuntimeError("START_FAILED", "QEMU exited during start-up");
      try {
        const c = await QmpClient.connect(sock, Math.max(500, deadline - Date.now()));
        c.on("event", (e: { event: string }) => void this.onQmpEvent(id, e.event));
        return c;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  private async onQmpEvent(id: string, event: string): Promise<void> {
    const rec = this.records.get(id);
    if (!rec || TERMINAL_STATES.has(rec.state) || rec.state === "stopping") return;
    if (event === "STOP" && rec.state === "running") rec.state = "paused";
    else if (event === "RESUME" && rec.state === "paused") rec.state = "running";
    else return;
    await this.save(rec).catch(() => undefined);
  }

  private kill(rec: InstanceRecord): void {
    if (rec.pid && isAlive(rec.pid)) {
      try {
        process.kill(rec.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }

  /** checkMemory refuses a start that cannot get its memory, before anything is created. */
  private async checkMemory(bytes: number): Promise<void> {
    const avail = await memAvailable();
    if (bytes > avail) {
      throw new RuntimeError(
        "INSUFFICIENT_RESOURCES",
        `not enough memory: the instance needs ${mib(bytes)} MiB, ${mib(avail)} MiB are available`,
      );
    }
    const fs = await statfs(this.shmRoot).catch(() => undefined);
    if (fs && bytes > fs.bavail * fs.bsize) {
      throw new RuntimeError(
        "INSUFFICIENT_RESOURCES",
        `not enough space on ${this.shmRoot} for guest memory: need ${mib(bytes)} MiB, ${mib(fs.bavail * fs.bsize)} MiB free`,
      );
    }
  }

  /** checkMemlock refuses an mlock_required restore the memlock limit cannot hold. */
  private async checkMemlock(bytes: number): Promise<void> {
    const limits = await readFile("/proc/self/limits", "utf8").catch(() => "");
    const m = /Max locked memory\s+(\S+)/.exec(limits);
    const limit = !m || m[1] === "unlimited" ? Infinity : Number(m[1]);
    // Root keeps CAP_IPC_LOCK only if QEMU does not drop to another user.
    const privileged = process.getuid?.() === 0 && !this.runAs;
    if (!privileged && limit < bytes) {
      throw new RuntimeError(
        "INSUFFICIENT_RESOURCES",
        `the snapshot needs ${mib(bytes)} MiB locked in RAM (mlock_required) but RLIMIT_MEMLOCK is ${mib(limit)} MiB: raise it (ulimit -l, LimitMEMLOCK=) or drop mlock_required`,
      );
    }
  }

  /** grantTo lets the unprivileged QEMU user write the instance's own files, and nothing else. */
  private async grantTo(user: string, paths: string[]): Promise<void> {
    // Looked up once: every launch (and every warm-pool refill) grants a few files.
    this.runAsIds ??= {
      uid: Number(execFileSync("id", ["-u", user], { encoding: "utf8" }).trim()),
      gid: Number(execFileSync("id", ["-g", user], { encoding: "utf8" }).trim()),
    };
    for (const p of paths) await chown(p, this.runAsIds.uid, this.runAsIds.gid);
  }

  /** save writes state.json atomically (temp + rename) on every transition. */
  private async save(rec: InstanceRecord): Promise<void> {
    const dir = this.dir(rec.instance_id);
    const tmp = join(dir, `.state.json.${process.pid}.${randomUUID().slice(0, 8)}`);
    await writeFile(tmp, JSON.stringify(rec, null, 2) + "\n");
    await rename(tmp, join(dir, "state.json"));
  }
}

/**
 * checkReachable makes sure the QEMU user can reach instance folders after it drops root:
 * QEMU reopens its disk images by path when a migration hands them back (`cont`).
 */
async function checkReachable(dir: string, user: string): Promise<void> {
  for (let d = resolve(dir); ; d = dirname(d)) {
    const st = await stat(d);
    if ((st.mode & 0o001) === 0) {
      throw new RuntimeError(
        "RUNTIME_UNAVAILABLE",
        `${d} (mode ${(st.mode & 0o777).toString(8)}) is not reachable by the QEMU user ${user}: make it traversable (chmod o+x) or choose another state directory`,
      );
    }
    if (d === dirname(d)) return;
  }
}

function mib(n: number): number {
  return Math.round(n / (1 << 20));
}

async function memAvailable(): Promise<number> {
  const text = await readFile("/proc/meminfo", "utf8").catch(() => "");
  const kb = /MemAvailable:\s+(\d+) kB/.exec(text)?.[1];
  return kb ? Number(kb) * 1024 : freemem();
}

/** isAlive tells whether `pid` runs (a zombie does not count). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return true;
  }
}

/** isOurQemu checks that `pid` is still the QEMU of instance `id`, not a recycled pid. */
function isOurQemu(pid: number, id: string): boolean {
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return cmd.includes(`ovms-${id}`);
  } catch {
    return false;
  }
}

/** procMetrics reads CPU time and RSS of a process from /proc. */
async function procMetrics(pid: number): Promise<{ cpuTimeMs?: number; rssBytes?: number }> {
  const out: { cpuTimeMs?: number; rssBytes?: number } = {};
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  if (fields.length > 13)
    out.cpuTimeMs = Math.round(((Number(fields[11]) + Number(fields[12])) * 1000) / 100);
  const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  const rss = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
  if (rss) out.rssBytes = Number(rss) * 1024;
  return out;
}
