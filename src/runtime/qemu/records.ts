import { randomUUID } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { PreparedArtifact } from "../../artifact/prepare.js";
import { createOverlay } from "../../artifact/qemu-img.js";
import { resolveInstanceRef } from "../instance-ref.js";
import { transition } from "../lifecycle.js";
import { RuntimeError } from "../runtime-error.js";
import {
  TERMINAL_STATES,
  type Accel,
  type ConfinementInfo,
  type InstanceNetwork,
  type InstanceState,
  type Machine,
} from "../types.js";
import type { QemuConfig } from "./argv.js";
import type { Plan } from "./plan.js";
import { readProgramExit, writeLaunchInitrd } from "./container.js";
import { exitReason } from "./supervisor.js";

/** InstanceRecord is an instance's state.json: what survives a daemon restart. */
export interface InstanceRecord {
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
  /** containerMode: the program's exit status (OVMS-Init's report on the control port). */
  program_exit_code?: number;
  /** containerMode: the instance has OVMS-Init's control port (control.log in its folder). */
  container?: boolean;
  /** containerMode: the program's stdin comes through the control channel (started with `stdin`). */
  stdin?: boolean;
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
  /** The NIC and published ports; absent: no NIC. */
  network?: InstanceNetwork;
  /** The sandbox process (bwrap) around QEMU, when QEMU runs in namespaces; `pid` is QEMU's own. */
  launcher_pid?: number;
  /** Kernel arguments the runtime added to the artifact's (clock.ts). */
  kernel_args_added?: string[];
  /** The boot watchdog: its phase, the silence it allows (0: off) and, while stalled, the last console lines. */
  boot?: {
    phase: "booting" | "booted" | "stalled" | "unwatched";
    timeout_ms: number;
    console_tail?: string[];
  };
  confinement?: ConfinementInfo;
}

/** Recovery is what recovering a record needs from process supervision. */
export interface Recovery {
  /** isOurs tells whether the record's pid is still its QEMU (not a recycled pid). */
  isOurs(rec: InstanceRecord): boolean;
  /** kill ends a left-over process. */
  kill(rec: InstanceRecord): void;
  /** reattach watches a live QEMU again and reads its state; it saves the record. */
  reattach(rec: InstanceRecord): Promise<void>;
  /** release frees what an ended instance held outside its folders (its cgroup). */
  release(rec: InstanceRecord): Promise<void>;
}

/**
 * InstanceRecords holds every instance's record, one folder per instance under
 * `<stateDir>/instances/<id>`, and keeps its state.json current: written atomically on every
 * transition, read back by `recover` after a daemon restart.
 */
export class InstanceRecords {
  private readonly byId = new Map<string, InstanceRecord>();

  constructor(readonly stateDir: string) {}

  /** dir is the folder of instance `id`. */
  dir(id: string): string {
    return join(this.stateDir, "instances", id);
  }

  get(id: string): InstanceRecord | undefined {
    return this.byId.get(id);
  }

  add(rec: InstanceRecord): void {
    this.byId.set(rec.instance_id, rec);
  }

  /** all is every record, warm-pool processes included. */
  all(): IterableIterator<InstanceRecord> {
    return this.byId.values();
  }

  /** named is the record called `name`, if any (a warm-pool process's name is taken too). */
  named(name: string): InstanceRecord | undefined {
    for (const r of this.byId.values()) if (r.name === name) return r;
    return undefined;
  }

  /**
   * find resolves what a client named (resolveInstanceRef: id, name, id prefix). Warm-pool
   * processes are found by their exact id only: they are not instances yet.
   */
  find(ref: string): InstanceRecord {
    return (
      this.byId.get(ref) ??
      resolveInstanceRef(
        ref,
        [...this.byId.values()].filter((r) => !r.pool).map((r) => ({ id: r.instance_id, name: r.name, r })),
      ).r
    );
  }

  /**
   * createFiles makes an instance's folders (`cfg`'s state folder, the daemon's own, and
   * `shmDir` on tmpfs), its overlay on the artifact's top disk layer and an empty serial log,
   * and lets the QEMU user have what it writes (`grant`, given the container files made here); when that fails, the folders are
   * removed again.
   */
  async createFiles(
    a: PreparedArtifact,
    cfg: QemuConfig,
    shmDir: string,
    grant: (paths: string[]) => Promise<void>,
    launch?: string,
  ): Promise<void> {
    const dir = this.dir(cfg.id);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await mkdir(shmDir, { recursive: true, mode: 0o700 });
    try {
      if (cfg.disk) {
        const top = a.disks[a.disks.length - 1];
        await createOverlay(cfg.disk, top.path, top.format);
      }
      await writeFile(cfg.serialLog, "");
      const extra: string[] = [];
      for (const f of [cfg.controlLog, cfg.stderrLog]) {
        if (!f) continue;
        await writeFile(f, "");
        extra.push(f);
      }
      if (launch && cfg.initrd && a.initrdPath && cfg.initrd !== a.initrdPath) {
        await writeLaunchInitrd(a.initrdPath, cfg.initrd, launch);
        extra.push(cfg.initrd);
      }
      await grant(extra);
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      await rm(shmDir, { recursive: true, force: true });
      throw e;
    }
  }

  /** save writes state.json atomically (temp + rename) on every transition. */
  async save(rec: InstanceRecord): Promise<void> {
    const dir = this.dir(rec.instance_id);
    const tmp = join(dir, `.state.json.${process.pid}.${randomUUID().slice(0, 8)}`);
    await writeFile(tmp, JSON.stringify(rec, null, 2) + "\n");
    await rename(tmp, join(dir, "state.json"));
  }

  /** load reads an instance's state.json; undefined when there is none to read. */
  async load(id: string): Promise<InstanceRecord | undefined> {
    try {
      return JSON.parse(await readFile(join(this.dir(id), "state.json"), "utf8")) as InstanceRecord;
    } catch {
      return undefined;
    }
  }

  /**
   * recordExit records how QEMU ended: a clean guest poweroff or an asked-for stop is
   * `exited`, anything else `failed` with the end of QEMU's own log as the reason.
   */
  async recordExit(rec: InstanceRecord, code: number | null, signal: NodeJS.Signals | null, asked: boolean) {
    if (TERMINAL_STATES.has(rec.state)) return;
    // A stall report describes a live guest; once it has ended, the stall is only context.
    const stall = rec.state === "stalled" || rec.boot?.phase === "stalled" ? rec.reason : undefined;
    if (stall) delete rec.reason;
    rec.exited_at = new Date().toISOString();
    if (code !== null) rec.exit_code = code;
    const program = rec.container
      ? await readProgramExit(join(this.dir(rec.instance_id), "control.log"))
      : undefined;
    if (program?.status !== undefined) rec.program_exit_code = program.status;
    if (program && program.status === undefined && code === 0 && !asked) {
      // The guest powered off, but OVMS-Init never said how the program ended (a kernel panic,
      // a broken image): not a success.
      transition(rec, "failed");
      rec.reason = `the guest ended without reporting the program's exit status${program.tail ? `; its console said: ${program.tail}` : ""}`;
    } else if (code === 0 || asked) {
      transition(rec, "exited");
      if (program?.status !== undefined && !asked)
        rec.reason = `the program exited with status ${program.status}`;
    } else {
      transition(rec, "failed");
      rec.reason = exitReason(code, signal);
      const log = await readFile(join(this.dir(rec.instance_id), "qemu.log"), "utf8").catch(() => "");
      if (log.trim()) rec.reason += `: ${log.trim().split("\n").slice(-2).join(" ")}`;
    }
    if (asked && !rec.reason) rec.reason = "stopped";
    if (stall) rec.reason = `${rec.reason ?? "ended"} (${stall})`;
    delete rec.pid;
    delete rec.launcher_pid;
    await this.save(rec).catch(() => undefined);
  }

  /**
   * recordStartFailure records why an instance did not start, once its QEMU is gone: QEMU's
   * last log lines, or the error. Its exit has normally been recorded (`failed`) already, and
   * an instance never leaves `exited` either.
   */
  async recordStartFailure(rec: InstanceRecord, e: unknown): Promise<void> {
    const log = await readFile(join(this.dir(rec.instance_id), "qemu.log"), "utf8").catch(() => "");
    if (!TERMINAL_STATES.has(rec.state)) transition(rec, "failed");
    rec.reason = `QEMU did not start: ${log.trim().split("\n").slice(-3).join(" ") || (e as Error).message}`;
    if (e instanceof RuntimeError && e.code === "RESTORE_FAILED")
      rec.reason = `restore failed: ${e.message}; ${log.trim().split("\n").slice(-2).join(" ")}`;
    await this.save(rec);
  }

  /**
   * recordEvent follows the pauses and resumes QEMU reports (QMP STOP, RESUME) of an instance
   * that runs; a stopping or ended one is left alone.
   */
  async recordEvent(rec: InstanceRecord, event: string): Promise<void> {
    if (TERMINAL_STATES.has(rec.state) || rec.state === "stopping") return;
    if (event === "STOP" && (rec.state === "running" || rec.state === "stalled")) transition(rec, "paused");
    else if (event === "RESUME" && rec.state === "paused") transition(rec, "running");
    else return;
    await this.save(rec).catch(() => undefined);
  }

  /** remove forgets an instance and deletes its folder and its memory files. */
  async remove(rec: InstanceRecord): Promise<void> {
    this.byId.delete(rec.instance_id);
    await rm(this.dir(rec.instance_id), { recursive: true, force: true });
    await rm(rec.shm_dir, { recursive: true, force: true });
  }

  /**
   * recover loads the records of an earlier daemon: terminal ones as they are, live ones
   * re-attached when their QEMU still runs, else marked exited. Warm-pool processes belong to
   * the daemon that made them: they are killed and removed.
   */
  async recover(how: Recovery): Promise<void> {
    const ids = await readdir(join(this.stateDir, "instances")).catch(() => [] as string[]);
    for (const id of ids) {
      const rec = await this.load(id);
      if (!rec) continue; // a folder without a readable state.json was never started
      if (rec.pool) {
        if (rec.pid && how.isOurs(rec)) how.kill(rec);
        await rm(this.dir(id), { recursive: true, force: true });
        await rm(rec.shm_dir, { recursive: true, force: true });
        await how.release(rec);
        continue;
      }
      this.byId.set(id, rec);
      if (TERMINAL_STATES.has(rec.state)) continue;
      if (rec.pid && how.isOurs(rec)) {
        await how.reattach(rec);
        continue;
      }
      transition(rec, "exited");
      rec.reason = "the QEMU process ended while ovmd was not running";
      rec.exited_at ??= new Date().toISOString();
      delete rec.pid;
      await this.save(rec);
      await rm(rec.shm_dir, { recursive: true, force: true });
      await how.release(rec);
    }
  }
}

/**
 * newRecord is the record of an instance about to be launched (state `created`): what it runs,
 * its shape, and the files and command line a restarted daemon needs to find it again.
 */
export function newRecord(
  a: PreparedArtifact,
  plan: Plan,
  cfg: QemuConfig,
  at: { shmDir: string; argv: string[]; pool: boolean; kernelArgsAdded?: string[]; bootTimeoutMs?: number },
): InstanceRecord {
  const rec: InstanceRecord = {
    instance_id: cfg.id,
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
    shm_dir: at.shmDir,
    argv: at.argv,
  };
  if (a.ramSnapshot) rec.restored_from = a.ramSnapshot.digest;
  if (cfg.controlLog) rec.container = true;
  if (plan.stdin) rec.stdin = true;
  if (at.pool) rec.pool = true;
  if (cfg.network)
    rec.network = { mode: cfg.network.mode, mac: cfg.network.mac, ports: cfg.network.forwards };
  if (at.kernelArgsAdded?.length) rec.kernel_args_added = at.kernelArgsAdded;
  // A restored kernel booted long ago: the watchdog only watches cold boots.
  const timeout = a.ramSnapshot ? 0 : (at.bootTimeoutMs ?? 0);
  rec.boot = { phase: timeout > 0 ? "booting" : "unwatched", timeout_ms: timeout };
  if (a.manifest.runtimeHints?.coldStartTargetMs !== undefined)
    rec.cold_start_target_ms = a.manifest.runtimeHints.coldStartTargetMs;
  return rec;
}
