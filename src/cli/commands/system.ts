import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Command } from "commander";
import { isOvmsError } from "../../core/errors.js";
import { MediaType } from "../../core/media-types.js";
import type { ImageManifest } from "../../core/oci.js";
import { formatSize } from "../../core/size.js";
import type { Store } from "../../store/store.js";
import { daemonStateDir } from "../../store/paths.js";
import {
  DEFAULT_SNAPSHOT_CACHE_BYTES,
  defaultSnapshotCache,
  du,
  listPreloads,
  recordedCap,
} from "../../artifact/snapshot-cache.js";
import type { PoolInfo } from "../../api/types.generated.js";
import { Printer, globals, openStore, table } from "../context.js";
import { addSocketOption, daemonClient, formatDuration } from "./daemon-client.js";
import { artifactName } from "./ps.js";

/** DiskUsage is what `ovm system df --json` prints (a store document: camelCase, rfc §7). */
interface DiskUsage {
  store: string;
  artifacts: number;
  blobs: { count: number; bytes: number };
  layers: { count: number; bytes: number };
  instances: { count: number; bytes: number };
  snapshotCache: {
    dir: string;
    /** capBytes is the cap the store's daemon keeps (recorded by it), else ovmd's default. */
    capBytes: number;
    capRecorded: boolean;
    bytes: number;
    preloads: { digest: string; references: string[]; bytes: number; lastUsed: string; inUse?: boolean }[];
  };
  warmPool: {
    /** daemon: a daemon serving this store answered (without one there is no pool). */
    daemon: boolean;
    pools: { reference: string; digest: string; size: number; ready: number; memoryBytes: number }[];
  };
}

/** register adds `ovm system df`: what the store, its preloaded snapshots and the warm pool take. */
export function register(program: Command): void {
  const system = program
    .command("system")
    .description("the state of this host's OVMS: space used")
    .addHelpText(
      "after",
      `
Examples:
  ovm system df`,
    );
  const df = system
    .command("df")
    .description("space used by the store, its preloaded RAM snapshots (tmpfs) and the warm pool")
    .addHelpText(
      "after",
      `
Preloaded snapshots live in tmpfs, which is RAM: ovmd keeps them under --snapshot-cache (least
recently used go first, never one an instance or the warm pool uses) and drops those of stores
that are gone; ovm gc drops those of blobs that are gone.

Examples:
  ovm system df
  ovm system df --json | jq .snapshotCache.preloads`,
    );
  addSocketOption(df).action(async (_opts, c: Command) => {
    const out = new Printer(globals(c));
    const store = await openStore(c, "read").catch((e: unknown) => {
      if (!isOvmsError(e, "NOT_FOUND")) throw e;
      return undefined;
    });
    const usage = await diskUsage(c, store);
    out.result(usage, () => describe(usage));
  });
}

async function diskUsage(c: Command, store: Store | undefined): Promise<DiskUsage> {
  const blobs = { count: 0, bytes: 0 };
  const refsOfRamsnap = new Map<string, string[]>();
  let artifacts = 0;
  if (store) {
    for (const f of await readdir(join(store.root, "blobs", "sha256")).catch(() => [] as string[])) {
      const st = await stat(join(store.root, "blobs", "sha256", f)).catch(() => undefined);
      if (!st?.isFile()) continue;
      blobs.count++;
      blobs.bytes += st.size;
    }
    for (const e of await store.entries()) {
      if (!e.reference) continue;
      artifacts++;
      const oci = await store.readJson<ImageManifest>(e.descriptor.digest).catch(() => undefined);
      const r = oci?.layers?.find((l) => l.mediaType === MediaType.RamSnapshot)?.digest;
      if (r) refsOfRamsnap.set(r, [...(refsOfRamsnap.get(r) ?? []), artifactName(e.reference)]);
    }
  }
  const folder = async (dir: string) => {
    const names = await readdir(dir).catch(() => [] as string[]);
    return { count: names.filter((n) => !n.startsWith(".")).length, bytes: await du(dir) };
  };
  const layers = store ? await folder(join(store.workDir, "layers", "sha256")) : { count: 0, bytes: 0 };
  // Instances live in the state folder of the store's daemon, not in the store.
  const instances = store
    ? await folder(join(daemonStateDir(store.root), "instances"))
    : { count: 0, bytes: 0 };

  // The daemon, when one serves this store, says what is in use and what the pool holds.
  let pools: PoolInfo[] = [];
  let daemon = false;
  const inUse = new Set<string>();
  if (store) {
    try {
      const client = await daemonClient(c);
      daemon = true;
      pools = await client.pools();
      const manifests = new Set([
        ...(await client.list()).map((i) => i.artifact.digest),
        ...pools.filter((p) => p.size > 0 || p.ready > 0).map((p) => p.digest),
      ]);
      for (const d of manifests) {
        const oci = await store.readJson<ImageManifest>(d as `sha256:${string}`).catch(() => undefined);
        const r = oci?.layers?.find((l) => l.mediaType === MediaType.RamSnapshot)?.digest;
        if (r) inUse.add(r);
      }
    } catch (e) {
      if (!isOvmsError(e, "DAEMON_UNAVAILABLE")) throw e;
    }
  }
  const dir = store ? defaultSnapshotCache(store) : "";
  const recorded = dir ? await recordedCap(dir) : undefined;
  const preloads = store ? await listPreloads(dir) : [];
  return {
    store: store?.root ?? resolveStoreName(c),
    artifacts,
    blobs,
    layers,
    instances,
    snapshotCache: {
      dir,
      capBytes: recorded ?? DEFAULT_SNAPSHOT_CACHE_BYTES,
      capRecorded: recorded !== undefined,
      bytes: preloads.reduce((n, p) => n + p.bytes, 0),
      preloads: preloads
        .slice()
        .reverse()
        .map((p) => ({
          digest: p.digest,
          references: refsOfRamsnap.get(p.digest) ?? [],
          bytes: p.bytes,
          lastUsed: p.lastUsed.toISOString(),
          ...(daemon ? { inUse: inUse.has(p.digest) } : {}),
        })),
    },
    warmPool: {
      daemon,
      pools: pools.map((p) => ({
        reference: p.reference,
        digest: p.digest,
        size: p.size,
        ready: p.ready,
        memoryBytes: p.memory_bytes,
      })),
    },
  };
}

function resolveStoreName(c: Command): string {
  return globals(c).store ?? process.env.OVM_STORE ?? "(the default store)";
}

/** describe writes the usage for people: a summary like `docker system df`, then the details. */
function describe(u: DiskUsage): string {
  const cache = u.snapshotCache;
  const pooled = u.warmPool.pools.reduce((n, p) => n + p.ready, 0);
  const poolBytes = u.warmPool.pools.reduce((n, p) => n + p.ready * p.memoryBytes, 0);
  const lines = [
    `Store ${u.store}`,
    "",
    table(
      ["TYPE", "COUNT", "SIZE", "NOTE"],
      [
        [
          "Blobs",
          String(u.blobs.count),
          formatSize(u.blobs.bytes),
          `${u.artifacts} named artifact(s); ovm gc frees the unreachable`,
        ],
        ["Unpacked layers", String(u.layers.count), formatSize(u.layers.bytes), "disk layers ready to boot"],
        ["Instances", String(u.instances.count), formatSize(u.instances.bytes), "overlays, logs, state"],
        [
          "Preloaded snapshots",
          String(cache.preloads.length),
          formatSize(cache.bytes),
          `tmpfs (RAM), cap ${formatSize(cache.capBytes)}${cache.capRecorded ? "" : " (ovmd's default)"}`,
        ],
        [
          "Warm pool",
          String(pooled),
          formatSize(poolBytes),
          u.warmPool.daemon ? "paused QEMU processes, guest memory" : "no ovmd serves this store",
        ],
      ],
    ),
  ];
  if (cache.preloads.length) {
    const now = Date.now();
    lines.push(
      "",
      `Preloaded snapshots in ${cache.dir}:`,
      table(
        ["DIGEST", "REFERENCE", "SIZE", "LAST USED", "IN USE"],
        cache.preloads.map((p) => [
          p.digest.slice(7, 19),
          p.references.join(", ") || "-",
          formatSize(p.bytes),
          `${formatDuration(Math.max(0, now - Date.parse(p.lastUsed)))} ago`,
          p.inUse === undefined ? "-" : p.inUse ? "yes" : "no",
        ]),
      ),
    );
  }
  if (u.warmPool.pools.length) {
    lines.push(
      "",
      "Warm pool (ovm pool rm REF empties one):",
      table(
        ["REFERENCE", "DIGEST", "READY", "MEMORY"],
        u.warmPool.pools.map((p) => [
          artifactName(p.reference),
          p.digest.slice(7, 19),
          `${p.ready}/${p.size}`,
          formatSize(p.ready * p.memoryBytes),
        ]),
      ),
    );
  }
  return lines.join("\n");
}
