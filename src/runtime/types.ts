import type { Readable } from "node:stream";
import type { Digest } from "../core/digest.js";
import type { Device } from "../core/manifest.generated.js";
import type { PortRequest, Protocol, PublishedPort } from "../core/ports.js";
import type { PreparedArtifact } from "../artifact/prepare.js";
import type { SnapshotCapture } from "../artifact/snapshot.js";

export type { PreparedArtifact, SnapshotCapture, PortRequest, Protocol, PublishedPort };

/** SnapshotOptions are how a snapshot is taken. */
export interface SnapshotOptions {
  /** Stop the instance once captured instead of resuming it. */
  stop?: boolean;
  /**
   * How to take it from a running guest that is to resume (SnapshotReport): `background` (the
   * shortest pause, and memory as of the pause; the default where QEMU may use userfaultfd: rfc
   * §5.8, qemu/background.ts), `live` (the default elsewhere where QEMU's precopy is sound for the
   * guest: qemu/precopy.ts), `copy` (the default elsewhere), or `paused` (what snapshots did
   * before; benchmarks compare). A method the guest or host cannot have falls back to the next.
   */
  method?: "background" | "live" | "copy" | "paused";
  /** Called while the guest is paused, before anything is copied (what the snapshot holds is of this moment). */
  whilePaused?: () => Promise<void>;
  /** Filled in by the runtime: how the snapshot was taken and how long the guest was paused. */
  report?: SnapshotReport;
}

/**
 * SnapshotReport is how a snapshot was taken: `background` (paused, overlay copied, device state
 * saved, resumed by QEMU, which then wrote the guest's memory as of the pause while it ran), `live` (QEMU sent the guest's RAM while it ran
 * and stopped it for the last pages and the device state), `copy` (paused, device state saved,
 * memory copied), then in both the overlay copied, the guest resumed and the snapshot packed from
 * the copies; or `paused` (packed while paused: the instance was to stop, `method` asked for it,
 * or there was no room for the copies, which `fallback` says). `pauseMs` is from the guest's
 * stop to its resume as QEMU stamps them (to the end of the capture when it is stopped).
 */
export interface SnapshotReport {
  mode?: "background" | "live" | "copy" | "paused";
  pauseMs?: number;
  /** `background`: from the call to the stop (QEMU's page tables filled in while the guest ran). */
  prepareMs?: number;
  /** From the call to the end of the capture (all of it paused but with `live`), then the copies (paused). */
  captureMs?: number;
  copyMs?: number;
  /** From the call to the sink's end. */
  totalMs?: number;
  fallback?: string;
}

/**
 * InstanceState is where an instance is in its life (spec/runtimes/README.md):
 * created → starting → running ⇄ paused → stopping → exited | failed; a running instance
 * whose console stays silent while it boots is `stalled` (the boot watchdog) until it speaks
 * again or ends.
 */
export type InstanceState =
  "created" | "starting" | "running" | "stalled" | "paused" | "stopping" | "exited" | "failed";

/** TERMINAL_STATES are the states an instance never leaves. */
export const TERMINAL_STATES: ReadonlySet<InstanceState> = new Set(["exited", "failed"]);

/** Accel is how guest code runs: hardware (KVM) or QEMU's software emulation (TCG). */
export type Accel = "kvm" | "tcg";

/** Machine is the QEMU machine model: microvm (virtio-mmio, no PCI) or q35 (PCI, for ivshmem). */
export type Machine = "microvm" | "q35";

/**
 * NetworkMode is how an instance is connected (rfc §6.6): `none` has no NIC at all; `user`
 * has a virtio-net NIC on the runtime's user-mode network (QEMU SLIRP: no root, no bridge)
 * with outbound access; `restricted` is the same NIC without outbound access (published
 * ports still reach the guest).
 */
export type NetworkMode = "none" | "user" | "restricted";

/** InstanceNetwork is how an instance is connected: its mode, its NIC's MAC, its published ports. */
export interface InstanceNetwork {
  mode: NetworkMode;
  /** The NIC's MAC address (absent with mode none). */
  mac?: string;
  ports: PublishedPort[];
}

/** StartOptions are what the caller asks of one instance beyond what the manifest says. */
export interface StartOptions {
  name?: string;
  /** Guest memory in bytes. */
  memory?: number;
  cpus?: number;
  /** Appended to the manifest's kernel.args. */
  cmdline?: string;
  accel?: "auto" | Accel;
  machine?: Machine;
  /** Default: user when ports are published or the manifest declares `network`, else none. */
  network?: NetworkMode;
  /** Host ports to publish to guest ports. */
  ports?: PortRequest[];
  /** The NIC's MAC address; default a fresh one (a restore keeps the snapshot's). */
  mac?: string;
  /** How long the console of a booting guest may stay silent before it is `stalled` (0: not watched). */
  bootTimeoutMs?: number;
  /** containerMode only: replaces the image's cmd (arguments after its entrypoint). */
  args?: string[];
  /** containerMode only: NAME=VALUE entries that replace or add environment names. */
  env?: string[];
  /** containerMode cold boot only: the program's stdin comes from `stdin` calls (rfc §6.7), not /dev/null. */
  stdin?: boolean;
}

/** InstanceMetrics are measured facts about an instance. */
export interface InstanceMetrics {
  /** Since the VMM started (until it exited, for ended instances). */
  uptimeMs: number;
  /** From the start call to the guest's first console output. */
  bootMs?: number;
  /** From the start call to state `running`. */
  startMs?: number;
  memoryBytes: number;
  vcpus: number;
  cpuTimeMs?: number;
  rssBytes?: number;
}

/** DeviceSummary is a declared device of an instance. */
export type DeviceSummary = Pick<Device, "type" | "name" | "size">;

/**
 * Instance is what a runtime knows of one instance: its identity, where it is in its life,
 * what it runs and how it is doing. The daemon turns it into the API's InstanceInfo.
 */
export interface Instance {
  id: string;
  name: string;
  state: InstanceState;
  /** Why it failed or exited. */
  reason?: string;
  artifact: { reference: string; digest: Digest };
  accel: Accel;
  machine: Machine;
  /** The VMM process, while it lives. */
  pid?: number;
  createdAt: string;
  startedAt?: string;
  exitedAt?: string;
  /** The VMM's exit status, when it exited on its own with one. */
  exitCode?: number;
  /** containerMode: the exit status of the image's program, as OVMS-Init reported it (rfc §6.7). */
  programExitCode?: number;
  metrics: InstanceMetrics;
  /** The artifact's runtimeHints.coldStartTargetMs. */
  coldStartTargetMs?: number;
  devices: DeviceSummary[];
  network: InstanceNetwork;
  /** Kernel arguments the runtime added to the artifact's (e.g. the TSC rate a microvm guest needs under TCG). */
  kernelArgsAdded?: string[];
  /** The boot watchdog: where the boot is, the silence allowed, and the last console lines of a stall. */
  boot?: BootInfo;
  /** How the VMM is confined (RFC §8.4). */
  confinement?: ConfinementInfo;
}

/** BootInfo is what the boot watchdog knows of an instance. */
export interface BootInfo {
  phase: "booting" | "booted" | "stalled" | "unwatched";
  timeoutMs: number;
  /** The last console lines, while stalled. */
  consoleTail?: string[];
}

/** Namespace is a kind of Linux namespace a confined VMM gets of its own. */
export type Namespace = "mnt" | "pid" | "ipc" | "uts" | "cgroup" | "net";

/** ConfinementInfo says how an instance's VMM is confined: namespaces, user, seccomp and resource limits. */
export interface ConfinementInfo {
  mode: "namespaces" | "user" | "none";
  user?: string;
  namespaces?: Namespace[];
  /** Capabilities a confined VMM keeps (`sys_ptrace` for userfaultfd, `net_bind_service` for low ports). */
  capabilities?: string[];
  seccomp: string;
  limits: { enforced: boolean; via?: string; memoryMax?: number; cpuMax?: number; note?: string };
}

/** LogRecord is one line of an instance's serial console, or of a container's stderr (rfc §6.7). */
export interface LogRecord {
  ts: string;
  stream: "serial" | "stderr";
  line: string;
}

/** Injection is bytes to write into a shared-memory device of an instance. */
export interface Injection {
  /** Device name; default the first one. */
  device?: string;
  offset?: number;
  data: Buffer;
}

/** StopOptions say how hard to stop: the guest gets `timeoutMs` to power off, or none with force. */
export interface StopOptions {
  timeoutMs?: number;
  force?: boolean;
}

/**
 * KillAction is what a signal did to an instance: `signalled` (delivered to the guest's
 * program), or a stop of the VM begun (`stopping`) or done (`exited`).
 */
export type KillAction = "signalled" | "stopping" | "exited";

/**
 * WarmPool is the optional capability of a runtime to keep VMM processes ready for a
 * snapshot artifact, so that a restore skips starting one.
 */
export interface WarmPool {
  /** configure keeps `size` ready processes for a snapshot artifact (0 empties its pool). */
  configure(artifact: PreparedArtifact, size: number): Promise<void>;
  /** status says how many ready processes each pooled snapshot has, by manifest digest. */
  status(): { digest: string; size: number; ready: number }[];
}

/**
 * Runtime is the adapter contract of spec/runtimes/README.md. The QEMU adapter is the
 * reference implementation; another VMM plugs in by implementing this. Every method taking
 * an instance `id` takes what a client named: the id, the name, or an id prefix, resolved by
 * the runtime alone (resolveInstanceRef), NOT_FOUND when it names no one instance.
 */
export interface Runtime {
  /** name is the VMM family, as recorded in RAM snapshot metadata (e.g. `qemu`). */
  readonly name: string;
  /** pool is the warm-pool capability, for runtimes that have one. */
  readonly pool?: WarmPool;
  /** version is the VMM's version; RUNTIME_UNAVAILABLE when the VMM cannot run here. */
  version(): Promise<string>;
  /** start boots a prepared artifact and resolves once its process runs (state starting or running). */
  start(artifact: PreparedArtifact, opts: StartOptions): Promise<Instance>;
  /** stop asks the guest to power off, then forces it after `timeoutMs` (or at once with force). */
  stop(id: string, opts?: StopOptions): Promise<Instance>;
  /**
   * snapshot pauses the instance, captures device state, memory and disk, and calls `sink` with
   * them: with private copies after the guest resumed where the runtime can make them, else while
   * the guest is still paused; then it resumes it (or stops it with `stop`). `opts.report`, when
   * given, is filled with how long the guest was paused.
   */
  snapshot<R>(id: string, opts: SnapshotOptions, sink: (c: SnapshotCapture) => Promise<R>): Promise<R>;
  /**
   * kill sends a signal (a Linux signal number) to an instance: SIGKILL stops the VM at once;
   * other signals go to a container's program (OVMS-Init's control channel, rfc §6.7); an
   * instance without a program to signal takes SIGTERM as a graceful stop and refuses the rest
   * with NOT_IMPLEMENTED. CONFLICT when it has ended. Optional: without it, only stop.
   */
  kill?(id: string, signal: number): Promise<{ instance: Instance; action: KillAction }>;
  /**
   * stdin writes `data` to the stdin of a container's program started with `stdin`, and with
   * `close` then closes it (the program reads EOF); resolves with the count. CONFLICT when the
   * instance has ended or takes no stdin. Optional.
   */
  stdin?(id: string, data: Buffer, close: boolean): Promise<number>;
  /** inject writes bytes into an instance's ivshmem region; resolves with the count written. */
  inject(id: string, req: Injection): Promise<number>;
  status(id: string): Promise<Instance>;
  list(opts?: { all?: boolean }): Promise<Instance[]>;
  /** logs streams serial log records; with follow, until the instance ends or the stream is destroyed. */
  logs(id: string, opts?: { follow?: boolean; tail?: number }): Promise<Readable>;
  /**
   * consoleOutput streams the serial console as raw bytes for a terminal: the last `tailBytes`
   * (default 64 KiB), then, with `follow`, what the guest prints until the instance ends.
   * Optional: a runtime without it offers the line-based `logs` only.
   */
  consoleOutput?(id: string, opts?: { tailBytes?: number; follow?: boolean }): Promise<Readable>;
  /**
   * consoleInput types `data` into the serial console (the guest reads it as keyboard input on
   * its serial port); resolves with the count. CONFLICT when the instance is not running or has
   * no serial input. Optional, with consoleOutput.
   */
  consoleInput?(id: string, data: Buffer): Promise<number>;
  /** remove deletes an ended instance's folder (a running one only with force, after killing it). */
  remove(id: string, opts?: { force?: boolean }): Promise<void>;
  /** recover finds the instances of an earlier daemon again: re-attaches live ones, marks dead ones exited. */
  recover(): Promise<void>;
  /** close detaches from every instance without stopping them (daemon shutdown). */
  close(): Promise<void>;
}
