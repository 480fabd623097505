import { resolve as resolvePath } from "node:path";
import type { Readable } from "node:stream";
import { isDigest } from "../core/digest.js";
import { OvmsError } from "../core/errors.js";
import { Annotation } from "../core/media-types.js";
import { formatPort } from "../core/ports.js";
import {
  formatReference,
  normalizeReference as normalizeRef,
  parseReference,
  repositoryOf,
} from "../core/reference.js";
import type { Store } from "../store/store.js";
import { loadArtifactByDescriptor, type Artifact } from "../artifact/artifact.js";
import { importPath } from "../artifact/import.js";
import { PrepareCache, prepareArtifact } from "../artifact/prepare.js";
import { resolveReference } from "../artifact/resolve.js";
import { packSnapshot } from "../artifact/snapshot.js";
import { TERMINAL_STATES, type Injection, type Runtime } from "../runtime/types.js";
import { checkRuntimeChoice } from "../runtime/adapters.js";
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
import type { Policy } from "../sign/policy.js";
import { badRequest } from "./contract.js";
import type { Logger } from "./log.js";
import { fromPortRequest, toInstanceInfo } from "./wire.js";
import { waitStarted } from "./wait-started.js";

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
  /** policy admits or refuses every start (rfc §8.3); without one nothing is checked. */
  policy?: Policy;
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
  /** What preparing remembers for the daemon's life: verified blobs, snapshot preloads in flight. */
  private readonly prepareCache = new PrepareCache();
  private readonly policy?: Policy;

  constructor(opts: ControllerOptions) {
    if (opts.policy) this.policy = opts.policy;
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
    // Asked for another runtime adapter: refused before anything is resolved or pulled.
    if (o.runtime !== undefined) checkRuntimeChoice(this.runtime.name, o.runtime, undefined, req.manifest);
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
      // runtimeHints.preferredRuntime is honoured when no runtime was asked for (rfc §2.2).
      if (o.runtime === undefined)
        checkRuntimeChoice(
          this.runtime.name,
          undefined,
          artifact.ovms.runtimeHints?.preferredRuntime,
          req.manifest,
        );
      // Admission: after the artifact is resolved and verified as an artifact, before anything
      // of it is unpacked, preloaded or started.
      if (this.policy) await this.admit(req.manifest, artifact);
      // A snapshot artifact is preloaded here (once per digest) and restored, never cold-booted.
      const prepared = await prepareArtifact(this.store, artifact, { cache: this.prepareCache });
      const info = await this.runtime.start(prepared, {
        ...(o.name !== undefined ? { name: o.name } : {}),
        ...(o.memory !== undefined ? { memory: o.memory } : {}),
        ...(o.cpus !== undefined ? { cpus: o.cpus } : {}),
        ...(o.cmdline !== undefined ? { cmdline: o.cmdline } : {}),
        ...(o.accel !== undefined ? { accel: o.accel } : {}),
        ...(o.machine !== undefined ? { machine: o.machine } : {}),
        ...(o.network !== undefined ? { network: o.network } : {}),
        ...(o.ports !== undefined ? { ports: o.ports.map(fromPortRequest) } : {}),
        ...(o.mac !== undefined ? { mac: o.mac } : {}),
        ...(o.boot_timeout_ms !== undefined ? { bootTimeoutMs: o.boot_timeout_ms } : {}),
        ...(o.args !== undefined ? { args: o.args } : {}),
        ...(o.env !== undefined ? { env: o.env } : {}),
      });
      if (prepared.ramSnapshot) void this.warm(prepared);
      this.log.info("instance started", {
        id: info.id,
        name: info.name,
        artifact: artifact.reference,
        digest: artifact.descriptor.digest,
        accel: info.accel,
        machine: info.machine,
        ...(info.network.ports.length ? { ports: info.network.ports.map(formatPort) } : {}),
      });
      const state = req.wait
        ? await waitStarted(this.runtime, info.id, info.state, req.wait_timeout_ms ?? 60_000)
        : info.state;
      return { instance_id: info.id, status: "starting", state, name: info.name };
    } finally {
      if (name !== undefined) this.reserved.delete(name);
    }
  }

  /**
   * admit applies the policy to an artifact about to start: judged by where it came from (the
   * registry repository its pull recorded, `file://PATH` for a path, this host otherwise), its
   * signatures read from the store. A refusal is POLICY_DENIED (403) naming the rule and why.
   */
  private async admit(asked: string, a: Artifact): Promise<void> {
    const { enforce, originOf } = await import("../sign/admission.js");
    const from = isPathLike(asked) ? { repository: `file://${resolvePath(asked)}` } : originOf(a.descriptor);
    try {
      const d = await enforce(
        this.policy!,
        { reference: asked, descriptor: a.descriptor, ramSnapshot: !!a.ovms.ramSnapshot, from },
        this.store,
      );
      this.log.info("admitted", {
        reference: asked,
        digest: a.descriptor.digest,
        rule: d.rule,
        why: d.reason,
      });
    } catch (e) {
      this.log.info("refused by policy", {
        reference: asked,
        digest: a.descriptor.digest,
        error: (e as Error).message,
      });
      throw e;
    }
  }

  async stop(req: StopRequest): Promise<StopResponse> {
    const opts: { timeoutMs?: number; force?: boolean } = {};
    if (req.timeout_ms !== undefined) opts.timeoutMs = req.timeout_ms;
    if (req.force !== undefined) opts.force = req.force;
    const info = await this.runtime.stop(req.instance_id, opts);
    this.log.info("instance stopped", { id: info.id, state: info.state });
    return { status: TERMINAL_STATES.has(info.state) ? "exited" : "stopping" };
  }

  /**
   * snapshot captures a running instance as a snapshot artifact tagged `tag` in the store
   * (rfc §5.8): the runtime pauses it and hands over device state, memory and overlay, which
   * are packed while the guest is still paused.
   */
  async snapshot(req: SnapshotRequest): Promise<SnapshotResponse> {
    const info = await this.runtime.status(req.instance_id);
    const id = info.id;
    if (!this.runtime.snapshot)
      throw new OvmsError(
        "NOT_IMPLEMENTED",
        `snapshot: runtime ${this.runtime.name} does not take snapshots`,
      );
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
   * inject decodes the data and has the runtime write it into an ivshmem region. Bad base64
   * is refused here; the runtime refuses an unknown device or bytes that do not fit
   * (INVALID_ARGUMENT, a 400 like any bad request).
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
    const injection: Injection = { data };
    if (mmio.device !== undefined) injection.device = mmio.device;
    if (mmio.offset !== undefined) injection.offset = mmio.offset;
    const bytes = await this.runtime.inject(req.instance_id, injection);
    this.log.debug("injected", {
      instance: req.instance_id,
      device: mmio.device,
      offset: mmio.offset ?? 0,
      bytes,
    });
    return { status: "ok", bytes };
  }

  async status(id: string): Promise<InstanceInfo> {
    return toInstanceInfo(this.runtime.name, await this.runtime.status(id));
  }

  async list(all: boolean): Promise<InstanceList> {
    const list = await this.runtime.list({ all });
    return { instances: list.map((i) => toInstanceInfo(this.runtime.name, i)) };
  }

  async remove(id: string, force: boolean): Promise<RemoveResponse> {
    const info = await this.runtime.status(id);
    await this.runtime.remove(info.id, { force });
    this.log.info("instance removed", { id: info.id, name: info.name });
    return { status: "removed" };
  }

  async logs(ref: string, opts: { follow: boolean; tail?: number }): Promise<Readable> {
    return this.runtime.logs(
      ref,
      opts.tail === undefined ? { follow: opts.follow } : { follow: opts.follow, tail: opts.tail },
    );
  }

  /**
   * resolveArtifact turns what a client named into a validated artifact in the store: a path
   * (absolute, or `./`/`../`, relative to the daemon's working folder) is imported, anything
   * else is a reference, looked up in the store and pulled from its registry when missing.
   */
  async resolveArtifact(manifest: string): Promise<Artifact> {
    if (isPathLike(manifest)) {
      const a = await importPath(this.store, manifest);
      this.log.info("imported", { from: manifest, digest: a.descriptor.digest });
      return a;
    }
    return resolveReference(this.store, manifest, (store, reference) => {
      this.log.info("pulling", { reference: formatReference(parseReference(reference)) });
      return this.pull(store, reference);
    });
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
      // Where it came from goes on its name, for the policy's admission (sign/admission originOf).
      nameAnnotations: { [Annotation.Origin]: repositoryOf(r) },
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
