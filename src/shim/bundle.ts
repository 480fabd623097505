import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { isAbsolute, join } from "node:path";
import type { BootstrapConfig } from "../core/bootstrap.js";
import { OvmsError } from "../core/errors.js";
import { run } from "../artifact/exec.js";

/**
 * ARTIFACT_ANNOTATION names an OVMS artifact on a container (rfc §6.8): the container runs as
 * that artifact (a store or registry reference, a RAM-snapshot artifact restored) instead of
 * its image's root filesystem converted.
 */
export const ARTIFACT_ANNOTATION = "ovms.artifact";

/** CRI_CONTAINER_TYPE is the annotation the CRI plugin sets to `sandbox` on a pod's pause container. */
export const CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type";

/** BundleSpec is what the shim reads from a bundle's config.json (OCI runtime spec). */
export interface BundleSpec {
  bootstrap: BootstrapConfig;
  /** The rootfs directory the spec names (`root.path`), absolute. */
  rootPath: string;
  annotations: Record<string, string>;
  /** Memory limit (bytes) from linux.resources, when set. */
  memory?: number;
}

/** Mount is a containerd.types.Mount: how the snapshotter's rootfs is to be mounted. */
export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

/**
 * readBundle reads `BUNDLE/config.json` (https://github.com/opencontainers/runtime-spec/blob/v1.1.0/config.md):
 * `process.args`, `env`, `cwd` and `user` become the bootstrap config OVMS-Init runs; a
 * missing or bad member is CONFIG_INVALID naming its JSON path.
 */
export async function readBundle(bundle: string): Promise<BundleSpec> {
  const path = join(bundle, "config.json");
  let doc: any;
  try {
    doc = JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    throw new OvmsError("CONFIG_INVALID", `${path}: ${(e as Error).message}`);
  }
  const bad = (where: string, what: string) => new OvmsError("CONFIG_INVALID", `${path}: ${where} ${what}`);
  const p = doc?.process;
  if (!p || typeof p !== "object") throw bad("process", "is missing");
  const strings = (v: unknown, where: string): string[] => {
    if (v === undefined) return [];
    if (!Array.isArray(v) || v.some((s) => typeof s !== "string"))
      throw bad(where, "must be an array of strings");
    return v as string[];
  };
  const args = strings(p.args, "process.args");
  if (!args.length || !args[0]) throw bad("process.args", "is empty: there is no program to run");
  const env = strings(p.env, "process.env");
  const cwd = p.cwd ?? "/";
  if (typeof cwd !== "string" || !cwd.startsWith("/")) throw bad("process.cwd", "must be an absolute path");
  const uid = p.user?.uid ?? 0;
  const gid = p.user?.gid ?? 0;
  if (!Number.isInteger(uid) || uid < 0) throw bad("process.user.uid", "must be a non-negative integer");
  if (!Number.isInteger(gid) || gid < 0) throw bad("process.user.gid", "must be a non-negative integer");
  const rootRel = doc?.root?.path ?? "rootfs";
  if (typeof rootRel !== "string") throw bad("root.path", "must be a path");
  const annotations = Object.fromEntries(
    Object.entries(doc?.annotations ?? {}).filter((e): e is [string, string] => typeof e[1] === "string"),
  );
  const limit = doc?.linux?.resources?.memory?.limit;
  return {
    bootstrap: {
      schemaVersion: 1,
      mediaType: "application/vnd.ovms.bootstrap.config.v1+json",
      entrypoint: args,
      env,
      workdir: cwd,
      user: { uid, gid },
    },
    rootPath: isAbsolute(rootRel) ? rootRel : join(bundle, rootRel),
    annotations,
    ...(Number.isSafeInteger(limit) && limit >= 64 << 20 ? { memory: limit } : {}),
  };
}

/**
 * rootfsDir gives the directory of the container's root filesystem: the source of a single
 * bind mount (the `native` snapshotter) is read in place; other mounts (overlayfs) are
 * mounted on `rootPath` as runc's shim does (root only) and named in `mounted` for the
 * cleanup; no mounts means containerd prepared `rootPath` itself.
 */
export async function rootfsDir(
  rootPath: string,
  mounts: Mount[],
): Promise<{ dir: string; mounted: string[] }> {
  if (mounts.length === 0) return { dir: rootPath, mounted: [] };
  if (mounts.length === 1 && (mounts[0].type === "bind" || mounts[0].options.some((o) => /^r?bind$/.test(o))))
    return { dir: mounts[0].source, mounted: [] };
  await mkdir(rootPath, { recursive: true });
  const mounted: string[] = [];
  try {
    for (const m of mounts) {
      const target = m.target ? join(rootPath, m.target) : rootPath;
      const opts = m.options.length ? ["-o", m.options.join(",")] : [];
      await run("mount", ["-t", m.type, ...opts, m.source, target], { timeoutMs: 60_000 });
      mounted.unshift(target);
    }
  } catch (e) {
    await unmountAll(mounted);
    throw new OvmsError(
      "START_FAILED",
      `mounting the container's root filesystem (${mounts.map((m) => m.type).join(", ")}) on ${rootPath}: ${(e as Error).message}; the native snapshotter needs no mount`,
      { cause: e },
    );
  }
  return { dir: rootPath, mounted };
}

/** unmountAll unmounts what rootfsDir mounted, last first; one already gone is fine. */
export async function unmountAll(targets: string[]): Promise<void> {
  for (const t of targets) await run("umount", [t], { timeoutMs: 60_000 }).catch(() => {});
}

/** ShimRecord is what a shim keeps in its bundle, so that `delete` can clean up after a shim that died. */
export interface ShimRecord {
  instanceId?: string;
  mounted: string[];
  layout?: string;
  socket?: string;
}

const RECORD = "ovms-shim.json";

/** saveRecord writes the record (replacing it). */
export async function saveRecord(bundle: string, r: ShimRecord): Promise<void> {
  await writeFile(join(bundle, `${RECORD}.tmp`), JSON.stringify(r));
  await rename(join(bundle, `${RECORD}.tmp`), join(bundle, RECORD));
}

/** loadRecord reads the record, or an empty one. */
export async function loadRecord(bundle: string): Promise<ShimRecord> {
  try {
    return JSON.parse(await readFile(join(bundle, RECORD), "utf8")) as ShimRecord;
  } catch {
    return { mounted: [] };
  }
}

/** removeLayout deletes the artifact layout a Create made in the bundle. */
export async function removeLayout(layout: string | undefined): Promise<void> {
  if (layout) await rm(layout, { recursive: true, force: true });
}
