import { mkdir, mkdtemp, open, readFile, readdir, rename, rm, stat } from "node:fs/promises";
import { isAbsolute, join, resolve as resolvePath } from "node:path";
import type { Readable } from "node:stream";
import * as tar from "tar";
import { isDigest, type Digest } from "../core/digest.js";
import { OvmsError, ValidationError, isOvmsError } from "../core/errors.js";
import { Annotation } from "../core/media-types.js";
import type { Descriptor, ImageManifest } from "../core/oci.js";
import { formatReference, normalizeReference as normalizeRef, parseReference } from "../core/reference.js";
import { checkManifest } from "../core/validate.js";
import type { OvmsManifest } from "../core/manifest.generated.js";
import type { Store } from "../store/store.js";
import {
  layerDescriptor,
  loadArtifactByDescriptor,
  ociManifestFor,
  type Artifact,
} from "../artifact/artifact.js";
import { prepareArtifact } from "../artifact/prepare.js";
import { packSnapshot } from "../artifact/snapshot.js";
import { TERMINAL_STATES, type Runtime } from "../runtime/types.js";
import type { PreparedArtifact } from "../artifact/prepare.js";
import type {
  InstanceInfo,
  InjectRequest,
  InjectResponse,
  InstanceList,
  RemoveResponse,
  SnapshotRequest,
  SnapshotResponse,
  StartRequest,
  StartResponse,
  StopRequest,
  StopResponse,
  VersionInfo,
} from "../api/types.generated.js";
import { isPathLike } from "../api/paths.js";
import { VERSION } from "../version.js";
import { badRequest } from "./contract.js";
import { LayoutSource } from "./layout-source.js";
import type { Logger } from "./log.js";
import { toInstanceInfo } from "./wire.js";

/** PullFn brings `reference` from its registry into `store` and names it there by its full reference. */
export type PullFn = (store: Store, reference: string) => Promise<void>;

/** ControllerOptions are the parts the controller combines. */
export interface ControllerOptions {
  store: Store;
  runtime: Runtime;
  log: Logger;
  /** pull fetches a registry reference missing from the store (default: registry/copy with the docker config's credentials). */
  pull?: PullFn;
  /** Paused QEMU processes to keep per hot snapshot artifact (default 1; 0 turns the pool off). */
  warmPool?: number;
  /** Per-snapshot pool sizes, keyed by reference or manifest digest; they override `warmPool`. */
  warmPools?: Record<string, number>;
}

/**
 * Controller is the one place that combines the store, the registry, artifact preparation
 * and the runtime. Routes hand it validated requests; it answers with the contract's
 * shapes or throws OvmsErrors whose codes the edge maps to HTTP statuses.
 */
export class Controller {
  private readonly store: Store;
  private readonly runtime: Runtime;
  private readonly log: Logger;
  private readonly pull: PullFn;
  /** Names asked for by starts still in flight: the runtime sees a name only once it starts. */
  private readonly reserved = new Set<string>();
  /** Paused QEMU processes kept per hot snapshot (0: no pool). */
  private readonly warmPool: number;
  private readonly warmPools: Map<string, number>;

  constructor(opts: ControllerOptions) {
    this.store = opts.store;
    this.runtime = opts.runtime;
    this.log = opts.log;
    this.pull = opts.pull ?? pullFromRegistry;
    this.warmPool = opts.warmPool ?? 1;
    this.warmPools = new Map(
      Object.entries(opts.warmPools ?? {}).map(([k, n]) => [isDigest(k) ? k : normalizeRef(k), n]),
    );
  }

  async version(): Promise<VersionInfo> {
    const v = await this.runtime.version().catch(() => "unavailable");
    return { name: "ovmd", version: VERSION, api: "v0.1", runtime: { name: this.runtime.name, version: v } };
  }

  /**
   * start resolves `manifest` into a verified artifact in the store (pulling or importing it
   * when needed), prepares its disk chain and asks the runtime to boot it. Everything that
   * can be refused is refused before an instance exists.
   */
  async start(req: StartRequest, opts: { allowPaths?: boolean } = {}): Promise<StartResponse> {
    // A path makes the daemon read a file of its host: only for clients on the host (the socket).
    if (opts.allowPaths === false && isPathLike(req.manifest)) {
      throw badRequest("POST /start", [
        { path: "/manifest", message: "paths are accepted on the UNIX socket only; name a reference" },
      ]);
    }
    const o = req.overrides ?? {};
    const name = o.name;
    if (name !== undefined) {
      if (this.reserved.has(name)) {
        throw new OvmsError("CONFLICT", `name "${name}" is being used by an instance that is starting`);
      }
      // Reserved before the first await, so two starts with one name cannot both get past here.
      this.reserved.add(name);
    }
    try {
      const clash =
        name === undefined
          ? undefined
          : (await this.runtime.list({ all: true })).find((i) => i.name === name);
      if (clash) {
        throw new OvmsError(
          "CONFLICT",
          `name "${name}" is already used by instance ${clash.id} (${clash.state}); remove it first`,
        );
      }
      const artifact = await this.resolveArtifact(req.manifest);
      // A snapshot artifact is preloaded here (once per digest) and restored, never cold-booted.
      const prepared = await prepareArtifact(this.store, artifact);
      const info = await this.runtime.start(prepared, {
        ...(o.name !== undefined ? { name: o.name } : {}),
        ...(o.memory !== undefined ? { memory: o.memory } : {}),
        ...(o.cpus !== undefined ? { cpus: o.cpus } : {}),
        ...(o.cmdline !== undefined ? { cmdline: o.cmdline } : {}),
        ...(o.accel !== undefined ? { accel: o.accel } : {}),
        ...(o.machine !== undefined ? { machine: o.machine } : {}),
      });
      if (prepared.ramSnapshot) void this.warm(prepared);
      this.log.info("instance started", {
        id: info.id,
        name: info.name,
        artifact: artifact.reference,
        digest: artifact.descriptor.digest,
        accel: info.accel,
        machine: info.machine,
      });
      return { instance_id: info.id, status: "starting", name: info.name };
    } finally {
      if (name !== undefined) this.reserved.delete(name);
    }
  }

  /**
   * idOf resolves what a client named (id, name, or an id prefix as `ovm ps` shows it,
   * with or without the dashes) into an instance id, or NOT_FOUND.
   */
  async idOf(ref: string): Promise<string> {
    try {
      return (await this.runtime.status(ref)).id;
    } catch (e) {
      if (!isOvmsError(e, "NOT_FOUND") || !/^[0-9a-f-]{6,36}$/.test(ref)) throw e;
      const want = ref.replace(/-/g, "");
      const hits = (await this.runtime.list({ all: true })).filter((i) =>
        i.id.replace(/-/g, "").startsWith(want),
      );
      if (hits.length === 1) return hits[0].id;
      if (hits.length > 1)
        throw new OvmsError(
          "NOT_FOUND",
          `"${ref}" is the start of ${hits.length} instance ids; give more of it`,
        );
      throw e;
    }
  }

  async stop(req: StopRequest): Promise<StopResponse> {
    const opts: { timeoutMs?: number; force?: boolean } = {};
    if (req.timeout_ms !== undefined) opts.timeoutMs = req.timeout_ms;
    if (req.force !== undefined) opts.force = req.force;
    const info = await this.runtime.stop(await this.idOf(req.instance_id), opts);
    this.log.info("instance stopped", { id: info.id, state: info.state });
    return { status: TERMINAL_STATES.has(info.state) ? "exited" : "stopping" };
  }

  /**
   * snapshot captures a running instance as a snapshot artifact tagged `tag` in the store
   * (rfc §5.8): the runtime pauses it and hands over device state, memory and overlay, which
   * are packed while the guest is still paused.
   */
  async snapshot(req: SnapshotRequest): Promise<SnapshotResponse> {
    const id = await this.idOf(req.instance_id);
    if (!this.runtime.snapshot)
      throw new OvmsError(
        "NOT_IMPLEMENTED",
        `snapshot: runtime ${this.runtime.name} does not take snapshots`,
      );
    const info = await this.runtime.status(id);
    const source = await loadArtifactByDescriptor(
      this.store,
      await this.store.resolve(info.artifact.digest),
      info.artifact.reference,
    );
    const r = await this.runtime.snapshot(id, { stop: req.stop ?? false }, (c) =>
      packSnapshot(this.store, source, c, req.tag),
    );
    this.log.info("snapshot taken", {
      id,
      reference: r.reference,
      digest: r.descriptor.digest,
      ramsnap_bytes: r.ramsnap.size,
    });
    return { snapshot_ref: r.descriptor.digest, reference: r.reference, size: r.ramsnap.size };
  }

  private readonly pooled = new Set<string>();

  /** poolSizeFor is the warm-pool size of a snapshot: its own setting (by reference or digest), else the global one. */
  poolSizeFor(reference: string, digest: string): number {
    let byRef: number | undefined;
    try {
      byRef = this.warmPools.get(normalizeRef(reference));
    } catch {
      byRef = undefined; // a path or an untagged import has no reference to match
    }
    return this.warmPools.get(digest) ?? byRef ?? this.warmPool;
  }

  /**
   * warm keeps `warmPool` paused QEMU processes ready for a snapshot once it has been started
   * (it is hot), so the next start only loads device state and continues.
   */
  private async warm(prepared: PreparedArtifact): Promise<void> {
    const pool = this.runtime.pool;
    const size = this.poolSizeFor(prepared.reference, prepared.digest);
    if (!size || !pool || this.pooled.has(prepared.digest)) return;
    this.pooled.add(prepared.digest);
    // Let the /start answer go out first: spawning the pool's QEMU blocks the event loop.
    await new Promise((r) => setTimeout(r, 100));
    await pool
      .configure(prepared, size)
      .catch((e: Error) =>
        this.log.info("warm pool not filled", { digest: prepared.digest, error: e.message }),
      );
  }

  /**
   * inject decodes the data and writes it into an ivshmem region. Device, encoding and
   * bounds are checked here so a bad request is a 400 whatever the runtime would say.
   */
  async inject(req: InjectRequest): Promise<InjectResponse> {
    const mmio = req.content.mmio;
    const encoding = mmio.encoding ?? "base64";
    let data: Buffer;
    if (encoding === "base64") {
      const s = mmio.data.replace(/\s+/g, "");
      if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) {
        throw badRequest("POST /inject", [{ path: "/content/mmio/data", message: "is not valid base64" }]);
      }
      data = Buffer.from(s, "base64");
    } else {
      data = Buffer.from(mmio.data, "utf8");
    }
    const info = await this.runtime.status(await this.idOf(req.instance_id));
    const dev =
      mmio.device === undefined ? info.devices[0] : info.devices.find((d) => d.name === mmio.device);
    if (!dev) {
      const has = info.devices.map((d) => d.name).join(", ") || "none";
      throw badRequest("POST /inject", [
        mmio.device === undefined
          ? { path: "/content/mmio", message: `instance ${info.id} has no ivshmem device` }
          : {
              path: "/content/mmio/device",
              message: `instance ${info.id} has no device "${mmio.device}" (has: ${has})`,
            },
      ]);
    }
    const offset = mmio.offset ?? 0;
    if (offset + data.length > dev.size) {
      throw badRequest("POST /inject", [
        {
          path: "/content/mmio",
          message: `${data.length} bytes at offset ${offset} do not fit device ${dev.name} (${dev.size} bytes)`,
        },
      ]);
    }
    const bytes = await this.runtime.inject(info.id, { device: dev.name, offset, data });
    this.log.debug("injected", { id: info.id, device: dev.name, offset, bytes });
    return { status: "ok", bytes };
  }

  async status(id: string): Promise<InstanceInfo> {
    return toInstanceInfo(this.runtime.name, await this.runtime.status(await this.idOf(id)));
  }

  async list(all: boolean): Promise<InstanceList> {
    const list = await this.runtime.list({ all });
    return { instances: list.map((i) => toInstanceInfo(this.runtime.name, i)) };
  }

  async remove(id: string, force: boolean): Promise<RemoveResponse> {
    const info = await this.runtime.status(await this.idOf(id));
    await this.runtime.remove(info.id, { force });
    this.log.info("instance removed", { id: info.id, name: info.name });
    return { status: "removed" };
  }

  async logs(ref: string, opts: { follow: boolean; tail?: number }): Promise<Readable> {
    const id = await this.idOf(ref);
    return this.runtime.logs(
      id,
      opts.tail === undefined ? { follow: opts.follow } : { follow: opts.follow, tail: opts.tail },
    );
  }

  /**
   * resolveArtifact turns what a client named into a validated artifact in the store: a path
   * (absolute, or `./`/`../`, relative to the daemon's working folder) of an OCI layout, a
   * tar of one, or a manifest.json; else a reference, looked up in the store and pulled from
   * its registry when missing.
   */
  async resolveArtifact(manifest: string): Promise<Artifact> {
    if (isPathLike(manifest)) return this.importPath(manifest);
    const ref = parseReference(manifest);
    let desc: Descriptor;
    try {
      desc = await this.store.resolve(manifest);
    } catch (e) {
      if (!isOvmsError(e, "NOT_FOUND")) throw e;
      if (isDigest(manifest))
        throw new OvmsError(
          "ARTIFACT_NOT_FOUND",
          `${manifest}: not in the store (a bare digest cannot be pulled: name its repository)`,
        );
      this.log.info("pulling", { reference: formatReference(ref) });
      await this.pull(this.store, manifest);
      desc = await this.store.resolve(manifest).catch((e2: unknown) => {
        throw isOvmsError(e2, "NOT_FOUND")
          ? new OvmsError("ARTIFACT_NOT_FOUND", `${manifest}: not in the store after the pull`)
          : e2;
      });
    }
    return this.load(desc, manifest);
  }

  private async load(desc: Descriptor, reference: string): Promise<Artifact> {
    try {
      return await loadArtifactByDescriptor(this.store, desc, reference);
    } catch (e) {
      if (isOvmsError(e, "NOT_FOUND"))
        throw new OvmsError("ARTIFACT_NOT_FOUND", `${reference}: ${e.message}`, { cause: e });
      throw e;
    }
  }

  /** importPath imports a layout folder, a tar of one, or a manifest.json into the store. */
  private async importPath(given: string): Promise<Artifact> {
    const path = isAbsolute(given) ? given : resolvePath(given);
    let st = await stat(path).catch(() => undefined);
    let pick: string | undefined;
    let file = path;
    if (!st) {
      // PATH:REF names one artifact of a layout that holds several.
      const colon = path.lastIndexOf(":");
      const base = colon > 0 ? path.slice(0, colon) : "";
      const baseSt = base ? await stat(base).catch(() => undefined) : undefined;
      if (!baseSt) throw new OvmsError("ARTIFACT_NOT_FOUND", `${given}: no such file or folder`);
      st = baseSt;
      file = base;
      pick = path.slice(colon + 1);
    }
    if (st.isDirectory()) return this.importLayout(file, given, pick);
    if (!st.isFile()) throw new OvmsError("BAD_REQUEST", `${given}: not a file or a folder`);
    if (await isTar(file)) {
      await mkdir(this.store.workDir, { recursive: true });
      const tmp = await mkdtemp(join(this.store.workDir, "import-"));
      try {
        await extractLayoutTar(file, tmp);
        return await this.importLayout(tmp, given, pick);
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
    }
    if (pick !== undefined) throw new OvmsError("ARTIFACT_NOT_FOUND", `${given}: no such file or folder`);
    return this.importManifestFile(file, given);
  }

  /**
   * importLayout copies one artifact of an OCI layout (and its referrers) into the store,
   * untagged: an import never takes over a name of the store. The artifact is the one
   * `pick` names, else the layout's only OVMS artifact.
   */
  private async importLayout(dir: string, given: string, pick?: string): Promise<Artifact> {
    const src = await LayoutSource.open(dir);
    let root: Descriptor;
    if (pick !== undefined) {
      root = await src.resolve(pick);
    } else {
      const found = await src.artifacts();
      if (found.length === 0)
        throw new OvmsError("MANIFEST_INVALID", `${given}: the OCI layout holds no OVMS artifact`);
      if (found.length > 1) {
        const names = found.map((d) => d.annotations?.[Annotation.RefName] ?? d.digest);
        throw new OvmsError(
          "BAD_REQUEST",
          `${given}: the OCI layout holds ${found.length} artifacts (${names.join(", ")}); name one as ${given}:NAME`,
        );
      }
      root = { mediaType: found[0].mediaType, digest: found[0].digest, size: found[0].size };
    }
    const { copy } = await import("../registry/copy.js");
    await copy(src, root.digest, this.store, undefined, { referrers: true });
    this.log.info("imported", { from: given, digest: root.digest });
    return this.load(root, given);
  }

  /**
   * importManifestFile starts from a manifest.json: an OCI image manifest whose blobs are in
   * the store, or an OVMS manifest whose parts (by `ref`) are; the OCI manifest that carries
   * it is made here the way `ovm build` makes one.
   */
  private async importManifestFile(file: string, given: string): Promise<Artifact> {
    const st = await stat(file);
    if (st.size > 4 << 20)
      throw new OvmsError("MANIFEST_INVALID", `${given}: larger than a manifest can be (${st.size} bytes)`);
    const bytes = await readFile(file);
    let doc: unknown;
    try {
      doc = JSON.parse(bytes.toString("utf8"));
    } catch {
      // The parser's message quotes the file's first bytes: not for clients who may not read it.
      throw new ValidationError(given, [
        { path: "", message: "not valid JSON (nor a tar of an OCI layout)" },
      ]);
    }
    const isOci =
      typeof doc === "object" &&
      doc !== null &&
      (doc as { schemaVersion?: unknown }).schemaVersion === 2 &&
      "config" in doc;
    let desc: Descriptor;
    if (isOci) {
      const m = doc as ImageManifest;
      for (const d of [m.config, ...(m.layers ?? [])]) {
        if (!d || !isDigest(d.digest))
          throw new OvmsError("MANIFEST_INVALID", `${given}: a descriptor has no valid digest`);
        if (!(await this.store.exists(d)))
          throw new OvmsError("ARTIFACT_NOT_FOUND", `${given}: blob ${d.digest} is not in the store`);
      }
      desc = await this.store.putManifest(m, bytes);
    } else {
      const problems = checkManifest(doc);
      if (problems.length) throw new ValidationError(given, problems);
      const ovms = doc as OvmsManifest;
      const part = async (ref: string, what: string) => {
        const size = await this.store.blobSize(ref as Digest);
        if (size === undefined)
          throw new OvmsError("ARTIFACT_NOT_FOUND", `${given}: ${what} ${ref} is not in the store`);
        return { digest: ref as Digest, size };
      };
      const layers: Descriptor[] = [
        layerDescriptor("kernel", await part(ovms.kernel.ref, "kernel"), "kernel"),
      ];
      if (ovms.initrd)
        layers.push(layerDescriptor("initrd", await part(ovms.initrd.ref, "initrd"), "initrd"));
      for (const [i, d] of (ovms.diskLayers ?? []).entries()) {
        layers.push(
          layerDescriptor("disk", await part(d.ref, `diskLayers[${i}]`), `disk-${i}.tar`, {
            [Annotation.Format]: d.format,
          }),
        );
      }
      if (ovms.ramSnapshot)
        layers.push(
          layerDescriptor("ramsnap", await part(ovms.ramSnapshot.ref, "ramSnapshot"), "ramsnap.lz4"),
        );
      const config = await this.store.putBlob(bytes);
      desc = await this.store.putManifest(ociManifestFor(config, layers, ovms));
    }
    await this.store.addUntagged(desc);
    return this.load(desc, given);
  }
}

/** isTar tells whether a file is a tar archive (ustar magic at offset 257). */
async function isTar(file: string): Promise<boolean> {
  const fh = await open(file, "r");
  try {
    const buf = Buffer.alloc(8);
    const { bytesRead } = await fh.read(buf, 0, 8, 257);
    return bytesRead >= 5 && buf.subarray(0, 5).toString("latin1") === "ustar";
  } finally {
    await fh.close();
  }
}

/**
 * extractLayoutTar unpacks a tar of an OCI layout into `dir`, refusing anything but plain
 * files and folders (links, devices and paths that climb out are never written).
 */
async function extractLayoutTar(file: string, dir: string): Promise<void> {
  let refused: string | undefined;
  try {
    await tar.x({
      file,
      cwd: dir,
      strict: true,
      filter: (path, entry) => {
        const type = (entry as tar.ReadEntry).type;
        const ok = (type === "File" || type === "Directory") && !path.split("/").includes("..");
        if (!ok) refused ??= path;
        return ok;
      },
    });
  } catch (e) {
    throw new OvmsError("MANIFEST_INVALID", `${file}: not a readable tar: ${(e as Error).message}`, {
      cause: e,
    });
  }
  if (refused !== undefined)
    throw new OvmsError(
      "MANIFEST_INVALID",
      `${file}: the tar holds "${refused}", which is not a plain file or folder`,
    );
  // A tar made with `tar -C layout .` or of the folder itself: find the layout root.
  const top = await stat(join(dir, "oci-layout")).catch(() => undefined);
  if (!top) {
    const entries = await readdir(dir);
    if (entries.length === 1 && (await stat(join(dir, entries[0], "oci-layout")).catch(() => undefined))) {
      const inner = join(dir, entries[0]);
      for (const e of await readdir(inner)) await rename(join(inner, e), join(dir, e));
    }
  }
}

/**
 * pullFromRegistry is the default PullFn: registry/copy from the reference's registry into
 * the store (referrers too, this host's platform when it is an index), named by the full
 * reference. A registry that has no such artifact, refuses access or cannot be reached is
 * ARTIFACT_NOT_FOUND, saying which. `signal` stops the pull (CANCELLED), leaving nothing half-written.
 */
export async function pullFromRegistry(
  store: Store,
  reference: string,
  opts: { signal?: AbortSignal } = {},
): Promise<void> {
  const [{ RegistryClient }, { copy }, { hostPlatform }, { RegistryError }] = await Promise.all([
    import("../registry/client.js"),
    import("../registry/copy.js"),
    import("../registry/platform.js"),
    import("../registry/registry-error.js"),
  ]);
  const r = parseReference(reference);
  const name = r.tag ? formatReference({ ...r, digest: undefined }) : undefined;
  const client = new RegistryClient({ retry: { attempts: 2 } });
  try {
    await copy(client.repository(r), r.digest ?? r.tag!, store, name, {
      referrers: true,
      platform: hostPlatform(),
      signal: opts.signal,
    });
  } catch (e) {
    if (e instanceof RegistryError) {
      const why =
        e.status === 404 || ["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "NOT_FOUND"].includes(e.code)
          ? "the registry has no such artifact"
          : e.code === "UNAUTHORIZED" || e.code === "DENIED"
            ? "the registry refused access (does it need `ovm login`?)"
            : e.code === "REGISTRY_UNREACHABLE"
              ? "the registry cannot be reached"
              : undefined;
      if (why) {
        throw new OvmsError(
          "ARTIFACT_NOT_FOUND",
          `${reference}: not in the store, and ${why}: ${e.message}`,
          {
            cause: e,
            details: { registry: r.registry, registry_code: e.code },
          },
        );
      }
    }
    throw e;
  } finally {
    await client.close();
  }
}
