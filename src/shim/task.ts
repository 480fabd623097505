import { open, type FileHandle } from "node:fs/promises";
import { constants } from "node:fs";
import { join } from "node:path";
import type { InstanceInfo } from "../api/types.generated.js";
import { DaemonError, isDaemonUnavailable, type OvmdClient } from "../client/client.js";
import {
  ARTIFACT_ANNOTATION,
  CRI_CONTAINER_TYPE,
  readBundle,
  removeLayout,
  rootfsDir,
  saveRecord,
  unmountAll,
  type Mount,
  type ShimRecord,
} from "./bundle.js";
import type { Publisher } from "./publisher.js";
import { TaskStatus, timestamp } from "./protos.js";
import { Code, RpcError } from "./ttrpc-server.js";
import { StdinPump } from "./stdin-pump.js";

/** TaskIo are the FIFOs containerd made for a task (empty when it wants none). */
export interface TaskIo {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

/** TaskDeps are what a task talks to: ovmd, containerd's event sink, the shim's log. */
export interface TaskDeps {
  client: OvmdClient;
  publisher: Publisher;
  log: (line: string) => void;
}

/** ENDED are the instance states after which a VM runs no more. */
const ENDED = new Set(["exited", "failed"]);

/** LOST_DAEMON_MS is how long the daemon may stay unreachable before a running task is reported ended. */
const LOST_DAEMON_MS = 30_000;

/**
 * OvmsTask is one container run as an OVMS instance: Create makes (or names) the artifact,
 * Start starts it through ovmd, the program's console goes to the stdout FIFO, and its exit
 * status (OVMS-Init's `program_exit_code`) ends the task. The sandbox (pause) container of a
 * CRI pod gets no VM: it only holds the pod's place, while each of the pod's containers is
 * its own VM (docs/kubernetes.md says why).
 */
export class OvmsTask {
  status: number = TaskStatus.CREATED;
  pid = 0;
  exitStatus = 0;
  exitedAt?: Date;
  instanceId?: string;
  private readonly exited: Promise<void>;
  private markExited!: () => void;
  private killedWith?: number;
  private deleted = false;
  private record: ShimRecord = { mounted: [] };
  private stdin?: StdinPump;

  private constructor(
    readonly id: string,
    readonly bundle: string,
    readonly io: TaskIo,
    private readonly deps: TaskDeps,
    /** What ovmd starts: the path of the layout Create made, or the annotation's reference; none for a sandbox. */
    private readonly manifest: string | undefined,
    private readonly memory: number | undefined,
  ) {
    this.exited = new Promise((r) => (this.markExited = r));
  }

  /** create reads the bundle and makes the artifact the container runs as. */
  static async create(
    req: { id: string; bundle: string; rootfs: Mount[] } & TaskIo,
    deps: TaskDeps,
  ): Promise<OvmsTask> {
    const spec = await readBundle(req.bundle);
    const io = { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
    if (spec.annotations[CRI_CONTAINER_TYPE] === "sandbox") {
      deps.log(`task ${req.id}: a pod sandbox, held without a VM`);
      return new OvmsTask(req.id, req.bundle, io, deps, undefined, undefined);
    }
    const named = spec.annotations[ARTIFACT_ANNOTATION];
    if (named) {
      deps.log(`task ${req.id}: runs the artifact ${named} (${ARTIFACT_ANNOTATION})`);
      // The artifact (a RAM snapshot above all) decides its own memory: a restore takes no override.
      return new OvmsTask(req.id, req.bundle, io, deps, named, undefined);
    }
    const { dir, mounted } = await rootfsDir(spec.rootPath, req.rootfs);
    const task = new OvmsTask(req.id, req.bundle, io, deps, join(req.bundle, "ovms-layout"), spec.memory);
    task.record = { mounted, layout: task.manifest };
    await saveRecord(req.bundle, task.record);
    const t0 = performance.now();
    // Loaded on first use: a shim must answer containerd quickly, and a snapshot task never needs them.
    const { Store } = await import("../store/store.js");
    const { convertRootfs } = await import("../artifact/convert/convert-rootfs.js");
    const store = await Store.open(task.manifest!);
    const made = await convertRootfs(store, dir, spec.bootstrap, {
      name: "containerd-task",
      version: "latest",
      reference: "containerd-task:latest",
      description: `containerd task ${req.id} (bundle ${req.bundle})`,
      ...(spec.memory ? { memory: spec.memory } : {}),
    });
    deps.log(
      `task ${req.id}: rootfs ${dir} became ${made.descriptor.digest} (${made.diskBytes >> 20} MiB ext4) in ${Math.round(performance.now() - t0)} ms`,
    );
    return task;
  }

  /** start starts the VM (or the sandbox placeholder) and returns its pid. */
  async start(): Promise<number> {
    if (this.status !== TaskStatus.CREATED)
      throw new RpcError(Code.FAILED_PRECONDITION, `task ${this.id} is not in the created state`);
    if (!this.manifest) {
      this.pid = process.pid;
      this.status = TaskStatus.RUNNING;
      return this.pid;
    }
    const t0 = performance.now();
    const overrides = {
      ...(this.memory ? { memory: this.memory } : {}),
      // A rootfs container is cold-booted: its program can read the stdin FIFO containerd gave.
      ...(this.pumpsStdin ? { stdin: true } : {}),
    };
    const res = await this.deps.client.start({
      manifest: this.manifest,
      ...(Object.keys(overrides).length ? { overrides } : {}),
    });
    const tStarted = performance.now();
    this.instanceId = res.instance_id;
    this.record.instanceId = res.instance_id;
    await saveRecord(this.bundle, this.record);
    const info = await this.untilPid();
    this.pid = info.pid ?? 0;
    this.status = TaskStatus.RUNNING;
    this.deps.log(
      `task ${this.id}: instance ${res.instance_id} (${res.name}), VMM pid ${this.pid}, in ${Math.round(performance.now() - t0)} ms (${Math.round(tStarted - t0)} ms to POST /start)`,
    );
    void this.follow();
    if (this.pumpsStdin) {
      this.stdin = new StdinPump(
        this.io.stdin,
        (data, close) =>
          this.deps.client.stdin({ instance_id: this.instanceId!, data: data.toString("base64"), close }),
        (message) => {
          if (this.status === TaskStatus.RUNNING) this.deps.log(`task ${this.id}: stdin: ${message}`);
        },
      );
      void this.stdin.run();
    }
    return this.pid;
  }

  /** untilPid waits for the VMM process to exist (or for the instance to have ended already). */
  private async untilPid(): Promise<InstanceInfo> {
    const deadline = Date.now() + 120_000;
    for (;;) {
      const info = await this.deps.client.status(this.instanceId!);
      if (info.pid || ENDED.has(info.state) || Date.now() > deadline) return info;
      await sleep(20);
    }
  }

  /**
   * follow copies the instance's console (the program's stdout) to the stdout FIFO and its
   * `stderr` records to the stderr FIFO until the instance ends, then reports the exit. A
   * daemon that goes away is waited for; one that stays away ends the task with 255, and the
   * VM it ran is not the shim's to keep.
   */
  private async follow(): Promise<void> {
    // Every FIFO containerd gave is opened and closed at the end: its reader waits for that EOF.
    const out = await openFifo(this.io.stdout);
    const err = await openFifo(this.io.stderr);
    // The stdin FIFO is the pump's when it runs; held here otherwise, for a writer that waits on it.
    const others = this.pumpsStdin ? [] : [await openFifo(this.io.stdin)];
    try {
      // Lines already copied, per stream: a new daemon's stream starts again from the first
      // line of each (the two streams interleave differently; each keeps its own order).
      const since = { serial: 0, stderr: 0 };
      for (;;) {
        try {
          const records = await this.deps.client.logs(this.instanceId!, { follow: true });
          const seen = { serial: 0, stderr: 0 };
          for await (const r of records) {
            const stream = r.stream === "stderr" ? "stderr" : "serial";
            if (seen[stream]++ < since[stream]) continue;
            since[stream]++;
            await (stream === "stderr" ? err : out)?.write(r.line + "\n").catch(() => undefined);
          }
          // The stream ended: the instance did, or the daemon went away (a restart) and the
          // next status call says which.
          if (ENDED.has((await this.deps.client.status(this.instanceId!)).state)) break;
          await sleep(200);
        } catch (e) {
          if (e instanceof DaemonError && e.code === "NOT_FOUND") break;
          if (!(await this.daemonComesBack(e))) break;
        }
      }
    } finally {
      for (const f of [out, err, ...others]) await f?.close().catch(() => undefined);
    }
    await this.reportExit();
  }

  /**
   * pumpsStdin: containerd gave a stdin FIFO and the container boots its own rootfs (a
   * snapshot's program is already running, with the stdin it had).
   */
  private get pumpsStdin(): boolean {
    return !!this.io.stdin && !!this.record.layout;
  }

  /** closeStdin is CloseIO with stdin (StdinPump.close). */
  async closeStdin(): Promise<void> {
    await this.stdin?.close();
  }

  /** daemonComesBack waits up to LOST_DAEMON_MS for ovmd to answer again. */
  private async daemonComesBack(e: unknown): Promise<boolean> {
    this.deps.log(`task ${this.id}: lost ovmd (${(e as Error).message}); waiting for it`);
    const deadline = Date.now() + LOST_DAEMON_MS;
    while (Date.now() < deadline) {
      await sleep(500);
      try {
        await this.deps.client.version();
        return true;
      } catch (err) {
        if (!isDaemonUnavailable(err)) return true;
      }
    }
    return false;
  }

  /** reportExit reads the program's exit status from ovmd, marks the task stopped and publishes TaskExit. */
  private async reportExit(): Promise<void> {
    let info: InstanceInfo | undefined;
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      info = await this.deps.client.status(this.instanceId!).catch(() => undefined);
      if (!info || ENDED.has(info.state)) break;
      await sleep(100);
    }
    let code = info?.program_exit_code;
    if (code === undefined) code = this.killedWith ? 128 + this.killedWith : 255;
    if (code === 255 || !info)
      this.deps.log(
        `task ${this.id}: instance ${this.instanceId} ended without an exit status: ${info?.reason ?? "ovmd lost it"}`,
      );
    await this.exit(code);
  }

  private async exit(code: number): Promise<void> {
    if (this.status === TaskStatus.STOPPED) return;
    this.exitStatus = code;
    this.exitedAt = new Date();
    this.status = TaskStatus.STOPPED;
    this.markExited();
    await this.stdin?.stop();
    this.deps.publisher.publish("/tasks/exit", "containerd.events.TaskExit", {
      container_id: this.id,
      id: this.id,
      pid: this.pid,
      exit_status: code,
      exited_at: timestamp(this.exitedAt),
    });
  }

  /**
   * kill sends the signal through ovmd (POST /kill): SIGKILL quits the VM at once; any other
   * signal reaches the program in the guest (OVMS-Init), which may catch it. A VM that is not
   * a container (an ovms.artifact naming a plain VM) takes SIGTERM as a graceful stop and
   * refuses the rest; the refusal goes back to containerd.
   */
  async kill(signal: number): Promise<void> {
    if (this.status === TaskStatus.STOPPED)
      throw new RpcError(Code.NOT_FOUND, `task ${this.id}: process already finished`);
    if (!this.instanceId) {
      // Not started yet, or a sandbox: nothing runs, so the signal ends it at once.
      this.killedWith ??= signal;
      await this.exit(128 + signal);
      return;
    }
    try {
      await this.deps.client.kill({ instance_id: this.instanceId, signal });
    } catch (e) {
      if (e instanceof DaemonError && e.code === "NOT_IMPLEMENTED")
        throw new RpcError(Code.UNIMPLEMENTED, `task ${this.id}: ${e.message}`);
      // Ended meanwhile: containerd's kill of a finished process is answered as runc's shim does.
      if (e instanceof DaemonError && e.code === "CONFLICT")
        throw new RpcError(Code.NOT_FOUND, `task ${this.id}: process already finished`);
      throw e;
    }
    // Only a signal that was delivered can explain an end without a reported status.
    this.killedWith ??= signal;
  }

  /** wait resolves when the task has exited. */
  async wait(): Promise<{ exit_status: number; exited_at: ReturnType<typeof timestamp> }> {
    await this.exited;
    return { exit_status: this.exitStatus, exited_at: timestamp(this.exitedAt) };
  }

  /** delete removes the instance, unmounts the rootfs and removes the artifact Create made. */
  async delete(): Promise<{ pid: number; exit_status: number; exited_at: ReturnType<typeof timestamp> }> {
    if (this.status === TaskStatus.RUNNING)
      throw new RpcError(Code.FAILED_PRECONDITION, `task ${this.id} is running: kill it first`);
    if (!this.deleted) {
      this.deleted = true;
      if (this.status === TaskStatus.CREATED) await this.exit(0);
      if (this.instanceId)
        await this.deps.client.remove(this.instanceId, { force: true }).catch((e) => {
          if (!(e instanceof DaemonError && e.code === "NOT_FOUND")) throw e;
        });
      await unmountAll(this.record.mounted);
      await removeLayout(this.record.layout);
      // Nothing is left for `containerd-shim-ovms-v2 delete` to clean up.
      this.record = { mounted: [] };
      await saveRecord(this.bundle, this.record).catch(() => undefined);
      this.deps.publisher.publish("/tasks/delete", "containerd.events.TaskDelete", {
        container_id: this.id,
        id: this.id,
        pid: this.pid,
        exit_status: this.exitStatus,
        exited_at: timestamp(this.exitedAt),
      });
    }
    return { pid: this.pid, exit_status: this.exitStatus, exited_at: timestamp(this.exitedAt) };
  }

  /** state is the task as containerd's State call reports it. */
  state(): Record<string, unknown> {
    return {
      id: this.id,
      bundle: this.bundle,
      pid: this.pid,
      status: this.status,
      stdin: this.io.stdin,
      stdout: this.io.stdout,
      stderr: this.io.stderr,
      terminal: this.io.terminal,
      exit_status: this.exitStatus,
      exited_at: timestamp(this.exitedAt),
    };
  }

  /** live tells whether the task still runs something. */
  get live(): boolean {
    return this.status === TaskStatus.RUNNING;
  }
}

/** openFifo opens one of containerd's FIFOs for writing without blocking (O_RDWR never waits for a reader). */
async function openFifo(path: string): Promise<FileHandle | undefined> {
  if (!path) return undefined;
  return open(path, constants.O_RDWR).catch(() => undefined);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
