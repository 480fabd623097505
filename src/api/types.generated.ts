/* Generated from spec/api/ovms-runtime.openapi.yaml (components.schemas) by scripts/gen-types.mjs. Do not edit. */

/**
 * A sha256 content digest.
 */
export type Digest = string;
/**
 * Human name of an instance, unique among the runtime's instances.
 */
export type InstanceName = string;
/**
 * An instance's id (UUID) or its name.
 */
export type InstanceRef = string;
/**
 * RFC 3339 time, UTC.
 */
export type Timestamp = string;
/**
 * How guest code runs. `kvm` is hardware virtualization, `tcg` is QEMU's software emulation.
 */
export type Accel = "kvm" | "tcg";
/**
 * Machine model. `microvm` has no PCI (virtio-mmio devices only); `q35` has PCI and is needed for ivshmem.
 */
export type Machine = "microvm" | "q35";
/**
 * How an instance is connected (rfc §6.6). `none`: no network interface at all. `user`:
 * a virtio-net NIC on the runtime's user-mode network (a private network per instance,
 * no root or bridge needed; the guest gets its address by DHCP) with outbound access
 * through the host. `restricted`: the same NIC without outbound access; published ports
 * still reach the guest.
 *
 */
export type NetworkMode = "none" | "user" | "restricted";
/**
 * Transport protocol of a published port.
 */
export type Protocol = "tcp" | "udp";
/**
 * An IPv4 address of the host, dotted quad (`127.0.0.1`, `0.0.0.0` for every interface).
 *
 * This interface was referenced by `RuntimeApi`'s JSON-Schema
 * via the `definition` "IPv4Address".
 */
export type IPv4Address = string;
export type Port = number;
/**
 * A unicast MAC address, six colon-separated hex pairs.
 */
export type MacAddress = string;
/**
 * A boolean query parameter.
 */
export type QueryFlag = "1" | "0" | "true" | "false";
/**
 * Stable machine-readable error code (see the table in info.description for HTTP statuses).
 */
export type ApiErrorCode =
  | "BAD_REQUEST"
  | "INVALID_REFERENCE"
  | "UNAUTHORIZED"
  | "POLICY_DENIED"
  | "NOT_FOUND"
  | "METHOD_NOT_ALLOWED"
  | "ARTIFACT_NOT_FOUND"
  | "CONFLICT"
  | "MANIFEST_INVALID"
  | "INTERNAL"
  | "NOT_IMPLEMENTED"
  | "INSUFFICIENT_RESOURCES"
  | "RUNTIME_UNAVAILABLE";
/**
 * Where an instance is in its life:
 * created → starting → running ⇄ paused → stopping → exited | failed.
 * `stalled` is a running instance whose console stayed silent for the boot timeout while
 * it booted (the boot watchdog, RFC §6.5): `reason` and `boot.console_tail` say what it
 * printed last and what probably holds it; console output brings it back to `running`.
 * `exited` and `failed` are terminal; `reason` says why.
 *
 */
export type InstanceState =
  "created" | "starting" | "running" | "stalled" | "paused" | "stopping" | "exited" | "failed";

/**
 * A host port to publish to a guest port.
 */
export interface PortRequest {
  guest_port: Port;
  host_port?: Port;
  host_ip?: IPv4Address;
  protocol?: Protocol;
}
/**
 * A published port as the runtime set it up.
 */
export interface PortMapping {
  protocol: Protocol;
  host_ip: IPv4Address;
  host_port: Port;
  guest_port: Port;
}
/**
 * How the instance is connected.
 */
export interface NetworkInfo {
  mode: NetworkMode;
  mac?: MacAddress;
  /**
   * The published ports, as bound, while the instance holds them (empty once it has ended).
   */
  ports: PortMapping[];
}
/**
 * One reason a document was refused.
 */
export interface Problem {
  /**
   * JSON Pointer of the offending member (`""` for the document itself).
   */
  path: string;
  message: string;
}
/**
 * The one error body of the API.
 */
export interface ErrorBody {
  error: {
    code: ApiErrorCode;
    /**
     * Human-readable, leads with context. Not for programs to parse.
     */
    message: string;
    /**
     * Facts that help a program act on the error. Open to additional members; `problems` has a fixed shape.
     */
    details?: {
      problems?: Problem[];
      /**
       * The instance concerned, when one was created before the failure.
       */
      instance_id?: string;
      [k: string]: unknown;
    };
  };
}
export interface VersionInfo {
  /**
   * Name of the runtime program.
   */
  name: string;
  /**
   * Version of the runtime program.
   */
  version: string;
  /**
   * Version of this API the runtime implements.
   */
  api: "v0.1";
  /**
   * The local store the runtime serves (its canonical absolute path), for runtimes that have one. Clients compare it with the store they use and refuse to mix two stores (rfc §6.1).
   */
  store?: string;
  /**
   * The VMM behind the runtime.
   */
  runtime: {
    /**
     * VMM family, as recorded in RAM snapshot metadata.
     */
    name: string;
    /**
     * VMM version string.
     */
    version: string;
  };
}
/**
 * Values that replace what the manifest says, for this instance only.
 */
export interface StartOverrides {
  /**
   * Guest memory in bytes (at least 16 MiB).
   */
  memory?: number;
  /**
   * Number of vCPUs.
   */
  cpus?: number;
  /**
   * Appended to the manifest's `kernel.args`. Refused for a RAM snapshot restore.
   */
  cmdline?: string;
  /**
   * `auto` uses KVM only where a probe shows it really runs a guest, otherwise TCG.
   */
  accel?: "auto" | "kvm" | "tcg";
  name?: InstanceName;
  machine?: Machine;
  network?: NetworkMode;
  /**
   * Host ports to publish to guest ports (needs a network other than `none`).
   *
   * @maxItems 64
   */
  ports?: PortRequest[];
  /**
   * Also publish every port the artifact declares (its manifest's `network.exposedPorts` and, for a converted container image, its bootstrap config's `exposedPorts`) on a free host port of 127.0.0.1, as `docker run -P` does; a guest port that `ports` already publishes keeps that mapping. An artifact that declares none publishes nothing more. Same rules as `ports` otherwise.
   */
  publish_all?: boolean;
  mac?: MacAddress;
  /**
   * The boot watchdog (RFC §6.5): how long the console of a booting guest may stay silent before the instance is `stalled`; 0 turns the watchdog off for this instance (for a guest that is silent on purpose while it boots). Default chosen by the runtime (ovmd: `--boot-timeout`, 60 s). Not used for a restore.
   */
  boot_timeout_ms?: number;
  /**
   * The runtime adapter to run the instance with (`qemu` for the reference runtime). A runtime that is not this one is refused with `501 NOT_IMPLEMENTED`. Without it, the artifact's `runtimeHints.preferredRuntime` is honoured: when it names runtimes and none of them (nor `generic`) is this one, the start is refused the same way.
   */
  runtime?: string;
  /**
   * containerMode artifacts only (rfc §6.7): the command, replacing the image's cmd (it follows the image's entrypoint, as with `docker run IMAGE ARGS`). Refused for other artifacts and for a RAM snapshot restore.
   *
   * @maxItems 1024
   */
  args?: string[];
  /**
   * containerMode artifacts only (rfc §6.7): `NAME=VALUE` entries that replace or add names in the image's environment.
   *
   * @maxItems 1024
   */
  env?: string[];
  /**
   * containerMode cold boots only (rfc §6.7): `true` gives the program a stdin fed by `POST /stdin` (closed by `close`), instead of `/dev/null`. Refused for other artifacts and for restores.
   */
  stdin?: boolean;
}
export interface StartRequest {
  /**
   * What to start: a store reference, a registry reference (pulled when missing), a path to a manifest.json or to an OCI layout directory, or a path to a .tar of an OCI layout.
   */
  manifest: string;
  overrides?: StartOverrides;
  /**
   * The instance lives only as long as its client is attached (rfc §6.3): until the answer, this request's own connection holds it; after the answer, a `GET /logs/{instance_id}?follow=1&attach=1` must take over within 30 s. When the connection that holds it closes while the instance lives (the client was interrupted, killed, or its terminal closed), the runtime stops the instance, as `POST /stop` would. Without `attach` the instance outlives its client (`ovm run -d`).
   */
  attach?: boolean;
  /**
   * Answer only once the instance has left `starting` (it runs, is paused, stalled or failed), so that `state` in the response says what it reached; a restore is then known to run in one call. Without it the runtime answers as soon as it has started the instance, and `state` is whatever it is then. The wait ends after `wait_timeout_ms` (default 60000) with the state of that moment.
   */
  wait?: boolean;
  /**
   * How long `wait` waits at most, in milliseconds.
   */
  wait_timeout_ms?: number;
}
export interface StartResponse {
  instance_id: string;
  /**
   * The request was accepted and the instance created (always `starting`; `state` says where the instance is).
   */
  status: "starting";
  state?: InstanceState;
  name: InstanceName;
}
export interface StopRequest {
  instance_id: InstanceRef;
  /**
   * How long the guest gets to power off after the ACPI request (default chosen by the runtime; ovmd uses 10000).
   */
  timeout_ms?: number;
  /**
   * Skip the ACPI request; quit the VMM at once, then kill it.
   */
  force?: boolean;
}
export interface StopResponse {
  status: "stopping" | "exited";
  /**
   * The id of the instance the request named (by id, name or id prefix).
   */
  instance_id: string;
  name: InstanceName;
}
export interface KillRequest {
  instance_id: InstanceRef;
  /**
   * A Linux signal number (9 SIGKILL, 15 SIGTERM, 10 SIGUSR1, ...).
   */
  signal: number;
}
export interface KillResponse {
  /**
   * `signalled`: delivered to the container's program; `stopping`: the stop the signal means is under way; `exited`: the instance has ended.
   */
  status: "signalled" | "stopping" | "exited";
  /**
   * The id of the instance the request named (by id, name or id prefix).
   */
  instance_id: string;
  name: InstanceName;
  /**
   * The signal, as asked.
   */
  signal: number;
}
export interface StdinRequest {
  instance_id: InstanceRef;
  /**
   * The bytes, base64 (at most 1 MiB decoded).
   */
  data?: string;
  /**
   * Close the program's stdin after `data`.
   */
  close?: boolean;
}
export interface StdinResponse {
  /**
   * Number of bytes written.
   */
  bytes: number;
}
export interface SnapshotRequest {
  instance_id: InstanceRef;
  /**
   * Reference to store the snapshot artifact under (`[registry[:port]/]repository[:tag]`).
   */
  tag: string;
  /**
   * Stop the instance after the snapshot instead of resuming it.
   */
  stop?: boolean;
}
export interface SnapshotResponse {
  snapshot_ref: Digest;
  /**
   * Normalized reference the snapshot artifact was tagged with.
   */
  reference: string;
  /**
   * Size in bytes of the RAM snapshot blob.
   */
  size: number;
  /**
   * How long the guest was paused, in milliseconds, from its stop to its resume as the VMM stamps them (with `stop`, from its stop until the snapshot was captured). A runtime that copies what the running guest would change resumes it before packing: this is then much less than `total_ms`.
   */
  pause_ms?: number;
  /**
   * How long the snapshot took in the runtime, in milliseconds, from the pause to the stored artifact.
   */
  total_ms?: number;
  /**
   * Bytes of new blobs written to the store (the RAM snapshot blob and the overlay's diff layer).
   */
  bytes_written?: number;
  /**
   * `background`: the guest was paused while its disk overlay was copied and its device state saved, then the VMM wrote its memory as of the pause while it ran again (copying each page before the guest's first write to it); `live`: the VMM saved the guest's memory while it ran and paused it only for the last changes and the device state; `copy`: memory was copied while paused; in these three the disk overlay was copied while paused and the snapshot packed after the guest resumed. `paused`: the guest stayed paused while the snapshot was packed (it was to stop, or the host had no room for the copies).
   */
  pause_mode?: "background" | "live" | "copy" | "paused";
}
export interface InjectRequest {
  instance_id: InstanceRef;
  content: {
    /**
     * A write into the region of an ivshmem device.
     */
    mmio: {
      /**
       * Name of the ivshmem device; default the first one declared.
       */
      device?: string;
      /**
       * Byte offset in the region; default 0.
       */
      offset?: number;
      /**
       * The bytes, encoded per `encoding`.
       */
      data: string;
      /**
       * How `data` is encoded; default `base64`.
       */
      encoding?: "base64" | "utf8";
    };
  };
}
export interface InjectResponse {
  status: "ok";
  /**
   * Number of bytes written.
   */
  bytes: number;
}
export interface RemoveResponse {
  status: "removed";
  /**
   * The id of the instance that was removed.
   */
  instance_id: string;
  name: InstanceName;
}
/**
 * The boot watchdog (RFC §6.5). Boot is over at the first console line from the guest's
 * userspace (a line without the kernel's `[    1.234567]` timestamp). Until then a
 * console that stays silent for `timeout_ms` — from the moment the instance runs, or
 * since its last output — makes the instance `stalled`.
 *
 */
export interface BootInfo {
  /**
   * `booting` until the guest's userspace speaks, then `booted`; `stalled` while the watchdog holds the boot as stalled; `unwatched` when the watchdog is off or the instance was restored (its kernel booted before the snapshot).
   */
  phase: "booting" | "booted" | "stalled" | "unwatched";
  /**
   * The silence allowed while booting; 0 when not watched.
   */
  timeout_ms: number;
  /**
   * The last console lines (at most 10), while stalled.
   */
  console_tail?: string[];
}
/**
 * How the instance's VMM is confined (RFC §8.4).
 */
export interface Confinement {
  /**
   * `namespaces`: own mount, PID, IPC, UTS and cgroup namespaces (and network, unless the instance has a NIC) as an unprivileged user, seeing only its own files; `user`: as an unprivileged user only (the VMM drops root itself); `none`: as the runtime's user.
   */
  mode: "namespaces" | "user" | "none";
  /**
   * The user the VMM runs as, when not the runtime's.
   */
  user?: string;
  /**
   * The namespaces of its own.
   */
  namespaces?: ("mnt" | "pid" | "ipc" | "uts" | "cgroup" | "net")[];
  /**
   * Linux capabilities the confined VMM keeps (lower case, without `cap_`): `sys_ptrace` lets it use userfaultfd for background snapshots where the host allows that only to such processes; `net_bind_service` lets it publish a host port below 1024. Absent: none.
   */
  capabilities?: string[];
  /**
   * The VMM's seccomp filter setting (QEMU `-sandbox`).
   */
  seccomp: string;
  /**
   * Resource limits of the VMM process (cgroups), or why there are none.
   */
  limits: {
    enforced: boolean;
    /**
     * `cgroup2` or `cgroup1`.
     */
    via?: string;
    /**
     * Most memory the VMM may use (guest RAM, device regions and the VMM's own), in bytes.
     */
    memory_max?: number;
    /**
     * Most CPU time, in cores.
     */
    cpu_max?: number;
    /**
     * Why no limits are enforced.
     */
    note?: string;
  };
}
/**
 * Measured facts about an instance.
 */
export interface Metrics {
  /**
   * Time since the VMM started (until it exited, for ended instances); 0 before it started.
   */
  uptime_ms: number;
  /**
   * From the start request to the guest's first console output.
   */
  boot_ms?: number;
  /**
   * From the start request to state `running`.
   */
  start_ms?: number;
  /**
   * Guest memory in bytes.
   */
  memory_bytes: number;
  vcpus: number;
  /**
   * CPU time used by the VMM process (user + system), while it lives.
   */
  cpu_time_ms?: number;
  /**
   * Resident memory of the VMM process, while it lives.
   */
  rss_bytes?: number;
}
/**
 * A declared device of the instance.
 */
export interface DeviceInfo {
  type: "ivshmem";
  name: string;
  /**
   * Size of the shared-memory region in bytes.
   */
  size: number;
}
export interface InstanceInfo {
  instance_id: string;
  name: InstanceName;
  state: InstanceState;
  /**
   * Why the instance failed or exited, or why its boot is `stalled` (with a hint).
   */
  reason?: string;
  /**
   * The artifact the instance was started from.
   */
  artifact: {
    /**
     * The reference (or path) it was started from, as resolved by the runtime.
     */
    reference: string;
    digest: Digest;
  };
  /**
   * VMM family running the instance.
   */
  runtime: string;
  accel: Accel;
  machine: Machine;
  /**
   * VMM process id, while it lives.
   */
  pid?: number;
  created_at: Timestamp;
  started_at?: Timestamp;
  exited_at?: Timestamp;
  /**
   * Exit status of the VMM process, when it exited on its own with one.
   */
  exit_code?: number;
  /**
   * containerMode artifacts (rfc §6.7): the exit status of the image's program as the guest's OVMS-Init reported it (128 + N when a signal N ended it; 125 when OVMS-Init itself failed, 126 when the program could not run, 127 when it was not found). Absent while it runs, and when the guest ended without a report (then `state` is `failed` unless a stop was asked for).
   */
  program_exit_code?: number;
  metrics: Metrics;
  /**
   * The artifact's `runtimeHints.coldStartTargetMs`.
   */
  cold_start_target_ms?: number;
  /**
   * Whether `metrics.start_ms` ≤ `cold_start_target_ms`.
   */
  met_target?: boolean;
  devices: DeviceInfo[];
  network: NetworkInfo;
  /**
   * Kernel arguments the runtime added to the artifact's `kernel.args` (and the start's `cmdline`), e.g. `tsc_early_khz=…`, the host's TSC rate, which a guest without a reference clock needs to boot on microvm under TCG (RFC §6.5).
   */
  kernel_args_added?: string[];
  boot?: BootInfo;
  confinement?: Confinement;
}
/**
 * The warm pool of one snapshot artifact.
 */
export interface PoolInfo {
  /**
   * The reference of the start that made the pool (restores by other names of the same digest use it too).
   */
  reference: string;
  digest: Digest;
  /**
   * How many ready processes the pool keeps (0 once emptied).
   */
  size: number;
  /**
   * How many are ready now.
   */
  ready: number;
  /**
   * Guest memory each ready process maps (its snapshot's memory size).
   */
  memory_bytes: number;
}
export interface PoolList {
  pools: PoolInfo[];
}
export interface PoolRemoveResponse {
  status: "emptied";
  reference: string;
  digest: Digest;
  /**
   * How many ready processes were stopped.
   */
  discarded: number;
}
export interface InstanceList {
  instances: InstanceInfo[];
}
export interface ConsoleInput {
  /**
   * The bytes to type, encoded per `encoding`.
   */
  data: string;
  /**
   * How `data` is encoded; default `utf8`.
   */
  encoding?: "utf8" | "base64";
}
export interface ConsoleInputResponse {
  /**
   * Number of bytes handed to the serial port.
   */
  bytes: number;
}
/**
 * One layer of an artifact's OCI manifest.
 */
export interface ArtifactLayer {
  /**
   * What the layer is to the VM.
   */
  role: "kernel" | "initrd" | "disk" | "ramsnap" | "bootstrap" | "other";
  media_type: string;
  digest: Digest;
  /**
   * Size of the blob in bytes.
   */
  size: number;
  /**
   * A disk layer's image format (`qcow2`, `raw`).
   */
  format?: string;
}
/**
 * What this runtime can say about the artifact's signatures (sigstore bundles attached
 * as referrers, RFC §8.2): `verified` — a signature verifies with a key of the runtime's
 * trust policy (`keys` names them); `invalid` — signatures are there but none verifies
 * with the policy's keys; `signed` — signatures are there, and the runtime has no policy
 * to check them against (not verified); `unsigned` — none.
 *
 */
export interface ArtifactSignature {
  status: "verified" | "invalid" | "signed" | "unsigned";
  /**
   * Number of signature referrers in the store.
   */
  signatures: number;
  /**
   * The trusted keys that verified a signature.
   */
  keys?: {
    name: string;
    fingerprint: string;
  }[];
}
export interface ArtifactInfo {
  /**
   * The normalized reference it is named by in the store.
   */
  reference: string;
  digest: Digest;
  /**
   * The OVMS manifest's `name`.
   */
  name: string;
  /**
   * The OVMS manifest's `version`.
   */
  version: string;
  description?: string;
  /**
   * When it was built or snapshotted, when the manifest says.
   */
  created?: string;
  /**
   * Bytes of the OCI manifest, its config and its layers together.
   */
  size: number;
  /**
   * Guest memory the manifest asks for.
   */
  memory_bytes?: number;
  vcpus?: number;
  machine?: Machine;
  /**
   * The manifest's `runtimeHints.coldStartTargetMs`.
   */
  cold_start_target_ms?: number;
  devices?: DeviceInfo[];
  /**
   * Whether it carries a RAM snapshot (a start restores it instead of booting).
   */
  ram_snapshot: boolean;
  subject?: Digest;
  layers: ArtifactLayer[];
  signature: ArtifactSignature;
}
export interface ArtifactList {
  artifacts: ArtifactInfo[];
}
/**
 * One line of an instance's console; the log stream holds one per line.
 */
export interface LogRecord {
  ts: Timestamp;
  /**
   * Source of the line: `serial`, the serial console (for a containerMode instance, the program's stdout); `stderr`, a containerMode instance's stderr (rfc §6.7), whose lines come in the same stream, in order among themselves.
   */
  stream: "serial" | "stderr";
  /**
   * The text of the line, without its line ending.
   */
  line: string;
}
