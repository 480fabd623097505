import type { Command } from "commander";
import { formatPort } from "../../core/ports.js";
import { familiarReference, parseReference } from "../../core/reference.js";
import { formatSize } from "../../core/size.js";
import type { InstanceInfo, PoolInfo } from "../../api/types.generated.js";
import type { OvmdClient } from "../../client/client.js";
import { Printer, globals, table } from "../context.js";
import { addSocketOption, daemonClient, formatDuration, shortId } from "./daemon-client.js";

/** register adds `ovm ps`: the daemon's instances as a table (or JSON), with their published ports. */
export function register(program: Command): void {
  const cmd = program
    .command("ps")
    .description("list instances (running ones; -a for all)")
    .option("-a, --all", "include exited and failed instances")
    .option("-q, --quiet", "print only instance ids (the short form), one per line")
    .addHelpText(
      "after",
      `
Examples:
  ovm ps -a
  ovm ps --json | jq -r '.[] | "\\(.name) \\(.network.ports[0].host_port)"'
  ovm rm -f $(ovm ps -aq)     # remove every instance`,
    );
  addSocketOption(cmd).action(async (opts: { all?: boolean }, c: Command) => {
    const g = globals(c);
    const out = new Printer(g);
    const client = await daemonClient(c);
    // Paused pool processes are not instances, but they hold memory: said under the table.
    // Both asked at once: a command typed all day should not wait for one answer, then the other.
    const [list, pool] = await Promise.all([
      client.list({ all: !!opts.all }),
      g.json || g.quiet ? undefined : poolSummary(client),
    ]);
    if (g.quiet && !g.json) {
      for (const i of list) process.stdout.write(`${shortId(i)}\n`);
      return;
    }
    out.result(list, () =>
      table(
        ["ID", "NAME", "STATE", "ACCEL", "UPTIME", "ARTIFACT", "PORTS"],
        list.map((i) => [
          shortId(i),
          i.name,
          i.state,
          i.accel,
          formatDuration(i.metrics.uptime_ms),
          artifactName(i.artifact.reference),
          portsText(i),
        ]),
      ),
    );
    if (pool) out.info(pool);
  });
}

/** artifactName writes a reference the short way people type it; paths stay as they are. */
export function artifactName(reference: string): string {
  try {
    return familiarReference(parseReference(reference));
  } catch {
    return reference;
  }
}

/** portsText writes an instance's published ports as docker does: `127.0.0.1:8080->80/tcp, …`. */
export function portsText(i: Pick<InstanceInfo, "network">): string {
  return i.network.ports
    .map((p) =>
      formatPort({ protocol: p.protocol, hostIp: p.host_ip, hostPort: p.host_port, guestPort: p.guest_port }),
    )
    .join(", ");
}

/**
 * poolSummary is one line about the warm pool for `ovm ps`, or undefined when it holds nothing
 * (or the daemon has no pool endpoint).
 */
export async function poolSummary(client: OvmdClient): Promise<string | undefined> {
  let pools: PoolInfo[];
  try {
    pools = await client.pools();
  } catch {
    return undefined;
  }
  const live = pools.filter((p) => p.ready > 0);
  if (!live.length) return undefined;
  const n = live.reduce((k, p) => k + p.ready, 0);
  const bytes = live.reduce((k, p) => k + p.ready * p.memory_bytes, 0);
  return `warm pool: ${n} paused QEMU process(es) ready for ${live.length} snapshot(s), ${formatSize(bytes)} of guest memory (ovm pool ls; ovm pool rm REF empties one)`;
}
