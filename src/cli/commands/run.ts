import { Option, type Command } from "commander";
import { OvmsError, isOvmsError } from "../../core/errors.js";
import { parseSize } from "../../core/size.js";
import { checkMac, parsePortSpec, type PortRequest } from "../../core/ports.js";
import type { PortRequest as WirePortRequest, StartOverrides } from "../../api/types.generated.js";
import { Printer, globals } from "../context.js";
import { cpuCount, instanceName } from "../flags.js";
import { addSocketOption, ensureDaemon, inFlagWords, manifestArg } from "./daemon-client.js";
import { Foreground } from "./foreground.js";
import { portsText } from "./ps.js";

/**
 * register adds `ovm run REF`: start an instance through the daemon (starting one in the
 * background when none answers). In the foreground the instance is attached to this command
 * (foreground.ts): the serial console is streamed to stdout, Ctrl-C stops the instance (twice:
 * at once), the command ends when the instance does, and whatever ends the command ends the
 * instance; with -d only the instance id is printed. `-p` publishes guest ports on the host (the ports
 * it got go to stderr), `--network` picks the NIC's mode.
 */
export function register(program: Command): void {
  const cmd = program
    .command("run")
    .description(
      "run an artifact (store or registry reference, OCI layout folder, .tar of one, or manifest.json)",
    )
    .argument("<ref>", "what to run")
    .option("--name <name>", "instance name (default: generated)", instanceName)
    .option("-d, --detach", "start in the background, print the instance id, and leave it running")
    .option("--memory <size>", "guest memory, e.g. 512M (default: the artifact's)")
    .option("--cpus <n>", "vCPUs (default: the artifact's)", cpuCount)
    .option("--cmdline <args>", "appended to the artifact's kernel command line")
    .addOption(
      new Option("--accel <accel>", "auto: KVM only where it really runs a guest, else TCG").choices([
        "auto",
        "kvm",
        "tcg",
      ]),
    )
    .addOption(
      new Option(
        "--machine <machine>",
        "machine model (default: microvm, q35 when a device needs PCI)",
      ).choices(["microvm", "q35"]),
    )
    .option(
      "-p, --publish <[ip:]host:guest[/proto]>",
      "publish a guest port on the host (repeatable): 8080:80, 0.0.0.0:8080:80, 53:53/udp, or 80 for a free host port; on 127.0.0.1 unless IP is given",
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .addOption(
      new Option(
        "--network <mode>",
        "none: no NIC; user: NIC with outbound access; restricted: NIC, no outbound access (default: user with -p or when the artifact declares a network, else none)",
      ).choices(["none", "user", "restricted"]),
    )
    .option(
      "--mac-address <mac>",
      "the NIC's MAC address (default: a fresh one; a restore keeps the snapshot's)",
    )
    .addHelpText(
      "after",
      `
Examples:
  ovm run example/vm:1.0                               # the console here; Ctrl-C stops the VM
  ovm run -d --name web -p 8080:80 example/vm:1.0     # guest port 80 on 127.0.0.1:8080
  curl http://127.0.0.1:8080/
  ovm run -d -p 80 --network restricted example/vm:fast  # a free host port, no outbound access
  ovm ps                                               # PORTS shows what each instance got

The guest sees a virtio-net NIC and gets 10.0.2.15 by DHCP from a private network of its own
(QEMU user-mode networking: no root, no bridge). In mode user it reaches the host's loopback
services as 10.0.2.2; use restricted for guests you do not trust.

Without -d the VM lives only as long as this command: Ctrl-C asks the guest to power off (a
second Ctrl-C forces it), and if the command is ended any other way (SIGTERM, a closed
terminal, kill -9) the daemon notices and stops the VM.`,
    );
  addSocketOption(cmd).action(async (ref: string, opts: RunFlags, c: Command) => {
    const out = new Printer(globals(c));
    // In the foreground, signals are ours from this moment: before the daemon is even asked.
    const fg = opts.detach ? undefined : new Foreground(out);
    try {
      const overrides = startOverrides(opts);
      const client = await ensureDaemon(c, out);
      fg?.connected(client);
      const started = await client
        .start(
          {
            manifest: manifestArg(ref),
            ...(Object.keys(overrides).length ? { overrides } : {}),
            ...(fg ? { attach: true } : {}),
          },
          fg ? { signal: fg.signal } : {},
        )
        .catch((e: unknown) => {
          throw inFlagWords(e, {
            "/overrides/name": ["--name", opts.name],
            "/overrides/memory": ["--memory", opts.memory],
            "/overrides/cpus": ["--cpus", opts.cpus],
            "/overrides/cmdline": ["--cmdline", opts.cmdline],
            "/overrides/ports": ["-p", opts.publish?.join(" -p ")],
            "/overrides/network": ["--network", opts.network],
            "/overrides/mac": ["--mac-address", opts.macAddress],
          });
        });
      fg?.started(started.instance_id, started.name);
      if (!fg) {
        if (overrides.ports)
          out.info(`${started.name}: ${portsText(await client.status(started.instance_id))}`);
        out.result(started, () => started.instance_id);
        return;
      }
      // Attach first: until the followed stream holds it, only a grace period does.
      const records = await client.logs(started.instance_id, { follow: true, attach: true });
      fg.holding();
      out.info(`${started.name} (${started.instance_id}) is starting; Ctrl-C stops it`);
      // Host ports the runtime picked (-p 80) are only known now.
      if (overrides.ports)
        out.info(`${started.name}: ${portsText(await client.status(started.instance_id))}`);
      for await (const rec of records) {
        if (!process.stdout.write(rec.line + "\n")) await new Promise((r) => process.stdout.once("drain", r));
      }
      const end = await client.status(started.instance_id).catch((e: unknown) => {
        if (!isOvmsError(e, "DAEMON_UNAVAILABLE")) throw e;
        throw new OvmsError(
          "DAEMON_UNAVAILABLE",
          `the daemon went away while ${started.name} ran; a daemon that shuts down stops the instances attached to it`,
        );
      });
      if (end.state === "failed")
        throw new OvmsError("INSTANCE_FAILED", `${end.name} failed: ${end.reason ?? "no reason given"}`);
      out.info(`${end.name} ${end.state}${end.reason ? ` (${end.reason})` : ""}`);
    } finally {
      fg?.close();
    }
  });
}

/** startOverrides turns the flags into POST /start overrides, refusing bad values in the flags' words. */
function startOverrides(opts: RunFlags): StartOverrides {
  const o: StartOverrides = {};
  if (opts.name !== undefined) o.name = opts.name;
  if (opts.memory !== undefined) o.memory = parseSize(opts.memory, "--memory");
  if (opts.cpus !== undefined) o.cpus = opts.cpus;
  if (opts.cmdline !== undefined) o.cmdline = opts.cmdline;
  if (opts.accel !== undefined) o.accel = opts.accel;
  if (opts.machine !== undefined) o.machine = opts.machine;
  if (opts.publish?.length) o.ports = opts.publish.map((p) => toWire(parsePortSpec(p)));
  if (opts.network !== undefined) o.network = opts.network;
  if (opts.macAddress !== undefined) o.mac = checkMac(opts.macAddress, "--mac-address");
  return o;
}

interface RunFlags {
  name?: string;
  detach?: boolean;
  memory?: string;
  cpus?: number;
  cmdline?: string;
  accel?: "auto" | "kvm" | "tcg";
  machine?: "microvm" | "q35";
  publish?: string[];
  network?: "none" | "user" | "restricted";
  macAddress?: string;
}

/** toWire is a parsed -p in the API's words. */
function toWire(p: PortRequest): WirePortRequest {
  return {
    guest_port: p.guestPort,
    ...(p.hostPort !== undefined ? { host_port: p.hostPort } : {}),
    ...(p.hostIp !== undefined ? { host_ip: p.hostIp } : {}),
    ...(p.protocol !== undefined ? { protocol: p.protocol } : {}),
  };
}
