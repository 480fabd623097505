import { TERMINAL_STATES, type Instance, type SnapshotCapture } from "../types.js";
import { defaultCpuModel } from "./argv.js";
import type { InstanceRecord } from "./records.js";

// How the runtime's domain types see an instance record: the Instance that status and list
// report, and the capture a snapshot hands its sink.

/**
 * toCapture is what a snapshot hands its sink: the record's shape, as the ramsnap metadata
 * records it, with the captured device state, the memory file and the overlay (if any).
 */
export function toCapture(
  rec: InstanceRecord,
  runtime: { name: string; version: string },
  deviceState: Buffer,
  overlay?: string,
): SnapshotCapture {
  return {
    instanceId: rec.instance_id,
    runtime,
    machine: rec.machine,
    accel: rec.accel,
    cpuModel: rec.cpu_model ?? defaultCpuModel(rec.accel),
    memoryBytes: rec.memory_bytes,
    vcpus: rec.vcpus,
    cmdline: rec.cmdline ?? "",
    devices: rec.devices.map((d) => ({ type: d.type, name: d.name, size: d.size })),
    ...(rec.network?.mac ? { network: { mac: rec.network.mac } } : {}),
    deviceState,
    memoryFile: rec.ram_file,
    ...(overlay ? { overlay } : {}),
    artifact: rec.artifact,
  };
}

/** toInstance turns a record into the runtime's Instance (metrics of the live process aside). */
export function toInstance(r: InstanceRecord, now = Date.now()): Instance {
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
    // Ports are reported while the instance holds them: an ended QEMU has let them go.
    network: r.network
      ? { ...r.network, ports: TERMINAL_STATES.has(r.state) ? [] : [...r.network.ports] }
      : { mode: "none", ports: [] },
  };
  if (r.reason) info.reason = r.reason;
  if (r.pid && !TERMINAL_STATES.has(r.state)) info.pid = r.pid;
  if (r.started_at) info.startedAt = r.started_at;
  if (r.exited_at) info.exitedAt = r.exited_at;
  if (r.exit_code !== undefined) info.exitCode = r.exit_code;
  if (r.program_exit_code !== undefined) info.programExitCode = r.program_exit_code;
  if (r.boot_ms !== undefined) info.metrics.bootMs = r.boot_ms;
  if (r.start_ms !== undefined) info.metrics.startMs = r.start_ms;
  if (r.cold_start_target_ms !== undefined) info.coldStartTargetMs = r.cold_start_target_ms;
  if (r.kernel_args_added?.length) info.kernelArgsAdded = r.kernel_args_added;
  if (r.boot) {
    info.boot = { phase: r.boot.phase, timeoutMs: r.boot.timeout_ms };
    if (r.boot.console_tail) info.boot.consoleTail = r.boot.console_tail;
  }
  if (r.confinement) info.confinement = r.confinement;
  return info;
}
