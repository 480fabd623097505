import type { Command } from "commander";
import { formatSize } from "../../core/size.js";
import type { InstanceInfo } from "../../api/types.generated.js";
import { Printer, globals } from "../context.js";
import { addSocketOption, daemonClient, formatDuration } from "./daemon-client.js";
import { artifactName, portsText } from "./ps.js";

/** register adds `ovm status ID`: one instance's state, identity and metrics. */
export function register(program: Command): void {
  const cmd = program
    .command("status")
    .description("show an instance: state, artifact, accelerator, metrics, network and published ports")
    .argument("<id>", "instance id or name")
    .addHelpText(
      "after",
      `
Examples:
  ovm status web
  ovm status web --json | jq .metrics.start_ms`,
    );
  addSocketOption(cmd).action(async (id: string, _opts, c: Command) => {
    const out = new Printer(globals(c));
    const info = await (await daemonClient(c)).status(id);
    out.result(info, () => describe(info));
  });
}

/** describe writes an InstanceInfo for people. */
export function describe(i: InstanceInfo): string {
  const m = i.metrics;
  const lines = [
    `ID:          ${i.instance_id}`,
    `Name:        ${i.name}`,
    `State:       ${i.state}${i.reason ? ` (${i.reason})` : ""}${i.exit_code !== undefined ? `, exit code ${i.exit_code}` : ""}`,
    `Artifact:    ${artifactName(i.artifact.reference)} ${i.artifact.digest}`,
    `Runtime:     ${i.runtime}, ${i.machine}, ${i.accel}`,
  ];
  if (i.pid !== undefined) lines.push(`PID:         ${i.pid}`);
  lines.push(`Created:     ${i.created_at}`);
  if (i.started_at) lines.push(`Started:     ${i.started_at}`);
  if (i.exited_at) lines.push(`Exited:      ${i.exited_at}`);
  lines.push(`Uptime:      ${formatDuration(m.uptime_ms)}`);
  if (m.start_ms !== undefined) lines.push(`Start:       ${m.start_ms} ms (request to running)`);
  if (m.boot_ms !== undefined) lines.push(`Boot:        ${m.boot_ms} ms (request to first console line)`);
  if (i.cold_start_target_ms !== undefined)
    lines.push(
      `Target:      ${i.cold_start_target_ms} ms${i.met_target !== undefined ? (i.met_target ? " (met)" : " (missed)") : ""}`,
    );
  lines.push(`Resources:   ${formatSize(m.memory_bytes)} memory, ${m.vcpus} vCPU(s)`);
  if (m.cpu_time_ms !== undefined) lines.push(`CPU time:    ${m.cpu_time_ms} ms`);
  if (m.rss_bytes !== undefined) lines.push(`RSS:         ${formatSize(m.rss_bytes)}`);
  for (const d of i.devices) lines.push(`Device:      ${d.type} ${d.name} ${formatSize(d.size)}`);
  lines.push(`Network:     ${i.network.mode}${i.network.mac ? `, MAC ${i.network.mac}` : ""}`);
  if (i.network.ports.length) lines.push(`Ports:       ${portsText(i)}`);
  if (i.kernel_args_added?.length)
    lines.push(`Added args:  ${i.kernel_args_added.join(" ")} (by the runtime)`);
  if (i.boot)
    lines.push(
      `Boot watch:  ${i.boot.phase}${i.boot.timeout_ms ? ` (silence allowed ${formatDuration(i.boot.timeout_ms)})` : ""}`,
    );
  for (const l of i.boot?.console_tail ?? []) lines.push(`  | ${l}`);
  if (i.confinement) {
    const c = i.confinement;
    const l = c.limits;
    lines.push(
      `Confined:    ${c.mode}${c.user ? ` as ${c.user}` : ""}${c.namespaces ? `, namespaces ${c.namespaces.join(",")}` : ""}${c.capabilities ? `, keeps ${c.capabilities.map((x) => `cap_${x}`).join(",")}` : ""}`,
      `Limits:      ${l.enforced ? `${formatSize(l.memory_max ?? 0)} memory, ${l.cpu_max} CPU(s) (${l.via})` : `none: ${l.note}`}`,
    );
  }
  return lines.join("\n");
}
