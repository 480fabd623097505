import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Digest } from "../core/digest.js";
import type { Descriptor } from "../core/oci.js";
import { Store } from "../store/store.js";
import { build, type BuildSpec } from "../artifact/build.js";
import {
  addRamSnapshot,
  replaceBaseWithTwoEntries,
  replaceDiffWithHostBacking,
  rewriteArtifact,
} from "./fixture-patch.js";
import { IGNORE_ACPI, type GuestAssets } from "./guest.js";

/**
 * The artifacts the runtime suite starts, built by the suite itself from the guest's parts,
 * each into an OCI image layout folder of its own (rfc §3.7), so that a runtime can be handed
 * a path on its UNIX socket — or, with a registry, a reference to a copy pushed there.
 */

/** FixtureName names one artifact of the suite. */
export type FixtureName =
  "ivshmem" | "counter" | "extensions" | "invalid" | "uefi" | "zstd" | "backing-path" | "tar-extra";

/** Fixture is one built artifact and what to send as `manifest` in `POST /start` to start it. */
export interface Fixture {
  name: FixtureName;
  /** layout is the OCI image layout folder holding it (and only it). */
  layout: string;
  descriptor: Descriptor;
  digest: Digest;
  /** manifest is the layout's absolute path, or its registry reference when a registry is used. */
  manifest: string;
}

/** Fixtures are the suite's artifacts by name. */
export type Fixtures = Record<FixtureName, Fixture>;

/** FixtureOptions say what to build from and where the runtime will get it. */
export interface FixtureOptions {
  /** work is a folder of the suite's own (the layouts go to work/layouts). */
  work: string;
  assets: GuestAssets;
  /** cmdline is every fixture's kernel command line before its `ovms.mode=…`. */
  cmdline: string;
  /**
   * push copies a fixture to where the runtime takes it from and returns the reference to
   * start (registry mode); without it the layout's path is what the runtime is given.
   */
  push?: (store: Store, tag: string, name: FixtureName) => Promise<string>;
  onStep?: (line: string) => void;
}

/** MIB is a mebibyte: the fixtures keep guest memory small, so snapshots stay small. */
const MIB = 1 << 20;

/**
 * buildFixtures builds every fixture:
 * - `ivshmem`: kernel, initrd, base + diff disk layers, one 1 MiB ivshmem device (so q35),
 *   `ovms.mode=ivshmem`, a cold-start target to report back;
 * - `counter`: no device (so microvm), `ovms.mode=counter`, and a guest that ignores the ACPI
 *   power button (a graceful stop must escalate); the one the snapshot level snapshots;
 * - `extensions`: initrd only, an unknown `extensions` key (a runtime must ignore it);
 * - `invalid`: two schema problems in the OVMS manifest (an unknown member, an empty version);
 * - `uefi`: `metadata.platform.uefi: true` (v0.1 refuses it);
 * - `zstd`: a RAM snapshot with `compression: "zstd"` (reserved: refused);
 * - `backing-path`: a diff whose qcow2 backing name is a host path, not the parent digest;
 * - `tar-extra`: a base layer tar with a second entry.
 */
export async function buildFixtures(opts: FixtureOptions): Promise<Fixtures> {
  const a = opts.assets;
  const root = join(resolve(opts.work), "layouts");
  await mkdir(root, { recursive: true });
  const scratch = join(resolve(opts.work), "scratch");
  await mkdir(scratch, { recursive: true });
  const args = (mode: string, ...more: string[]) => [opts.cmdline, `ovms.mode=${mode}`, ...more].join(" ");
  const disks = [{ path: a.base }, { path: a.diff }];
  const base: Omit<BuildSpec, "name" | "kernel"> = {
    version: "1",
    initrd: { path: a.initrd },
    metadata: { description: "built by ovm conformance" },
  };
  const specs: Record<FixtureName, BuildSpec> = {
    ivshmem: {
      ...base,
      name: "ovms-conformance/ivshmem",
      kernel: { path: a.kernel, args: args("ivshmem") },
      disks,
      devices: [{ type: "ivshmem", name: "shm0", size: MIB }],
      resources: { memory: 192 * MIB, vcpus: 1 },
      runtimeHints: { coldStartTargetMs: 600_000 },
    },
    counter: {
      ...base,
      name: "ovms-conformance/counter",
      kernel: { path: a.kernel, args: args("counter", IGNORE_ACPI) },
      disks,
      resources: { memory: 128 * MIB, vcpus: 1 },
    },
    extensions: {
      ...base,
      name: "ovms-conformance/extensions",
      kernel: { path: a.kernel, args: args("idle") },
      // Not less: with 64 MiB the demo kernel resets ~0.1 s after QEMU starts (QEMU exits,
      // -no-reboot), which a start saw as "QEMU did not start" about once in five.
      resources: { memory: 128 * MIB, vcpus: 1 },
      extensions: { "org.example.conformance": { note: "a key no runtime knows; it must be ignored" } },
    },
    invalid: { ...base, name: "ovms-conformance/invalid", kernel: { path: a.kernel, args: args("idle") } },
    uefi: { ...base, name: "ovms-conformance/uefi", kernel: { path: a.kernel, args: args("idle") } },
    zstd: { ...base, name: "ovms-conformance/zstd", kernel: { path: a.kernel, args: args("idle") }, disks },
    "backing-path": {
      ...base,
      name: "ovms-conformance/backing-path",
      kernel: { path: a.kernel, args: args("idle") },
      disks,
    },
    "tar-extra": {
      ...base,
      name: "ovms-conformance/tar-extra",
      kernel: { path: a.kernel, args: args("idle") },
      disks: [{ path: a.base }],
    },
  };
  const out = {} as Fixtures;
  for (const [name, spec] of Object.entries(specs) as [FixtureName, BuildSpec][]) {
    const layout = join(root, name);
    const store = await Store.open(layout);
    const tag = `${spec.name}:1`;
    let descriptor = (await build(store, spec, tag)).descriptor;
    if (name === "invalid")
      descriptor = await rewriteArtifact(store, tag, ({ config }) => {
        config.bogus = true;
        config.version = "";
      });
    if (name === "uefi")
      descriptor = await rewriteArtifact(store, tag, ({ config }) => {
        config.metadata = { ...config.metadata, platform: { arch: "x86_64", uefi: true } };
      });
    if (name === "zstd") descriptor = await addRamSnapshot(store, tag, { compression: "zstd", scratch });
    if (name === "backing-path")
      descriptor = await replaceDiffWithHostBacking(store, tag, a.diff, resolve(a.base), scratch);
    if (name === "tar-extra") descriptor = await replaceBaseWithTwoEntries(store, tag, a.base, scratch);
    const manifest = opts.push ? await opts.push(store, tag, name) : layout;
    out[name] = { name, layout, descriptor, digest: descriptor.digest, manifest };
    opts.onStep?.(`fixture ${name}: ${descriptor.digest}${opts.push ? ` as ${manifest}` : ""}`);
  }
  return out;
}
