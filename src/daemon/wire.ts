import type { InstanceInfo } from "../api/types.generated.js";
import type { Instance } from "../runtime/types.js";

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
  };
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
  return out;
}
