import { Option, type Command } from "commander";
import { OvmsError, isOvmsError } from "../../core/errors.js";
import { parseSize } from "../../core/size.js";
import { checkMac, parsePortSpec, type PortRequest } from "../../core/ports.js";
import type { PortRequest as WirePortRequest, StartOverrides } from "../../api/types.generated.js";
import { RUNTIME_ADAPTERS } from "../../runtime/adapters.js";
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
 * it got go to stderr), `--network` picks the NIC's mode. A container image converted with
 * `ovm convert` runs like `docker run`: its program's output, its exit status as ours,
 * `-- CMD ARGS` and `-e NAME=VALUE` overrides, `--rm` to remove the instance afterwards.
 */
export function register(program: Command): void {
  const cmd = program
    .command("run")
    .description(
      "run an artifact (store or registry reference, OCI layout folder, .tar of one, or manifest.json)",
    )
    .argument("<ref>", "what to run")
    .argument(
      "[command...]",
      "a converted container image only: the command to run instead of the image's cmd (after --)",
    )
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
    .option(
      "-P, --publish-all",
      "publish every port the artifact declares (ovm inspect shows them) on a free host port of 127.0.0.1",
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
    .option(
      "-e, --env <NAME=VALUE>",
      "a converted container image only: set an environment variable (repeatable; NAME alone takes it from here)",
      (v: string, all: string[] = []) => [...all, v],
    )
    .option("--rm", "remove the instance once it has ended")
    .option(
      "--runtime <name>",
      `the runtime adapter (${RUNTIME_ADAPTERS.join(", ")}; default: the artifact's runtimeHints.preferredRuntime, else the daemon's)`,
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
  ovm convert docker://127.0.0.1:5000/tools/busybox:1.36 -t tools/busybox:vm
  ovm run --rm -e GREETING=hi tools/busybox:vm -- sh -c 'echo $GREETING'
                                                a container image as a VM: its output, its exit status

The guest sees a virtio-net NIC and gets 10.0.2.15 by DHCP from a private network of its own
(QEMU user-mode networking: no root, no bridge). In mode user it reaches the host's loopback
services as 10.0.2.2; use restricted for guests you do not trust.

Without -d the VM lives only as long as this command: Ctrl-C asks the guest to power off (a
second Ctrl-C forces it), and if the command is ended any other way (SIGTERM, a closed
terminal, kill -9) the daemon notices and stops the VM.`,
    )
    .option(
      "--boot-timeout <seconds>",
      "report the boot stalled when the console stays silent this long while booting (0: never; default: the daemon's)",
      (v: string) => {
        const n = Number(v);
        if (!Number.isFinite(n) || n < 0)
          throw new OvmsError("USAGE", `--boot-timeout ${v}: want seconds, 0 or more`);
        return n;
      },
    );
  addSocketOption(cmd).action(async (ref: string, command: string[], opts: RunFlags, c: Command) => {
    const out = new Printer(globals(c));
    if (opts.rm && opts.detach)
      throw new OvmsError(
        "USAGE",
        "--rm needs the foreground: ovm waits for the instance to end, then removes it (drop -d)",
      );
    if (opts.runtime !== undefined && !(RUNTIME_ADAPTERS as readonly string[]).includes(opts.runtime))
      throw new OvmsError(
        "USAGE",
        `--runtime ${opts.runtime}: unknown runtime adapter (known: ${RUNTIME_ADAPTERS.join(", ")})`,
      );
    const overrides = startOverrides(opts, command);
    // In the foreground, signals are ours from this moment: before the daemon is even asked.
    const fg = opts.detach ? undefined : new Foreground(out);
    let watch: NodeJS.Timeout | undefined;
    try {
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
        if (overrides.ports || overrides.publish_all)
          out.info(`${started.name}: ${portsText(await client.status(started.instance_id))}`);
        out.result(started, () => started.instance_id);
        return;
      }
      // Attach first: until the followed stream holds it, only a grace period does.
      const records = await client.logs(started.instance_id, { follow: true, attach: true });
      fg.holding();
      out.info(`${started.name} (${started.instance_id}) is starting; Ctrl-C stops it`);
      // The console alone cannot say that a silent boot is stuck: the daemon's boot watchdog can.
      let told = false;
      watch = setInterval(() => {
        client
          .status(started.instance_id)
          .then((s) => {
            if (s.state === "stalled" && !told) out.info(`${s.name}: ${s.reason ?? "boot stalled"}`);
            told = s.state === "stalled";
          })
          .catch(() => undefined);
      }, 1000);
      watch.unref();
      // Host ports the runtime picked (-p 80, -P) are only known now.
      if (overrides.ports || overrides.publish_all)
        out.info(`${started.name}: ${portsText(await client.status(started.instance_id))}`);
      for await (const rec of records) {
        const to = rec.stream === "stderr" ? process.stderr : process.stdout;
        if (!to.write(rec.line + "\n")) await new Promise((r) => to.once("drain", r));
      }
      const end = await client.status(started.instance_id).catch((e: unknown) => {
        if (!isOvmsError(e, "DAEMON_UNAVAILABLE")) throw e;
        throw new OvmsError(
          "DAEMON_UNAVAILABLE",
          `the daemon went away while ${started.name} ran; a daemon that shuts down stops the instances attached to it`,
        );
      });
      if (opts.rm) await client.remove(started.instance_id, { force: true });
      if (end.state === "failed")
        throw new OvmsError("INSTANCE_FAILED", `${end.name} failed: ${end.reason ?? "no reason given"}`);
      out.info(`${end.name} ${end.state}${end.reason ? ` (${end.reason})` : ""}`);
      // A container image's program decides how `ovm run` ends, as with `docker run`.
      if (end.program_exit_code !== undefined) process.exitCode = end.program_exit_code;
    } finally {
      if (watch) clearInterval(watch);
      fg?.close();
    }
  });
}

/** startOverrides turns the flags into POST /start overrides, refusing bad values in the flags' words. */
function startOverrides(opts: RunFlags, command: string[]): StartOverrides {
  const o: StartOverrides = {};
  if (opts.name !== undefined) o.name = opts.name;
  if (opts.memory !== undefined) o.memory = parseSize(opts.memory, "--memory");
  if (opts.cpus !== undefined) o.cpus = opts.cpus;
  if (opts.cmdline !== undefined) o.cmdline = opts.cmdline;
  if (opts.accel !== undefined) o.accel = opts.accel;
  if (opts.machine !== undefined) o.machine = opts.machine;
  if (opts.publish?.length) o.ports = opts.publish.map((p) => toWire(parsePortSpec(p)));
  if (opts.publishAll) o.publish_all = true;
  if (opts.network !== undefined) o.network = opts.network;
  if (opts.macAddress !== undefined) o.mac = checkMac(opts.macAddress, "--mac-address");
  if (opts.bootTimeout !== undefined) o.boot_timeout_ms = Math.round(opts.bootTimeout * 1000);
  if (opts.runtime !== undefined) o.runtime = opts.runtime;
  if (command.length) o.args = command;
  const env = (opts.env ?? []).flatMap((e) => {
    if (e.includes("=")) return [e];
    // NAME alone passes this process's value on, as docker does; an unset one is left out.
    return process.env[e] !== undefined ? [`${e}=${process.env[e]}`] : [];
  });
  if (env.length) o.env = env;
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
  publishAll?: boolean;
  network?: "none" | "user" | "restricted";
  macAddress?: string;
  bootTimeout?: number;
  env?: string[];
  rm?: boolean;
  runtime?: string;
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
