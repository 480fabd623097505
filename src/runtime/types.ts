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

/** StartOptions are the user's overrides of what the manifest says. */
export interface StartOptions {
  name?: string;
  /** Guest memory in bytes. */
  memory?: number;
  cpus?: number;
  /** Appended to the manifest's kernel.args. */
  cmdline?: string;
  accel?: "auto" | Accel;
  machine?: Machine;
}

/** InstanceMetrics are measured facts about an instance (names as in the OpenAPI document). */
export interface InstanceMetrics {
  uptime_ms: number;
  boot_ms?: number;
  start_ms?: number;
  memory_bytes: number;
  vcpus: number;
  cpu_time_ms?: number;
  rss_bytes?: number;
}

/** InstanceInfo is what `GET /status/{id}` returns. */
export interface InstanceInfo {
  instance_id: string;
  name: string;
  state: InstanceState;
  reason?: string;
  artifact: { reference: string; digest: Digest };
  runtime: string;
  accel: Accel;
  machine: Machine;
  pid?: number;
  created_at: string;
  started_at?: string;
  exited_at?: string;
  exit_code?: number;
  metrics: InstanceMetrics;
  cold_start_target_ms?: number;
  met_target?: boolean;
  devices: Pick<Device, "type" | "name" | "size">[];
}

/** LogRecord is one line of an instance's serial console. */
export interface LogRecord {
  ts: string;
  stream: "serial";
  line: string;
}

/** InjectRequest writes bytes into a shared-memory device of an instance. */
export interface InjectRequest {
  device?: string;
  offset?: number;
  data: Buffer;
}

/**
 * Runtime is the adapter contract of spec/runtimes/README.md. The QEMU adapter is the
 * reference implementation; another VMM plugs in by implementing this.
 */
export interface Runtime {
  readonly name: string;
  /** start boots a prepared artifact and resolves once its process runs (state starting or running). */
  start(artifact: PreparedArtifact, opts: StartOptions): Promise<InstanceInfo>;
  /** stop asks the guest to power off, then forces it after `timeoutMs` (or at once with force). */
  stop(id: string, opts?: { timeoutMs?: number; force?: boolean }): Promise<InstanceInfo>;
  /**
   * snapshot pauses the instance, captures device state, memory and disk, calls `sink` with
   * them while the guest is still paused, then resumes it (or stops it with `stop`).
   */
  snapshot<R>(id: string, opts: { stop?: boolean }, sink: (c: SnapshotCapture) => Promise<R>): Promise<R>;
  /** inject writes bytes into an instance's ivshmem region; resolves with the count written. */
  inject(id: string, req: InjectRequest): Promise<number>;
  status(id: string): Promise<InstanceInfo>;
  list(opts?: { all?: boolean }): Promise<InstanceInfo[]>;
  /** logs streams serial log records; with follow, until the instance ends or the stream is destroyed. */
  logs(id: string, opts?: { follow?: boolean; tail?: number }): Promise<Readable>;
  /** remove deletes an ended instance's folder (a running one only with force, after killing it). */
  remove(id: string, opts?: { force?: boolean }): Promise<void>;
  /** recover finds the instances of an earlier daemon again: re-attaches live ones, marks dead ones exited. */
  recover(): Promise<void>;
  /** close detaches from every instance without stopping them (daemon shutdown). */
  close(): Promise<void>;
}
