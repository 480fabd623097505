import { join } from "node:path";
import type { PreparedArtifact } from "../../artifact/prepare.js";
import { renderLaunch, resolveLaunch } from "../../artifact/convert/launch.js";
import { RuntimeError } from "../runtime-error.js";
import type { Accel, InstanceState, Machine, StartOptions } from "../types.js";
import { defaultCpuModel, type QemuConfig } from "./argv.js";
import { draftNetwork, networkMismatches, type NetworkDraft } from "./network.js";

/** DEFAULT_MEMORY is the guest memory when neither the caller nor the manifest says. */
export const DEFAULT_MEMORY = 256 << 20;

/** MIN_MEMORY is the least guest memory a start accepts. */
export const MIN_MEMORY = 16 << 20;

/** NAME_RE is what an instance name may look like (spec/runtimes/README.md §2). */
export const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;

/** Plan is the shape of an instance, decided before anything is created. */
export interface Plan {
  name: string;
  memory: number;
  vcpus: number;
  machine: Machine;
  accel: Accel;
  cpuModel: string;
  cmdline: string;
  devices: { type: "ivshmem"; name: string; size: number }[];
  /** Lock guest memory in RAM: an mlock_required restore. */
  memLock: boolean;
  /** The NIC and published ports (network.ts); absent: no NIC. */
  network?: NetworkDraft;
  /** containerMode cold boot: the launch file OVMS-Init runs (bootstrap config + overrides, rfc §6.7). */
  launch?: string;
  /** containerMode cold boot: the program's stdin comes through the control channel. */
  stdin?: boolean;
}

/**
 * Draft is a plan before the accelerator is chosen: probing KVM can take seconds, so it comes
 * last, after every refusal. A restore has its accelerator and CPU model fixed by the snapshot.
 */
export type Draft = Omit<Plan, "accel" | "cpuModel"> & { accel?: Accel; cpuModel?: string };

/**
 * HostFacts are what the host can give an instance, read by the caller (host-facts.ts) so that
 * the checks stay pure.
 */
export interface HostFacts {
  /** MemAvailable of /proc/meminfo, in bytes. */
  memAvailable: number;
  /** The tmpfs folder holding guest memory files, and its free bytes (when it could be read). */
  shm?: { path: string; freeBytes: number };
  /** RLIMIT_MEMLOCK in bytes (Infinity: unlimited); read only for mlock_required restores. */
  memlockLimit?: number;
  /** Whether QEMU keeps CAP_IPC_LOCK: root that does not drop to another user. */
  ipcLock?: boolean;
}

/** defaultName is the name of an instance nobody named: the artifact's last path part and a suffix. */
export function defaultName(manifestName: string, suffix: string): string {
  return `${(manifestName.split("/").pop() ?? "vm").slice(0, 50)}-${suffix}`;
}

/**
 * draftPlan decides an instance's shape from the manifest and the overrides, and refuses bad
 * input before anything is created. A restore takes its shape from the snapshot and refuses
 * overrides that contradict it (§5.6). `owner` is the instance that already has `name`.
 */
export function draftPlan(
  a: PreparedArtifact,
  opts: StartOptions,
  ctx: { runtime: string; name: string; owner?: { id: string; state: InstanceState } },
): Draft {
  const m = a.manifest;
  const name = ctx.name;
  if (!NAME_RE.test(name))
    throw new RuntimeError("INVALID_ARGUMENT", `name "${name}": use 1-63 letters, digits, '_', '.' or '-'`);
  if (ctx.owner)
    throw new RuntimeError(
      "CONFLICT",
      `name "${name}" is already used by instance ${ctx.owner.id} (${ctx.owner.state}); remove it first`,
    );
  const devices = m.devices ?? [];
  const needsPci = devices.length > 0;
  const snap = a.ramSnapshot?.metadata;
  if ((opts.args || opts.env || opts.stdin) && !a.bootstrap)
    throw new RuntimeError(
      "INVALID_ARGUMENT",
      `${a.reference} is not a container image (containerMode): a command, environment or stdin override applies to images converted with ovm convert only`,
    );
  if (snap) {
    const bad = restoreMismatches(snap, opts, ctx.runtime);
    if (bad.length)
      throw new RuntimeError("MANIFEST_INVALID", `cannot restore ${a.reference}: ${bad.join("; ")}`);
  }
  const memory = snap?.memoryBytes ?? opts.memory ?? m.resources?.memory ?? DEFAULT_MEMORY;
  const vcpus = snap?.vcpus ?? opts.cpus ?? m.resources?.vcpus ?? 1;
  if (memory < MIN_MEMORY)
    throw new RuntimeError("INVALID_ARGUMENT", `memory ${memory} bytes: at least 16 MiB`);
  // QEMU takes x86 RAM in 8 KiB steps (and refuses a backend of another size).
  if (memory % 8192 !== 0)
    throw new RuntimeError("INVALID_ARGUMENT", `memory ${memory} bytes: a whole number of 8 KiB`);
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
  const draft: Draft = {
    name,
    memory,
    vcpus,
    machine,
    cmdline: [m.kernel.args ?? "", opts.cmdline ?? ""].join(" ").trim(),
    devices,
    memLock: !!(snap && m.ramSnapshot?.mlock_required),
  };
  const network = draftNetwork(a, opts);
  if (network) draft.network = network;
  // A cold boot of a container image: what OVMS-Init runs, refused now if it cannot run anything.
  if (a.bootstrap && !snap) {
    const launch = resolveLaunch(a.bootstrap, {
      ...(opts.args ? { args: opts.args } : {}),
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.stdin ? { stdin: true } : {}),
      hostname: name,
    });
    draft.launch = renderLaunch(launch);
    if (opts.stdin) draft.stdin = true;
  }
  if (snap) {
    draft.accel = snap.accel as Accel;
    if (snap.cpuModel) draft.cpuModel = snap.cpuModel;
  }
  return draft;
}

/** restoreMismatches names each override that contradicts the snapshot being restored (§5.6). */
export function restoreMismatches(
  snap: NonNullable<PreparedArtifact["ramSnapshot"]>["metadata"],
  opts: StartOptions,
  runtime: string,
): string[] {
  const bad: string[] = [];
  if (snap.runtime.name !== runtime)
    bad.push(`runtime: snapshot ${snap.runtime.name}, this runtime ${runtime}`);
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
  if (opts.cmdline) bad.push("cmdline: a restored kernel is already running; its command line cannot change");
  bad.push(...networkMismatches(snap, opts));
  if (opts.args || opts.env || opts.stdin)
    bad.push("args/env/stdin: a restored program is already running; its command and stdin cannot change");
  return bad;
}

/**
 * checkHost refuses, with INSUFFICIENT_RESOURCES, a start the host cannot give its memory:
 * lockable memory for an mlock_required restore, then available memory and tmpfs space for
 * guest RAM plus device regions.
 */
export function checkHost(draft: Draft, host: HostFacts): void {
  const bytes = draft.memory + draft.devices.reduce((n, d) => n + d.size, 0);
  if (draft.memLock && !host.ipcLock && (host.memlockLimit ?? Infinity) < draft.memory) {
    throw new RuntimeError(
      "INSUFFICIENT_RESOURCES",
      `the snapshot needs ${mib(draft.memory)} MiB locked in RAM (mlock_required) but RLIMIT_MEMLOCK is ${mib(host.memlockLimit!)} MiB: raise it (ulimit -l, LimitMEMLOCK=) or drop mlock_required`,
    );
  }
  if (bytes > host.memAvailable) {
    throw new RuntimeError(
      "INSUFFICIENT_RESOURCES",
      `not enough memory: the instance needs ${mib(bytes)} MiB, ${mib(host.memAvailable)} MiB are available`,
    );
  }
  if (host.shm && bytes > host.shm.freeBytes) {
    throw new RuntimeError(
      "INSUFFICIENT_RESOURCES",
      `not enough space on ${host.shm.path} for guest memory: need ${mib(bytes)} MiB, ${mib(host.shm.freeBytes)} MiB free`,
    );
  }
}

/** finishPlan completes a draft with the accelerator chosen for it (kept when the snapshot fixed one). */
export function finishPlan(draft: Draft, accel: Accel): Plan {
  const chosen = draft.accel ?? accel;
  return { ...draft, accel: chosen, cpuModel: draft.cpuModel ?? defaultCpuModel(chosen) };
}

/**
 * qemuConfig is the QEMU configuration of a planned instance: its files in the instance folder
 * `dir`, its memory and sockets in its tmpfs folder `shmDir`; a restore maps the preloaded
 * snapshot memory instead of fresh RAM.
 */
export function qemuConfig(
  a: PreparedArtifact,
  plan: Plan,
  at: { id: string; dir: string; shmDir: string; runAs?: string; vmgenid: string },
): QemuConfig {
  const restore = a.ramSnapshot;
  const cfg: QemuConfig = {
    id: at.id,
    machine: plan.machine,
    accel: plan.accel,
    cpuModel: plan.cpuModel,
    memoryBytes: plan.memory,
    vcpus: plan.vcpus,
    kernel: a.kernelPath,
    initrd: a.initrdPath,
    cmdline: plan.cmdline,
    serialLog: join(at.dir, "serial.log"),
    // Sockets live in the tmpfs folder: short paths (sun_path is 108 bytes) that the QEMU
    // user can reach after it dropped root, wherever the state directory is.
    qmpSocket: join(at.shmDir, "qmp.sock"),
    serialSocket: join(at.shmDir, "serial.sock"),
    ramFile: restore ? restore.memoryFile : join(at.shmDir, "ram"),
    devices: plan.devices.map((d) => ({
      type: d.type,
      name: d.name,
      size: d.size,
      path: join(at.shmDir, `ivshmem-${d.name}`),
    })),
    runAs: at.runAs,
    restore: !!restore,
    vmgenid: at.vmgenid,
    memLock: plan.memLock,
  };
  if (plan.network)
    cfg.network = { mode: plan.network.mode, mac: plan.network.mac, forwards: plan.network.published ?? [] };
  if (a.disks.length) cfg.disk = join(at.dir, "overlay.qcow2");
  if (a.manifest.containerMode) {
    // OVMS-Init's control channel (rfc §6.7): the kernel console and the program's exit status.
    cfg.controlLog = join(at.dir, "control.log");
    cfg.controlSocket = join(at.shmDir, "control.sock");
    cfg.stderrLog = join(at.dir, "stderr.log");
    // A cold boot gets its own initrd: OVMS-Init with the launch file appended.
    if (plan.launch) cfg.initrd = join(at.dir, "initrd.img");
  }
  return cfg;
}

/** mib is a byte count in whole MiB, for messages. */
export function mib(n: number): number {
  return Math.round(n / (1 << 20));
}
