import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { OvmsError } from "../../core/errors.js";
import type { Resources, RuntimeHints } from "../../core/manifest.generated.js";
import type { Store } from "../../store/store.js";
import { build, type BuildSpec, type DiskFormat } from "../build.js";
import { run } from "../exec.js";
import { imageInfo } from "../qemu-img.js";
import {
  artifactIdentity,
  createdTime,
  type Carried,
  type ConvertOptions,
  type ConvertResult,
  type NotCarried,
} from "./options.js";

/**
 * A runtime-spec `config.json` with a `vm` section, as VM-based container runtimes (Kata
 * style) are configured (https://github.com/opencontainers/runtime-spec/blob/main/config-vm.md),
 * the members a conversion reads.
 */
export interface VmConfig {
  ociVersion?: string;
  vm: {
    hypervisor?: { path?: string; parameters?: string[] };
    kernel: { path: string; parameters?: string[] | string; initrd?: string };
    image?: { path: string; format?: string };
    hwConfig?: { vcpus?: number; memory?: number } & Record<string, unknown>;
  } & Record<string, unknown>;
  linux?: { resources?: Record<string, unknown> } & Record<string, unknown>;
  annotations?: Record<string, unknown>;
  [k: string]: unknown;
}

/** isVmConfig recognises a runtime-spec config with a `vm` section by its content. */
export function isVmConfig(doc: unknown): doc is VmConfig {
  const vm = (doc as { vm?: { kernel?: { path?: unknown } } } | null)?.vm;
  return typeof vm === "object" && vm !== null && typeof vm.kernel?.path === "string";
}

/** QEMU_FORMATS maps the runtime-spec image formats to qemu-img's names. */
const QEMU_FORMATS: Record<string, string> = {
  raw: "raw",
  qcow2: "qcow2",
  vdi: "vdi",
  vmdk: "vmdk",
  vhd: "vpc",
};

/** VMM_FAMILIES maps a hypervisor binary's name to the runtime adapter name OVMS uses for it. */
const VMM_FAMILIES: [RegExp, string][] = [
  [/^qemu(-system-x86_64|-kvm)?$/, "qemu"],
  [/^firecracker$/, "firecracker"],
  [/^cloud-hypervisor$/, "cloud-hypervisor"],
];

const WHY = {
  vmmParams:
    "VMM command-line parameters are not portable: an OVMS runtime builds the VMM's command line itself from the manifest (machine, memory, vCPUs, devices)",
  vmmPath: "an OVMS runtime finds its own VMM binary; a host path does not travel with an artifact",
  passthrough: "host device passthrough is outside OVMS v0.1 (rfc §10)",
  process:
    "the VM boots its image's own init, and OVMS has no agent in such a guest to start a container process; to run a container's program in a VM, convert the container image (ovm convert IMAGE)",
  root: "the container's root filesystem would be shared into the VM by an in-guest agent; an OVMS VM boots from vm.image (convert the container image itself to run it as a VM)",
  isolation: "host-side container isolation; in an OVMS VM the hypervisor is the boundary",
  cgroup: "a cgroup limit of a host-side container; OVMS v0.1 knows guest memory and vCPUs only",
  mounts: "host mounts into a container have no OVMS equivalent: a VM sees its disk chain only (rfc §10)",
  hooks:
    "runtime hooks run on the host around a container's life; OVMS runs no host programs for an artifact",
  platform: "not a Linux VM setting",
  unknown: "not a member this converter knows",
};

/**
 * convertVmConfig turns a runtime-spec `vm` config into an OVMS artifact tagged `opts.tag`:
 * `vm.kernel` (path, parameters, initrd) and `vm.image` (path, format; vdi/vmdk/vhd become
 * qcow2) are the VM; `vm.hwConfig` and `linux.resources` give its memory and vCPUs; the
 * hypervisor's family becomes `runtimeHints.preferredRuntime`; annotations become labels.
 * Every other member is reported in `notCarried`, with the reason.
 */
export async function convertVmConfig(
  store: Store,
  path: string,
  opts: ConvertOptions,
): Promise<ConvertResult> {
  const t0 = performance.now();
  const say = opts.progress ?? (() => {});
  const { name, version, reference } = artifactIdentity(opts);
  let doc: unknown;
  try {
    doc = JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code === "ENOENT" ? "FILE_NOT_FOUND" : "CONFIG_INVALID";
    throw new OvmsError(code, `${path}: ${(e as Error).message}`);
  }
  if (!isVmConfig(doc))
    throw new OvmsError(
      "IMAGE_UNSUPPORTED",
      `${path}: not a runtime-spec config.json with a vm section (vm.kernel.path is required), nor an image reference`,
    );
  const cfg = doc;
  const bundle = dirname(path);
  const carried: Carried[] = [];
  const notCarried: NotCarried[] = [];
  const skip = (field: string, value: unknown, reason: string) => notCarried.push({ field, value, reason });
  const file = async (field: string, p: unknown): Promise<string> => {
    if (typeof p !== "string" || !p)
      throw new OvmsError("CONFIG_INVALID", `${path}: ${field} must be a path`);
    const abs = isAbsolute(p) ? p : resolve(bundle, p);
    const st = await stat(abs).catch(() => undefined);
    if (!st?.isFile()) throw new OvmsError("FILE_NOT_FOUND", `${path}: ${field} ${p} is not a readable file`);
    return abs;
  };

  const vm = cfg.vm;
  const kernelPath = await file("vm.kernel.path", vm.kernel.path);
  carried.push({ field: "vm.kernel.path", to: "kernel" });
  const args = kernelArgs(vm.kernel.parameters, skip);
  if (vm.kernel.parameters !== undefined) carried.push({ field: "vm.kernel.parameters", to: "kernel.args" });
  if (!/(^|\s)console=/.test(args.join(" "))) {
    args.push("console=ttyS0");
    carried.push({
      field: "(added)",
      to: "kernel.args",
      note: "console=ttyS0: an OVMS runtime reads the guest's console on the first serial port",
    });
  }
  const spec: BuildSpec = { name, version, kernel: { path: kernelPath, args: args.join(" ") } };
  if (vm.kernel.initrd !== undefined) {
    spec.initrd = { path: await file("vm.kernel.initrd", vm.kernel.initrd) };
    carried.push({ field: "vm.kernel.initrd", to: "initrd" });
  }
  for (const k of Object.keys(vm.kernel))
    if (!["path", "parameters", "initrd"].includes(k))
      skip(`vm.kernel.${k}`, vm.kernel[k as keyof typeof vm.kernel], WHY.unknown);

  const hints: RuntimeHints = {};
  if (vm.hypervisor) {
    const family = VMM_FAMILIES.find(([re]) => re.test(basename(vm.hypervisor?.path ?? "")))?.[1];
    if (family) {
      hints.preferredRuntime = [family];
      carried.push({
        field: "vm.hypervisor.path",
        to: "runtimeHints.preferredRuntime",
        note: `the VMM family (${family}); ${WHY.vmmPath}`,
      });
    } else skip("vm.hypervisor.path", vm.hypervisor.path, WHY.vmmPath);
    (vm.hypervisor.parameters ?? []).forEach((p, i) =>
      skip(`vm.hypervisor.parameters[${i}]`, p, WHY.vmmParams),
    );
  }

  const resources: Resources = {};
  const hw = vm.hwConfig ?? {};
  if (hw.vcpus !== undefined) setVcpus(resources, "vm.hwConfig.vcpus", hw.vcpus, carried, skip);
  if (hw.memory !== undefined) setMemory(resources, "vm.hwConfig.memory", hw.memory, carried, skip);
  for (const k of Object.keys(hw))
    if (k !== "vcpus" && k !== "memory") skip(`vm.hwConfig.${k}`, hw[k], WHY.passthrough);
  cgroupResources(cfg.linux?.resources, resources, carried, skip);

  const work = await mkdtemp(join(store.workDir, "convert-vm-"));
  try {
    if (vm.image) {
      const disk = await diskOf(await file("vm.image.path", vm.image.path), vm.image.format, work, path);
      spec.disks = [disk.disk];
      carried.push({ field: "vm.image", to: "diskLayers[0]", ...(disk.note ? { note: disk.note } : {}) });
    }
    for (const k of Object.keys(vm))
      if (!["hypervisor", "kernel", "image", "hwConfig"].includes(k)) skip(`vm.${k}`, vm[k], WHY.unknown);

    for (const [k, v] of Object.entries(cfg)) {
      if (k === "vm" || k === "ociVersion") continue;
      if (k === "annotations") continue;
      if (k === "process")
        for (const [pk, pv] of Object.entries((v as object) ?? {})) skip(`process.${pk}`, pv, WHY.process);
      else if (k === "root") skip("root", v, WHY.root);
      else if (k === "mounts") skip("mounts", v, WHY.mounts);
      else if (k === "hooks") skip("hooks", v, WHY.hooks);
      else if (k === "hostname" || k === "domainname") skip(k, v, WHY.isolation);
      else if (k === "linux")
        for (const [lk, lv] of Object.entries((v as object) ?? {})) {
          if (lk !== "resources") skip(`linux.${lk}`, lv, WHY.isolation);
        }
      else if (["solaris", "windows", "zos"].includes(k)) skip(k, v, WHY.platform);
      else skip(k, v, WHY.unknown);
    }
    const labels = Object.fromEntries(
      Object.entries(cfg.annotations ?? {}).filter((e): e is [string, string] => typeof e[1] === "string"),
    );
    if (Object.keys(labels).length) carried.push({ field: "annotations", to: "metadata.labels" });
    if (Object.keys(resources).length) spec.resources = resources;
    if (hints.preferredRuntime) spec.runtimeHints = hints;
    // Reproducible: the newest of the files it is made of, not the clock.
    const mtimes = await Promise.all(
      [path, kernelPath, spec.initrd?.path, vm.image ? await file("vm.image.path", vm.image.path) : undefined]
        .filter((p): p is string => !!p)
        .map(async (p) => Math.floor((await stat(p)).mtimeMs / 1000)),
    );
    const created = createdTime(new Date(Math.max(...mtimes) * 1000).toISOString());
    spec.metadata = {
      created: new Date(created * 1000).toISOString().replace(/\.\d{3}Z$/, "Z"),
      description: `converted from the runtime-spec vm config ${path}`,
      ...(Object.keys(labels).length ? { labels } : {}),
    };
    const built = await build(store, spec, reference, say);
    return {
      reference: built.reference,
      descriptor: built.descriptor,
      manifest: built.manifest,
      source: { kind: "vm-config", name: path },
      carried,
      notCarried,
      timings: { totalMs: Math.round(performance.now() - t0) },
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * kernelArgs joins `vm.kernel.parameters` into one command line: an array (today's spec) or
 * a space-separated string (its first draft); a parameter with a space is double-quoted, as
 * the kernel reads it; one holding a double quote cannot be written and is reported.
 */
function kernelArgs(
  params: string[] | string | undefined,
  skip: (f: string, v: unknown, r: string) => void,
): string[] {
  if (params === undefined) return [];
  if (typeof params === "string") return params.split(/\s+/).filter(Boolean);
  const out: string[] = [];
  params.forEach((p, i) => {
    if (typeof p !== "string") skip(`vm.kernel.parameters[${i}]`, p, "not a string");
    else if (p.includes('"'))
      skip(
        `vm.kernel.parameters[${i}]`,
        p,
        "the kernel command line cannot carry a double quote inside a parameter",
      );
    else if (/\s/.test(p)) out.push(`"${p}"`);
    else if (p) out.push(p);
  });
  return out;
}

function setVcpus(
  r: Resources,
  field: string,
  n: unknown,
  carried: Carried[],
  skip: (f: string, v: unknown, reason: string) => void,
): void {
  if (r.vcpus !== undefined) return skip(field, n, "vm.hwConfig.vcpus decides the vCPUs");
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > 255)
    return skip(field, n, "vCPUs must be 1-255");
  r.vcpus = n;
  carried.push({ field, to: "resources.vcpus" });
}

function setMemory(
  r: Resources,
  field: string,
  n: unknown,
  carried: Carried[],
  skip: (f: string, v: unknown, reason: string) => void,
): void {
  if (r.memory !== undefined) return skip(field, n, "vm.hwConfig.memory decides the memory");
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 16 << 20)
    return skip(field, n, "guest memory must be at least 16 MiB (bytes)");
  r.memory = n;
  carried.push({ field, to: "resources.memory" });
}

/** cgroupResources reads `linux.resources`: memory.limit and the CPU quota or set give memory and vCPUs; the rest is reported. */
function cgroupResources(
  res: Record<string, unknown> | undefined,
  r: Resources,
  carried: Carried[],
  skip: (f: string, v: unknown, reason: string) => void,
): void {
  for (const [k, v] of Object.entries(res ?? {})) {
    const o = (v ?? {}) as Record<string, unknown>;
    if (k === "memory") {
      for (const [mk, mv] of Object.entries(o)) {
        if (mk === "limit") setMemory(r, "linux.resources.memory.limit", mv, carried, skip);
        else skip(`linux.resources.memory.${mk}`, mv, WHY.cgroup);
      }
    } else if (k === "cpu") {
      const cpus = typeof o.cpus === "string" ? countCpus(o.cpus) : undefined;
      const quota =
        typeof o.quota === "number" && typeof o.period === "number" && o.period > 0 && o.quota > 0
          ? Math.ceil(o.quota / o.period)
          : undefined;
      if (cpus !== undefined) setVcpus(r, "linux.resources.cpu.cpus", cpus, carried, skip);
      else if (quota !== undefined) setVcpus(r, "linux.resources.cpu.quota", quota, carried, skip);
      for (const [ck, cv] of Object.entries(o)) {
        if (ck === "cpus" && cpus !== undefined) continue;
        if ((ck === "quota" || ck === "period") && cpus === undefined && quota !== undefined) continue;
        skip(`linux.resources.cpu.${ck}`, cv, WHY.cgroup);
      }
    } else skip(`linux.resources.${k}`, v, WHY.cgroup);
  }
}

/** countCpus counts a cpuset list such as `0-3,6`. */
function countCpus(list: string): number | undefined {
  let n = 0;
  for (const part of list.split(",")) {
    const m = /^\s*(\d+)(?:-(\d+))?\s*$/.exec(part);
    if (!m) return undefined;
    n += m[2] ? Number(m[2]) - Number(m[1]) + 1 : 1;
  }
  return n || undefined;
}

/**
 * diskOf makes `vm.image` a disk an artifact can carry: raw and a self-contained qcow2 as
 * they are; a qcow2 with a backing file flattened, and vdi, vmdk and vhd converted, into a
 * qcow2 in `work` (qemu-img). The format is checked against the file.
 */
async function diskOf(
  path: string,
  format: string | undefined,
  work: string,
  config: string,
): Promise<{ disk: { path: string; format: DiskFormat }; note?: string }> {
  const fmt = format ?? "raw";
  const qemuFmt = QEMU_FORMATS[fmt];
  if (!qemuFmt)
    throw new OvmsError(
      "IMAGE_UNSUPPORTED",
      `${config}: vm.image.format "${fmt}" is not one of ${Object.keys(QEMU_FORMATS).join(", ")}`,
    );
  const info = await imageInfo(path);
  if (info.format !== qemuFmt)
    throw new OvmsError(
      "IMAGE_UNSUPPORTED",
      `${config}: vm.image ${path} is ${info.format}, not ${fmt} as vm.image.format says`,
    );
  if ((fmt === "raw" || fmt === "qcow2") && !info.backingFilename) return { disk: { path, format: fmt } };
  const out = join(work, "image.qcow2");
  await run("qemu-img", ["convert", "-q", "-f", qemuFmt, "-O", "qcow2", path, out], {
    timeoutMs: 30 * 60_000,
  });
  return {
    disk: { path: out, format: "qcow2" },
    note: info.backingFilename
      ? `flattened: its backing file ${info.backingFilename} is merged in`
      : `converted from ${fmt} to qcow2`,
  };
}
