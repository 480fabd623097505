import { execFileSync } from "node:child_process";
import { chmod, chown, lstat, mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { connect } from "node:net";
import { dirname, join, resolve } from "node:path";
import { OvmsError } from "../core/errors.js";
import { Store } from "../store/store.js";
import { daemonStateDir, defaultStoreDir, resolveStoreDir } from "../store/paths.js";
import type { Runtime } from "../runtime/types.js";
import type { ConfineSetting } from "../runtime/qemu/confine.js";
import { resolveSocketPath } from "../api/paths.js";
import { Contract } from "./contract.js";
import { Controller, type PullFn } from "./controller.js";
import { createLogger, type LogLevel, type Logger } from "./log.js";
import { requestHandler, routes } from "./routes.js";
import { ArtifactCatalog } from "./console/artifact-catalog.js";
import { consoleRoutes } from "./console/console-routes.js";
import { consoleHandler } from "./console/console-handler.js";
import { consoleUpgrade } from "./console/serial-socket.js";
import { consoleToken } from "./console/http-token.js";
import { listenTcp, parseHostPort } from "./tcp-listener.js";

/** ServeOptions are ovmd's flags (and what an embedding program may hand in instead). */
export interface ServeOptions {
  /** socket path (default: OVMD_SOCKET, else the store's own socket: api/paths storeSocketPath). */
  socket?: string;
  /** paused QEMU processes per hot snapshot artifact (default 1, 0: off). */
  warmPool?: number;
  /** per-snapshot pool sizes by reference or digest. */
  warmPools?: Record<string, number>;
  /** store folder (default: OVM_STORE, else the default store). */
  store?: string;
  /**
   * stateDir holds the instances, the pid file and the log (default: daemonStateDir of the
   * store, `/var/lib/ovms/daemons/<key>` as root: the daemon's own, never inside the store).
   */
  stateDir?: string;
  /** confine says how QEMU is confined (RFC §8.4; default `auto`: namespaces where it can). */
  confine?: ConfineSetting;
  /** backgroundSnapshots false gives QEMU no userfaultfd (RFC §5.8; default: where it can). */
  backgroundSnapshots?: boolean;
  /** limits: false leaves cgroups alone (no per-instance memory and CPU limits). */
  limits?: boolean;
  /** bootTimeoutMs is the boot watchdog's default silence (0: off; default 60 s). */
  bootTimeoutMs?: number;
  /** group gets read-write access to the socket (mode 0660); without it the mode is 0600. */
  group?: string;
  /** listen is `HOST:PORT` of an extra TCP listener; it requires `token`. */
  listen?: string;
  /** token every TCP request must carry as `Authorization: Bearer <token>` (default: OVMD_TOKEN). */
  token?: string;
  /**
   * http is `HOST:PORT` of the web console's TCP listener: the console's page and files, and
   * the API it calls (token required). Without a token one is made and kept in
   * `<stateDir>/http-token` (mode 0600).
   */
  http?: string;
  /** benchResults is the folder whose newest results the console's benchmark page draws (default: the package's bench/results). */
  benchResults?: string;
  logLevel?: LogLevel;
  log?: Logger;
  /** runtime replaces the QEMU runtime (embedding, tests). */
  runtime?: Runtime;
  pull?: PullFn;
  /** policy is the trust policy file every start is admitted by (default: OVM_POLICY; none: no checks). */
  policy?: string;
  /** snapshotCache caps the store's preloaded RAM snapshots in bytes (default 2 GiB; `--snapshot-cache`). */
  snapshotCache?: number;
  /** maintenanceMs is how often orphaned preloads are pruned and the cap kept (default 5 min). */
  maintenanceMs?: number;
  /** signals installs SIGTERM/SIGINT handlers that close the daemon (default true). */
  signals?: boolean;
}

/** Daemon is a running ovmd. */
export interface Daemon {
  socketPath: string;
  /** tcp is `host:port` of the TCP listener, when there is one. */
  tcp?: string;
  /** http is `host:port` of the web console's listener, when there is one. */
  http?: string;
  /** httpTokenFile is where a token made for the web console was written (none when one was given). */
  httpTokenFile?: string;
  storeDir: string;
  stateDir: string;
  /** close stops listening, detaches from the instances (they keep running) and removes the socket. */
  close(): Promise<void>;
  /** closed settles once the daemon has closed. */
  closed: Promise<void>;
}

/**
 * serve starts ovmd: opens the store, takes the state folder, re-attaches the instances an
 * earlier daemon left (runtime.recover), then answers the runtime API on a UNIX socket
 * (mode 0600, or 0660 for `group`) and, only with a token, on TCP. `ovmd` and `ovm serve`
 * both run this.
 */
export async function serve(opts: ServeOptions = {}): Promise<Daemon> {
  const log = opts.log ?? createLogger(opts.logLevel ?? "info");
  const token = opts.token ?? process.env.OVMD_TOKEN;
  if (opts.listen && !token)
    throw new OvmsError(
      "USAGE",
      "--listen needs a token (--token T or OVMD_TOKEN): a TCP listener is never open without one",
    );
  const tcpAddr = opts.listen ? parseHostPort(opts.listen, "--listen") : undefined;
  const httpAddr = opts.http ? parseHostPort(opts.http, "--http") : undefined;
  if (tcpAddr && httpAddr && tcpAddr.port === httpAddr.port && httpAddr.port !== 0)
    throw new OvmsError(
      "USAGE",
      `--listen ${opts.listen} and --http ${opts.http}: one port; --http serves the API too, so drop --listen or give it another port`,
    );
  const gid = opts.group ? groupId(opts.group) : undefined;
  // A policy that cannot be read stops the daemon: it never falls back to "no policy".
  const policyFile = opts.policy ?? process.env.OVM_POLICY;
  const policy = policyFile ? await (await import("../sign/policy.js")).loadPolicy(policyFile) : undefined;

  const storeDir = resolveStoreDir(opts.store);
  const store = await Store.open(storeDir);
  const stateDir = opts.stateDir ?? daemonStateDir(storeDir);
  // Traversable (not listable) by others: with -runas, QEMU as the QEMU user must reach its instance folder.
  await mkdir(stateDir, { recursive: true, mode: 0o711 });
  const releasePid = await takePidFile(join(stateDir, "ovmd.pid"));
  if (!opts.stateDir) {
    await writeFile(join(stateDir, "store-path"), resolve(storeDir));
    await pruneStateDirs(dirname(stateDir)).catch(() => undefined);
  }

  const { token: httpToken, file: httpTokenFile } = httpAddr
    ? await consoleToken(stateDir, token)
    : { token: undefined, file: undefined };

  const cleanups: (() => Promise<void>)[] = [releasePid];
  const cleanup = async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  };
  try {
    const contract = Contract.load();
    const rt: Runtime = opts.runtime ?? (await qemuRuntime(stateDir, opts));
    cleanups.push(() => rt.close());
    await rt.recover();
    const live = await rt.list();
    log.info("recovered instances", { running: live.length, state_dir: stateDir });

    const controller = new Controller({
      store,
      runtime: rt,
      log,
      ...(opts.pull ? { pull: opts.pull } : {}),
      ...(opts.warmPool !== undefined ? { warmPool: opts.warmPool } : {}),
      ...(opts.warmPools ? { warmPools: opts.warmPools } : {}),
      ...(policy ? { policy } : {}),
      stateDir,
      ...(opts.snapshotCache !== undefined ? { snapshotCacheBytes: opts.snapshotCache } : {}),
      ...(opts.maintenanceMs !== undefined ? { maintenanceMs: opts.maintenanceMs } : {}),
    });
    await controller.open();
    const table = { ...routes(controller), ...consoleRoutes(rt, new ArtifactCatalog(store, policy)) };
    const upgrade = (tok?: string) =>
      consoleUpgrade({ contract, runtime: rt, log, ...(tok ? { token: tok } : {}) });

    // Without --socket or OVMD_SOCKET, the store's own socket: one daemon per store (rfc §6.1).
    const socketPath = resolveSocketPath(opts.socket, process.env, {
      dir: storeDir,
      defaultDir: defaultStoreDir(),
    });
    await clearStaleSocket(socketPath);
    const unix = createServer(requestHandler(contract, table, log));
    unix.on("upgrade", upgrade());
    tune(unix);
    await listenUnix(unix, socketPath, gid);
    cleanups.push(async () => {
      await closeServer(unix);
      await rm(socketPath, { force: true });
    });
    log.info("listening", {
      socket: socketPath,
      mode: gid === undefined ? "0600" : "0660",
      store: storeDir,
      policy: policy?.file ?? "none",
    });

    let tcp: string | undefined;
    if (tcpAddr) {
      const server = createServer(requestHandler(contract, table, log, { token }));
      server.on("upgrade", upgrade(token));
      tune(server);
      tcp = await listenTcp(server, tcpAddr, `--listen ${opts.listen}`);
      cleanups.push(() => closeServer(server));
      log.info("listening on TCP (bearer token required)", { address: tcp });
    }

    let http: string | undefined;
    if (httpAddr) {
      const api = requestHandler(contract, table, log, { token: httpToken });
      const server = createServer(
        consoleHandler({ api, token: httpToken!, log, benchDir: opts.benchResults }),
      );
      server.on("upgrade", upgrade(httpToken));
      tune(server);
      http = await listenTcp(server, httpAddr, `--http ${opts.http}`);
      cleanups.push(() => closeServer(server));
      log.info("web console", {
        url: `http://${http}/`,
        token: httpTokenFile ? `in ${httpTokenFile}` : "the one given with --token or OVMD_TOKEN",
      });
    }

    let resolveClosed!: () => void;
    const closed = new Promise<void>((r) => (resolveClosed = r));
    let closing: Promise<void> | undefined;
    const close = () => {
      closing ??= (async () => {
        log.info("shutting down: instances keep running, except those held by an attached client");
        await controller.close();
        await cleanup();
        if (opts.signals !== false) {
          process.off("SIGTERM", onSignal);
          process.off("SIGINT", onSignal);
        }
        resolveClosed();
      })();
      return closing;
    };
    const onSignal = (sig: NodeJS.Signals) => {
      log.info("signal", { signal: sig });
      void close();
    };
    if (opts.signals !== false) {
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
    }
    return {
      socketPath,
      ...(tcp ? { tcp } : {}),
      ...(http ? { http } : {}),
      ...(httpTokenFile ? { httpTokenFile } : {}),
      storeDir,
      stateDir,
      close,
      closed,
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/** qemuRuntime makes the reference runtime, loaded only when no other is given. */
async function qemuRuntime(stateDir: string, opts: ServeOptions): Promise<Runtime> {
  const { QemuRuntime } = await import("../runtime/qemu/qemu-runtime.js");
  return QemuRuntime.create({
    stateDir,
    ...(opts.confine ? { confine: opts.confine } : {}),
    ...(opts.limits === false ? { limits: false } : {}),
    ...(opts.backgroundSnapshots === false ? { backgroundSnapshots: false } : {}),
    ...(opts.bootTimeoutMs !== undefined ? { bootTimeoutMs: opts.bootTimeoutMs } : {}),
  });
}

/**
 * pruneStateDirs removes the state folders (under `root`, one per store) of stores that are
 * gone and whose daemon left no instance behind: what test runs and deleted stores leave.
 */
async function pruneStateDirs(root: string): Promise<void> {
  for (const key of await readdir(root)) {
    const dir = join(root, key);
    const store = await readFile(join(dir, "store-path"), "utf8").catch(() => undefined);
    if (store === undefined || existsSync(join(store, "oci-layout"))) continue;
    if ((await readdir(join(dir, "instances")).catch(() => [])).length) continue;
    if (existsSync(join(dir, "ovmd.pid"))) continue;
    await rm(dir, { recursive: true, force: true });
  }
}

/** tune lets log streams stay open: no request or idle timeout cuts a `follow`. */
function tune(server: Server): void {
  server.requestTimeout = 0;
  server.keepAliveTimeout = 5000;
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    // Followed log streams would hold close() open forever.
    server.closeAllConnections();
  });
}

/**
 * listenUnix binds the socket with a umask that leaves it 0600 from its first moment (no
 * window where others could connect), then sets the final mode and group.
 */
async function listenUnix(server: Server, path: string, gid: number | undefined): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await new Promise<void>((resolve, reject) => {
    const old = process.umask(0o177);
    try {
      server.once("error", (e) =>
        reject(new OvmsError("RUNTIME_UNAVAILABLE", `cannot listen on ${path}: ${e.message}`, { cause: e })),
      );
      server.listen(path, () => resolve());
    } finally {
      process.umask(old);
    }
  });
  if (gid !== undefined) {
    await chown(path, -1, gid);
    await chmod(path, 0o660);
  } else {
    await chmod(path, 0o600);
  }
}

/**
 * clearStaleSocket removes a socket file left by a daemon that died, but only when nothing
 * answers on it: a live daemon's socket is never taken over.
 */
async function clearStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket())
    throw new OvmsError(
      "CONFLICT",
      `${path} exists and is not a socket; move it away or pick another --socket`,
    );
  const refused = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(undefined);
    });
    s.once("error", (e: NodeJS.ErrnoException) => resolve(e));
  });
  if (!refused) throw new OvmsError("CONFLICT", `another daemon already answers on ${path}`);
  // Only a socket nobody listens on is stale; EACCES and the like are not ours to fix.
  if (refused.code !== "ECONNREFUSED") throw new OvmsError("CONFLICT", `${path}: ${refused.message}`);
  await rm(path, { force: true });
}

/**
 * takePidFile records this daemon as the one managing a state folder; a second daemon on the
 * same folder (other socket, same store) is refused while the first lives.
 */
async function takePidFile(path: string): Promise<() => Promise<void>> {
  const prev = Number((await readFile(path, "utf8").catch(() => "")).trim());
  if (prev && prev !== process.pid && isDaemon(prev)) {
    throw new OvmsError("CONFLICT", `another ovmd (pid ${prev}) already manages ${dirname(path)}`);
  }
  await writeFile(path, `${process.pid}\n`, { mode: 0o644 });
  return async () => {
    const now = Number((await readFile(path, "utf8").catch(() => "")).trim());
    if (now === process.pid) await rm(path, { force: true });
  };
}

function isDaemon(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return /ovmd|\bserve\b/.test(cmd.replace(/\0/g, " "));
  } catch {
    return false;
  }
}

/** groupId reads a group's id from its name (or takes a number). */
function groupId(name: string): number {
  if (/^\d+$/.test(name)) return Number(name);
  try {
    const line = execFileSync("getent", ["group", name], { encoding: "utf8" }).trim();
    const gid = Number(line.split(":")[2]);
    if (Number.isInteger(gid)) return gid;
  } catch {
    // not found, or no getent: fall through
  }
  throw new OvmsError("USAGE", `--group ${name}: no such group`);
}
