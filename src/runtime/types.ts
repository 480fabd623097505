import type { Readable } from "node:stream";
import type { Digest } from "../core/digest.js";
import type { Device } from "../core/manifest.generated.js";
import type { PreparedArtifact } from "../artifact/prepare.js";
import type { SnapshotCapture } from "../artifact/snapshot.js";

export type { PreparedArtifact, SnapshotCapture };

/**
 * InstanceState is where an instance is in its life (spec/runtimes/README.md):
 * created → starting → running ⇄ paused → stopping → exited | failed.
 */
export type InstanceState = "created" | "starting" | "running" | "paused" | "stopping" | "exited" | "failed";

/** TERMINAL_STATES are the states an instance never leaves. */
export const TERMINAL_STATES: ReadonlySet<InstanceState> = new Set(["exited", "failed"]);

/** Accel is how guest code runs: hardware (KVM) or QEMU's software emulation (TCG). */
export type Accel = "kvm" | "tcg";

/** Machine is the QEMU machine model: microvm (virtio-mmio, no PCI) or q35 (PCI, for ivshmem). */
export type Machine = "microvm" | "q35";

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
  /** containerMode only: replaces the image's cmd (arguments after its entrypoint). */
  args?: string[];
  /** containerMode only: NAME=VALUE entries that replace or add environment names. */
  env?: string[];
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
  /** containerMode: the exit status of the image's program, as OVMS-Init reported it (rfc §6.6). */
  programExitCode?: number;
  metrics: InstanceMetrics;
  /** The artifact's runtimeHints.coldStartTargetMs. */
  coldStartTargetMs?: number;
  devices: DeviceSummary[];
}

/** LogRecord is one line of an instance's serial console. */
export interface LogRecord {
  ts: string;
  stream: "serial";
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
   * snapshot pauses the instance, captures device state, memory and disk, calls `sink` with
   * them while the guest is still paused, then resumes it (or stops it with `stop`).
   */
  snapshot<R>(id: string, opts: { stop?: boolean }, sink: (c: SnapshotCapture) => Promise<R>): Promise<R>;
  /** inject writes bytes into an instance's ivshmem region; resolves with the count written. */
  inject(id: string, req: Injection): Promise<number>;
  status(id: string): Promise<Instance>;
  list(opts?: { all?: boolean }): Promise<Instance[]>;
  /** logs streams serial log records; with follow, until the instance ends or the stream is destroyed. */
  logs(id: string, opts?: { follow?: boolean; tail?: number }): Promise<Readable>;
  /** remove deletes an ended instance's folder (a running one only with force, after killing it). */
  remove(id: string, opts?: { force?: boolean }): Promise<void>;
  /** recover finds the instances of an earlier daemon again: re-attaches live ones, marks dead ones exited. */
  recover(): Promise<void>;
  /** close detaches from every instance without stopping them (daemon shutdown). */
  close(): Promise<void>;
}
