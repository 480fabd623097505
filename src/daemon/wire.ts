import type { InstanceInfo, PortMapping, PortRequest as WirePortRequest } from "../api/types.generated.js";
import type { Instance, PortRequest, PublishedPort } from "../runtime/types.js";

/**
 * toInstanceInfo turns what a runtime knows of an instance into the API's InstanceInfo
 * (spec/api/ovms-runtime.openapi.yaml): wire names, the runtime's name, and whether the start
 * met the artifact's cold-start target.
 */
export function toInstanceInfo(runtime: string, i: Instance): InstanceInfo {
  const m = i.metrics;
  const out: InstanceInfo = {
    instance_id: i.id,
    name: i.name,
    state: i.state,
    artifact: i.artifact,
    runtime,
    accel: i.accel,
    machine: i.machine,
    created_at: i.createdAt,
    metrics: { uptime_ms: m.uptimeMs, memory_bytes: m.memoryBytes, vcpus: m.vcpus },
    devices: i.devices.map((d) => ({ type: d.type, name: d.name, size: d.size })),
    network: { mode: i.network.mode, ports: i.network.ports.map(toPortMapping) },
  };
  if (i.network.mac !== undefined) out.network.mac = i.network.mac;
  if (i.reason !== undefined) out.reason = i.reason;
  if (i.pid !== undefined) out.pid = i.pid;
  if (i.startedAt !== undefined) out.started_at = i.startedAt;
  if (i.exitedAt !== undefined) out.exited_at = i.exitedAt;
  if (i.exitCode !== undefined) out.exit_code = i.exitCode;
  if (i.programExitCode !== undefined) out.program_exit_code = i.programExitCode;
  if (m.bootMs !== undefined) out.metrics.boot_ms = m.bootMs;
  if (m.startMs !== undefined) out.metrics.start_ms = m.startMs;
  if (m.cpuTimeMs !== undefined) out.metrics.cpu_time_ms = m.cpuTimeMs;
  if (m.rssBytes !== undefined) out.metrics.rss_bytes = m.rssBytes;
  if (i.coldStartTargetMs !== undefined) {
    out.cold_start_target_ms = i.coldStartTargetMs;
    if (m.startMs !== undefined) out.met_target = m.startMs <= i.coldStartTargetMs;
  }
  if (i.kernelArgsAdded?.length) out.kernel_args_added = i.kernelArgsAdded;
  if (i.boot) {
    out.boot = { phase: i.boot.phase, timeout_ms: i.boot.timeoutMs };
    if (i.boot.consoleTail) out.boot.console_tail = i.boot.consoleTail;
  }
  if (i.confinement) {
    const c = i.confinement;
    const l = c.limits;
    out.confinement = { mode: c.mode, seccomp: c.seccomp, limits: { enforced: l.enforced } };
    if (c.user) out.confinement.user = c.user;
    if (c.namespaces) out.confinement.namespaces = c.namespaces;
    if (c.capabilities) out.confinement.capabilities = c.capabilities;
    if (l.via) out.confinement.limits.via = l.via;
    if (l.memoryMax !== undefined) out.confinement.limits.memory_max = l.memoryMax;
    if (l.cpuMax !== undefined) out.confinement.limits.cpu_max = l.cpuMax;
    if (l.note) out.confinement.limits.note = l.note;
  }
  return out;
}

/** toPortMapping is a published port in the API's words. */
export function toPortMapping(p: PublishedPort): PortMapping {
  return { protocol: p.protocol, host_ip: p.hostIp, host_port: p.hostPort, guest_port: p.guestPort };
}

/** fromPortRequest is a port the API asks to publish, in the runtime's words. */
export function fromPortRequest(p: WirePortRequest): PortRequest {
  const out: PortRequest = { guestPort: p.guest_port };
  if (p.protocol !== undefined) out.protocol = p.protocol;
  if (p.host_ip !== undefined) out.hostIp = p.host_ip;
  if (p.host_port !== undefined) out.hostPort = p.host_port;
  return out;
}
