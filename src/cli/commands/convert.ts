import type { Command } from "commander";
import { formatSize, parseSize } from "../../core/size.js";
import { convert, type ConvertOptions, type ConvertResult } from "../../artifact/convert/index.js";
import { parsePlatform } from "../../registry/platform.js";
import { Printer, globals, openStore } from "../context.js";
import { interruptible, positiveInt } from "./copy.js";

/**
 * register adds `ovm convert SOURCE -t REF`: a container image (registry, `docker://`,
 * `oci:DIR[:TAG]`) becomes a containerMode artifact that `ovm run` runs like `docker run`; a
 * runtime-spec config.json with a `vm` section becomes the VM it describes, with every field
 * that cannot be carried over named, and why.
 */
export function register(program: Command): void {
  program
    .command("convert")
    .description("make an OVMS artifact from a container image or a runtime-spec vm config.json")
    .argument(
      "<source>",
      "REGISTRY/REPO:TAG, docker://REF, oci:DIR[:TAG], or a config.json with a vm section",
    )
    .requiredOption("-t, --tag <ref>", "reference to name the artifact, e.g. tools/busybox:vm")
    .option("--size-buffer <size>", "free space in the root filesystem beyond the image's content", "256M")
    .option("--max-size <size>", "refuse a root filesystem larger than this", "64G")
    .option("--platform <os/arch>", "image platform to take from a multi-platform image", "linux/amd64")
    .option("--name <name>", "artifact name (default: the repository of --tag)")
    .option("--memory <size>", "default guest memory of a converted image", "256M")
    .option("--cpus <n>", "default vCPUs of a converted image", positiveInt("--cpus"))
    .option("--kernel <file>", "another generic guest kernel than the one scripts/ovms-init/build.sh built")
    .option("--initrd <file>", "another OVMS-Init initrd than the one scripts/ovms-init/build.sh built")
    .addHelpText(
      "after",
      `
A container image becomes a VM: its layers (whiteouts applied) are one ext4 root filesystem,
booted by the generic kernel and OVMS-Init, which runs the image's entrypoint and cmd with its
environment, working folder and user, and reports the program's exit status. Unpacked layers
are cached in the store, so images that share base layers share the work.

Examples:
  ovm convert 127.0.0.1:5000/tools/busybox:1.36 -t tools/busybox:vm
  ovm convert oci:./busybox-layout:1.36 -t tools/busybox:vm --size-buffer 1G
  ovm run --rm tools/busybox:vm -- echo hello
  ovm convert ./bundle/config.json -t legacy/vm:1      a runtime-spec config with a vm section`,
    )
    .action(async (source: string, flags: ConvertFlags, cmd: Command) => {
      const out = new Printer(globals(cmd));
      const store = await openStore(cmd);
      const opts: ConvertOptions = {
        tag: flags.tag,
        sizeBuffer: parseSize(flags.sizeBuffer, "--size-buffer"),
        maxSize: parseSize(flags.maxSize, "--max-size"),
        platform: parsePlatform(flags.platform),
        memory: parseSize(flags.memory, "--memory"),
        progress: (line) => out.info(line),
      };
      if (flags.name !== undefined) opts.name = flags.name;
      if (flags.cpus !== undefined) opts.cpus = flags.cpus;
      if (flags.kernel !== undefined) opts.kernel = flags.kernel;
      if (flags.initrd !== undefined) opts.initrd = flags.initrd;
      // Ctrl-C stops it cleanly: temp files go, nothing is named (exit 130).
      const r = await interruptible(globals(cmd), `conversion of ${source}`, { stop: () => {} }, (signal) =>
        convert(store, source, { ...opts, signal }),
      );
      if (r.done) out.result(summary(r.value), () => text(r.value));
    });
}

/** summary is the JSON result: what was made, from what, and what was left out. */
function summary(r: ConvertResult) {
  return {
    reference: r.reference,
    digest: r.descriptor.digest,
    source: r.source,
    containerMode: r.manifest.containerMode === true,
    ...(r.bootstrap ? { bootstrap: r.bootstrap } : {}),
    ...(r.layers ? { layers: r.layers } : {}),
    ...(r.disk ? { disk: r.disk } : {}),
    ...(r.carried ? { carried: r.carried } : {}),
    ...(r.notCarried ? { notCarried: r.notCarried } : {}),
    timings: r.timings,
  };
}

/** text is the result for people; for a vm config, every field not carried over, with why. */
function text(r: ConvertResult): string {
  const lines = [`${r.reference} ${r.descriptor.digest}`];
  if (r.disk)
    lines.push(
      `root filesystem: ${formatSize(r.disk.contentBytes)} of content in ${formatSize(r.disk.sizeBytes)} of ext4`,
    );
  if (r.bootstrap?.exposedPorts?.length) lines.push(`exposed ports: ${r.bootstrap.exposedPorts.join(", ")}`);
  for (const c of r.carried ?? []) lines.push(`carried: ${c.field} → ${c.to}${c.note ? ` (${c.note})` : ""}`);
  for (const n of r.notCarried ?? [])
    lines.push(`not carried: ${n.field} = ${JSON.stringify(n.value)}: ${n.reason}`);
  return lines.join("\n");
}

interface ConvertFlags {
  tag: string;
  sizeBuffer: string;
  maxSize: string;
  platform: string;
  name?: string;
  memory: string;
  cpus?: number;
  kernel?: string;
  initrd?: string;
}
