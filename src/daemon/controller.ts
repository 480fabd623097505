import { join } from "node:path";
import type { Readable } from "node:stream";
import { OvmsError } from "../core/errors.js";
import { formatPort } from "../core/ports.js";
import { formatReference, parseReference } from "../core/reference.js";
import type { Store } from "../store/store.js";
import { loadArtifactByDescriptor, type Artifact } from "../artifact/artifact.js";
import { importPath } from "../artifact/import.js";
import { PrepareCache, prepareArtifact } from "../artifact/prepare.js";
import { ArtifactMemo, resolveReference } from "../artifact/resolve.js";
import { packSnapshot } from "../artifact/snapshot.js";
import { TERMINAL_STATES, type Instance, type Runtime, type SnapshotReport } from "../runtime/types.js";
import { checkRuntimeChoice } from "../runtime/adapters.js";
import type { PreparedArtifact } from "../artifact/prepare.js";
import type {
  InstanceInfo,
  InjectRequest,
  InjectResponse,
  KillRequest,
  KillResponse,
  StdinRequest,
  StdinResponse,
  InstanceList,
  PoolList,
  PoolRemoveResponse,
  RemoveResponse,
  SnapshotRequest,
  SnapshotResponse,
  StartRequest,
  StartResponse,
  StopRequest,
  StopResponse,
  VersionInfo,
} from "../api/types.generated.js";
import { canonicalStore, isPathLike } from "../api/paths.js";
import { VERSION } from "../version.js";
import type { Policy } from "../sign/policy.js";
import { badRequest } from "./contract.js";
import { admit, refuseResized, startOptions } from "./requests.js";
import { Lifelines } from "./lifelines.js";
import { killInstance, stopInstance, writeStdin } from "./signals.js";
import { injectInstance } from "./inject.js";
import type { Logger } from "./log.js";
import { toInstanceInfo } from "./wire.js";
import { waitStarted } from "./wait-started.js";
import { pullFromRegistry, type PullFn } from "./pull.js";
import { WarmPools } from "./warm-pools.js";
import { CacheKeeper } from "./cache-keeper.js";
import { Labels } from "./labels.js";
import { NameClaims } from "./name-claims.js";

export { pullFromRegistry, type PullFn };

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
  /** stateDir keeps what the controller remembers across daemon restarts (attached instances, labels). */
  stateDir?: string;
  /** snapshotCacheBytes caps the store's preloaded snapshots (default 2 GiB). */
  snapshotCacheBytes?: number;
  /** maintenanceMs is how often the snapshot cache is pruned and kept under its cap (default 5 min). */
  maintenanceMs?: number;
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
  private readonly names = new NameClaims();
  /** Which snapshots get a warm pool, and the pools by name. */
  private readonly pools: WarmPools;
  /** The preloaded snapshots of the store, under their cap. */
  private readonly keeper: CacheKeeper;
  /** The reference each instance was started from, where the runtime reports another. */
  private readonly labels: Labels;
  /** What preparing remembers for the daemon's life: verified blobs, snapshot preloads in flight. */
  private readonly prepareCache = new PrepareCache();
  private readonly artifacts = new ArtifactMemo();
  private readonly policy?: Policy;
  /** Instances that live only as long as their attached client (`ovm run` in the foreground). */
  private readonly lifelines: Lifelines;

  constructor(opts: ControllerOptions) {
    if (opts.policy) this.policy = opts.policy;
    const kept = (name: string) => (opts.stateDir ? join(opts.stateDir, name) : undefined);
    this.lifelines = new Lifelines({
      stop: (id, why) => this.stopOrphan(id, why),
      ...(kept("attached.json") ? { file: kept("attached.json") } : {}),
    });
    this.labels = new Labels(kept("labels.json"));
    this.store = opts.store;
    this.runtime = opts.runtime;
    this.log = opts.log;
    this.pull = opts.pull ?? pullFromRegistry;
    this.pools = new WarmPools(opts.runtime, opts.log, {
      ...(opts.warmPool !== undefined ? { warmPool: opts.warmPool } : {}),
      ...(opts.warmPools ? { warmPools: opts.warmPools } : {}),
    });
    this.keeper = new CacheKeeper({
      store: opts.store,
      runtime: opts.runtime,
      log: opts.log,
      pooled: () => this.pools.pinned(),
      ...(opts.snapshotCacheBytes !== undefined ? { capBytes: opts.snapshotCacheBytes } : {}),
      ...(opts.maintenanceMs !== undefined ? { everyMs: opts.maintenanceMs } : {}),
    });
  }

  /**
   * open loads what the daemon keeps across restarts — the labels, and the attached instances a
   * crashed daemon left, which get their grace period again (their clients' connections went
   * with it) — and starts the snapshot cache's housekeeping.
   */
  async open(): Promise<void> {
    const all = new Set((await this.runtime.list({ all: true })).map((i) => i.id));
    await this.labels.load((id) => all.has(id));
    const live = new Set((await this.runtime.list()).map((i) => i.id));
    const ids = await this.lifelines.recover((id) => live.has(id));
    if (ids.length) this.log.info("attached instances wait for their clients again", { ids });
    await this.keeper.start();
  }

  /** version names the daemon, the API, the store it serves and the VMM. */
  async version(): Promise<VersionInfo> {
    const v = await this.runtime.version().catch(() => "unavailable");
    return {
      name: "ovmd",
      version: VERSION,
      api: "v0.1",
      store: canonicalStore(this.store.root),
      runtime: { name: this.runtime.name, version: v },
    };
  }

  /**
   * start resolves `manifest` into a verified artifact in the store (pulling or importing it
   * when needed), prepares its disk chain and asks the runtime to boot it. Everything that
   * can be refused is refused before an instance exists.
   */
  async start(
    req: StartRequest,
    opts: { allowPaths?: boolean; lifeline?: AbortSignal } = {},
  ): Promise<StartResponse> {
    // A path makes the daemon read a file of its host: only for clients on the host (the socket).
    if (opts.allowPaths === false && isPathLike(req.manifest)) {
      throw badRequest("POST /start", [
        { path: "/manifest", message: "paths are accepted on the UNIX socket only; name a reference" },
      ]);
    }
    const o = req.overrides ?? {};
    // Asked for another runtime adapter: refused before anything is resolved or pulled.
    if (o.runtime !== undefined) checkRuntimeChoice(this.runtime.name, o.runtime, undefined, req.manifest);
    const release = await this.names.claim(o.name, this.runtime);
    try {
      const artifact = await this.resolveArtifact(req.manifest, opts.lifeline);
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
      if (this.policy) await admit(this.policy, this.store, this.log, req.manifest, artifact);
      // The snapshot this start maps stays in the cache until its instance exists.
      const ramsnap = artifact.ovms.ramSnapshot?.ref;
      if (ramsnap) await this.keeper.begin(ramsnap);
      let prepared: PreparedArtifact;
      let info: Instance;
      try {
        // A snapshot artifact is preloaded here (once per digest) and restored, never cold-booted.
        prepared = await prepareArtifact(this.store, artifact, { cache: this.prepareCache });
        if (prepared.ramSnapshot) refuseResized(prepared, o);
        // An attached client that went away while the artifact was being prepared: nothing starts.
        if (opts.lifeline?.aborted)
          throw new OvmsError(
            "CANCELLED",
            `POST /start ${req.manifest}: the client went away; nothing was started`,
          );
        info = await this.runtime.start(prepared, startOptions(o, prepared));
      } finally {
        if (ramsnap) this.keeper.end(ramsnap);
      }
      // A restore served by the warm pool reports the reference that filled the pool.
      this.labels.set(info.id, prepared.reference, info.artifact.reference);
      if (opts.lifeline) {
        // Held by the start request until its answer, then by the client's follow (rfc §6.3).
        const lost = () =>
          this.lifelines.lose(info.id, "its attached client went away while it was starting");
        this.lifelines.expect(info.id);
        if (opts.lifeline.aborted) lost();
        else opts.lifeline.addEventListener("abort", lost, { once: true });
      }
      if (prepared.ramSnapshot) {
        void this.pools.warm(prepared);
        // Once the answer is out: a new preload may have taken the cache over its cap.
        setTimeout(() => void this.keeper.tidy(`a restore of ${prepared.reference}`), 200).unref();
      }
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
      release();
    }
  }

  /**
   * attach makes a followed log stream the lifeline of an instance: when `closed` says the
   * client went away before the instance ended, the instance is stopped (rfc §6.3).
   */
  async attach(ref: string, closed: Promise<{ lost: boolean }>): Promise<void> {
    const info = await this.runtime.status(ref);
    if (TERMINAL_STATES.has(info.state)) return;
    this.lifelines.hold(info.id, closed, async () => {
      try {
        return TERMINAL_STATES.has((await this.runtime.status(info.id)).state);
      } catch {
        return true; // removed meanwhile
      }
    });
  }

  /** stopOrphan stops an attached instance whose client is gone (the stop sequence of POST /stop). */
  private async stopOrphan(id: string, why: string): Promise<void> {
    this.log.info("stopping an attached instance", { id, why });
    await this.stop({ instance_id: id }).catch((e: Error) =>
      this.log.error("stopping an attached instance failed", { id, error: e.message }),
    );
  }

  /**
   * close is the daemon shutting down: instances held by attached clients are stopped (at once:
   * quit, then kill), since nothing can hold them any more; the others keep running.
   */
  async close(): Promise<void> {
    await this.lifelines.close(async (id) => {
      this.log.info("stopping an attached instance: the daemon is shutting down", { id });
      await this.runtime.stop(id, { force: true }).catch(() => undefined);
    });
    await this.keeper.stop();
  }

  /** pools lists the warm pools: paused VMM processes kept ready per hot snapshot. */
  listPools(): PoolList {
    return { pools: this.pools.list() };
  }

  /** emptyPool stops a pool's ready processes and keeps it empty; its snapshot's preload may then go. */
  async emptyPool(name: string): Promise<PoolRemoveResponse> {
    const r = await this.pools.empty(name, this.store);
    void this.keeper.tidy(`the warm pool of ${r.reference} was emptied`);
    return r;
  }

  stop(req: StopRequest): Promise<StopResponse> {
    return stopInstance(this.runtime, this.log, req);
  }

  /** kill sends a signal to an instance; stdin feeds a container's program (signals.ts). */
  kill(req: KillRequest): Promise<KillResponse> {
    return killInstance(this.runtime, this.log, req);
  }
  stdin(req: StdinRequest): Promise<StdinResponse> {
    return writeStdin(this.runtime, req);
  }

  /**
   * snapshot captures a running instance as a snapshot artifact tagged `tag` in the store
   * (rfc §5.8): the runtime pauses it and hands over device state, memory and overlay (copies,
   * packed after the guest resumed, where the host has room for them); the response says how
   * long the guest was paused.
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
    const report: SnapshotReport = {};
    const r = await this.runtime.snapshot(id, { stop: req.stop ?? false, report }, (c) =>
      packSnapshot(this.store, source, c, req.tag),
    );
    if (report.fallback)
      this.log.warn("snapshot kept the guest paused while packing", { id, why: report.fallback });
    this.log.info("snapshot taken", {
      id,
      reference: r.reference,
      digest: r.descriptor.digest,
      ramsnap_bytes: r.ramsnap.size,
      pause_ms: report.pauseMs,
      total_ms: report.totalMs,
      mode: report.mode,
    });
    const res: SnapshotResponse = {
      snapshot_ref: r.descriptor.digest,
      reference: r.reference,
      size: r.ramsnap.size,
      bytes_written: r.bytesWritten,
    };
    if (report.pauseMs !== undefined) res.pause_ms = report.pauseMs;
    if (report.totalMs !== undefined) res.total_ms = report.totalMs;
    if (report.mode) res.pause_mode = report.mode;
    return res;
  }

  /** inject has the runtime write decoded bytes into an ivshmem region (inject.ts). */
  inject(req: InjectRequest): Promise<InjectResponse> {
    return injectInstance(this.runtime, this.log, req);
  }

  async status(id: string): Promise<InstanceInfo> {
    return this.wire(await this.runtime.status(id));
  }

  async list(all: boolean): Promise<InstanceList> {
    const list = await this.runtime.list({ all });
    return { instances: list.map((i) => this.wire(i)) };
  }

  /** wire is an instance in the API's words, labelled with the reference it was started from. */
  private wire(i: Instance): InstanceInfo {
    const out = toInstanceInfo(this.runtime.name, i);
    const label = this.labels.of(i.id);
    if (label) out.artifact.reference = label;
    return out;
  }

  async remove(id: string, force: boolean): Promise<RemoveResponse> {
    const info = await this.runtime.status(id);
    await this.runtime.remove(info.id, { force });
    this.lifelines.forget(info.id);
    this.labels.forget(info.id);
    this.log.info("instance removed", { id: info.id, name: info.name });
    return { status: "removed", instance_id: info.id, name: info.name };
  }

  async logs(ref: string, opts: { follow: boolean; tail?: number }): Promise<Readable> {
    return this.runtime.logs(ref, opts);
  }

  /**
   * resolveArtifact turns what a client named into a validated artifact in the store: a path
   * (absolute, or `./`/`../`, relative to the daemon's working folder) is imported, anything
   * else is a reference, looked up in the store and pulled from its registry when missing.
   */
  async resolveArtifact(manifest: string, signal?: AbortSignal): Promise<Artifact> {
    if (isPathLike(manifest)) {
      const a = await importPath(this.store, manifest);
      this.log.info("imported", { from: manifest, digest: a.descriptor.digest });
      return a;
    }
    return resolveReference(
      this.store,
      manifest,
      (store, reference) => {
        this.log.info("pulling", { reference: formatReference(parseReference(reference)) });
        return this.pull(store, reference, signal ? { signal } : {});
      },
      this.artifacts,
    );
  }
}
