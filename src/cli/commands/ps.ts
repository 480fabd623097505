import type { Command } from "commander";
import { formatPort } from "../../core/ports.js";
import { familiarReference, parseReference } from "../../core/reference.js";
import type { InstanceInfo } from "../../api/types.generated.js";
import { Printer, globals, table } from "../context.js";
import { addSocketOption, daemonClient, formatDuration, shortId } from "./daemon-client.js";

/** register adds `ovm ps`: the daemon's instances as a table (or JSON), with their published ports. */
export function register(program: Command): void {
  const cmd = program
    .command("ps")
    .description("list instances (running ones; -a for all)")
    .option("-a, --all", "include exited and failed instances");
  addSocketOption(cmd).action(async (opts: { all?: boolean }, c: Command) => {
    const out = new Printer(globals(c));
    const list = await daemonClient(c).list({ all: !!opts.all });
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
