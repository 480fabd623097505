import { existsSync } from "node:fs";
import { Command, Option } from "commander";
import { OvmsError } from "../../core/errors.js";
import { parseSize } from "../../core/size.js";
import type { Device, Network } from "../../core/manifest.generated.js";
import { build, type BuildSpec, type DiskFormat } from "../../artifact/build.js";
import { loadBuildFile } from "../../artifact/build-file.js";
import { Printer, globals, openStore } from "../context.js";
import { cpuCount } from "../flags.js";

const collect = (v: string, prev: string[] = []) => [...prev, v];

/**
 * parseDiskFlag reads `--disk FILE[:qcow2|raw]`. Another word after the last colon is a format
 * this version does not know (`base.qcow2:vmdk`), unless the whole text names a file.
 */
export function parseDiskFlag(v: string): { path: string; format?: DiskFormat } {
  const m = /^(.+):([A-Za-z0-9]+)$/.exec(v);
  if (!m || existsSync(v)) return { path: v };
  if (m[2] !== "qcow2" && m[2] !== "raw")
    throw new OvmsError("USAGE", `--disk ${v}: unknown disk format "${m[2]}" (qcow2 or raw)`);
  return { path: m[1], format: m[2] };
}

/** parseDeviceFlag reads `--device type=ivshmem,name=shm0,size=1M[,mmio_addr=0x…]`. */
export function parseDeviceFlag(v: string): Device {
  const kv = Object.fromEntries(
    v.split(",").map((p) => {
      const i = p.indexOf("=");
      if (i <= 0) throw new OvmsError("USAGE", `--device ${v}: "${p}" is not key=value`);
      return [p.slice(0, i), p.slice(i + 1)];
    }),
  );
  const known = new Set(["type", "name", "size", "mmio_addr"]);
  for (const k of Object.keys(kv))
    if (!known.has(k))
      throw new OvmsError("USAGE", `--device ${v}: unknown key "${k}" (type, name, size, mmio_addr)`);
  if (kv.type !== "ivshmem") throw new OvmsError("USAGE", `--device ${v}: type must be ivshmem`);
  if (!kv.name) throw new OvmsError("USAGE", `--device ${v}: name= is required`);
  if (!kv.size) throw new OvmsError("USAGE", `--device ${v}: size= is required`);
  const d: Device = { type: "ivshmem", name: kv.name, size: parseSize(kv.size, "--device size") };
  if (kv.mmio_addr) d.mmio_addr = kv.mmio_addr;
  return d;
}

/** register adds `ovm build`. */
export function register(program: Command): void {
  program
    .command("build")
    .description("pack a kernel, initrd and disk layers into an OVMS artifact in the local store")
    .requiredOption("-t, --tag <ref>", "reference to name the artifact, e.g. example/vm:1.0")
    .option("-f, --file <path>", "build file (YAML or JSON, see docs/build-file.md)")
    .option("--kernel <file>", "guest kernel (bzImage)")
    .option("--initrd <file>", "initial ramdisk")
    .option(
      "--disk <file[:qcow2|raw]>",
      "disk layer, repeatable, base first; later ones are qcow2 diffs",
      collect,
    )
    .option("--cmdline <args>", "kernel command line")
    .option("--name <name>", "artifact name (default: the repository of --tag)")
    .option("--version <version>", "artifact version (default: the tag of --tag)")
    .option("--device <spec>", "device: type=ivshmem,name=NAME,size=SIZE (repeatable)", collect)
    .option(
      "--expose <port[/tcp|udp]>",
      "a port the guest serves, recorded in the manifest's network.exposedPorts (repeatable); publishing is ovm run -p",
      collect,
    )
    .option("--network-required", "the guest needs a NIC: it never runs with --network none")
    .option("--memory <size>", "default guest memory, e.g. 256M")
    .option("--cpus <n>", "default vCPUs (1 to 255)", cpuCount)
    .addOption(new Option("--created <time>", "creation time (RFC 3339) for reproducible builds").hideHelp())
    .addHelpText(
      "after",
      `
Beside -f, the flags --kernel, --initrd, --cmdline, --disk (the whole list), --device (the whole
list), --expose, --network-required, --memory, --cpus, --name and --version replace what the
build file says (docs/build-file.md).

Examples:
  ovm build -t example/vm:1.0 --kernel vmlinuz --initrd initrd.img \\
      --disk base.qcow2 --disk diff.qcow2:qcow2 --cmdline "console=ttyS0" --memory 256M
  ovm build -t example/vm:1.0 -f ovm.yaml --memory 512M`,
    )
    .action(async (opts, cmd: Command) => {
      const out = new Printer(globals(cmd));
      const spec = opts.file ? await loadBuildFile(opts.file) : fromFlags(opts);
      if (opts.file) {
        // Flags given beside a build file override it.
        if (opts.kernel) spec.kernel.path = opts.kernel;
        if (opts.cmdline !== undefined) spec.kernel.args = opts.cmdline;
        if (opts.initrd) spec.initrd = { path: opts.initrd };
        if (opts.disk) spec.disks = opts.disk.map(parseDiskFlag);
        if (opts.name) spec.name = opts.name;
        if (opts.version) spec.version = opts.version;
        if (opts.device) spec.devices = opts.device.map(parseDeviceFlag);
        if (opts.expose || opts.networkRequired) spec.network = networkFromFlags(opts, spec.network);
        if (opts.memory)
          spec.resources = { ...(spec.resources ?? {}), memory: parseSize(opts.memory, "--memory") };
        if (opts.cpus) spec.resources = { ...(spec.resources ?? {}), vcpus: opts.cpus };
      }
      if (opts.created) spec.metadata = { ...(spec.metadata ?? {}), created: opts.created };
      const store = await openStore(cmd, "write");
      const result = await build(store, spec, opts.tag, (step) => out.info(step));
      out.result(
        {
          reference: result.reference,
          digest: result.descriptor.digest,
          size: result.descriptor.size,
          manifest: result.manifest,
        },
        () => `${result.reference} ${result.descriptor.digest}`,
      );
    });
}

function fromFlags(opts: Record<string, any>): BuildSpec {
  if (!opts.kernel) throw new OvmsError("USAGE", "build needs --kernel FILE (or a build file with -f)");
  const tag: string = opts.tag;
  const slash = tag.lastIndexOf("/");
  const colon = tag.lastIndexOf(":");
  const repo = colon > slash ? tag.slice(0, colon) : tag.split("@")[0];
  const spec: BuildSpec = {
    name:
      opts.name ??
      repo
        .split("/")
        .filter((p: string) => !p.includes(".") && !p.includes(":") && p !== "localhost")
        .join("/"),
    version: opts.version ?? (colon > slash ? tag.slice(colon + 1) : "latest"),
    kernel: { path: opts.kernel, ...(opts.cmdline !== undefined ? { args: opts.cmdline } : {}) },
  };
  if (opts.initrd) spec.initrd = { path: opts.initrd };
  if (opts.disk) spec.disks = opts.disk.map(parseDiskFlag);
  if (opts.device) spec.devices = opts.device.map(parseDeviceFlag);
  if (opts.expose || opts.networkRequired) spec.network = networkFromFlags(opts);
  if (opts.memory || opts.cpus) {
    spec.resources = {};
    if (opts.memory) spec.resources.memory = parseSize(opts.memory, "--memory");
    if (opts.cpus) spec.resources.vcpus = opts.cpus;
  }
  return spec;
}

/** networkFromFlags is the manifest's `network` from `--expose` and `--network-required`, over a build file's. */
function networkFromFlags(opts: Record<string, any>, from: Network = {}): Network {
  const n: Network = { ...from };
  if (opts.expose) n.exposedPorts = opts.expose as string[];
  if (opts.networkRequired) n.required = true;
  return n;
}
