import { closeSync, existsSync, openSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import { OvmsError, isOvmsError } from "../../core/errors.js";
import { daemonStateDir, defaultStoreDir, resolveStoreDir } from "../../store/paths.js";
import { OvmdClient, isDaemonUnavailable } from "../../client/client.js";
import { SOCKET_DEFAULTS, canonicalStore, isPathLike, resolveSocketPath } from "../../api/paths.js";
import type { InstanceInfo, VersionInfo } from "../../api/types.generated.js";
import { checkStoreDir, globals, type Printer } from "../context.js";

/** OVMD_JS is the daemon's entry point, beside the CLI in dist/src. */
const OVMD_JS = fileURLToPath(new URL("../../daemon/ovmd.js", import.meta.url));

/** STARTUP_MS bounds how long `ovm run` waits for a daemon it started to answer. */
const STARTUP_MS = 5000;

/** addSocketOption adds `--socket PATH` to a command that talks to the daemon. */
export function addSocketOption(cmd: Command): Command {
  return cmd.option("--socket <path>", `ovmd socket ${SOCKET_DEFAULTS}`);
}

/** Target is the daemon a command talks to and the store the command uses. */
interface Target {
  socket: string;
  /** named: the socket came from --socket or $OVMD_SOCKET, not from the store. */
  named: string | undefined;
  storeDir: string;
  /** storeFrom says where the store came from, for messages. */
  storeFrom: string;
}

/** target resolves the socket and the store of a command from its flags and the environment. */
function target(cmd: Command): Target {
  const flag = cmd.opts<{ socket?: string }>().socket;
  const g = globals(cmd);
  const storeDir = resolveStoreDir(g.store);
  return {
    socket: resolveSocketPath(flag, process.env, { dir: storeDir, defaultDir: defaultStoreDir() }),
    named: flag ? "--socket" : process.env.OVMD_SOCKET ? "$OVMD_SOCKET" : undefined,
    storeDir,
    storeFrom: g.store ? "--store" : process.env.OVM_STORE ? "$OVM_STORE" : "the default store",
  };
}

/**
 * checkStore refuses a daemon that serves another store than the command's: references would
 * resolve in one store and snapshots land in another (rfc §6.1). The message names both
 * stores and how to reach the right daemon.
 */
function checkStore(t: Target, v: VersionInfo): void {
  if (v.store === undefined) return; // a runtime without a local store of its own
  const mine = canonicalStore(t.storeDir);
  if (v.store === mine) return;
  const fix = t.named
    ? `name its store (--store ${v.store}), or leave out ${t.named} to reach the daemon of ${mine} (\`ovm run\` starts one)`
    : `that daemon was started on this store's socket with another store; stop it, or give it its own --socket`;
  throw new OvmsError(
    "USAGE",
    `the ovmd on ${t.socket} serves the store ${v.store}, but this command uses the store ${mine} (${t.storeFrom}): ${fix}`,
  );
}

/**
 * daemonClient is a client of the daemon serving this command's store: the one on the socket
 * the flags, the environment or the store name, checked to serve the same store. Nothing
 * answering is DAEMON_UNAVAILABLE, saying which store and socket.
 */
export async function daemonClient(cmd: Command): Promise<OvmdClient> {
  const t = target(cmd);
  const client = new OvmdClient({ socketPath: t.socket });
  let v: VersionInfo;
  try {
    v = await client.version();
  } catch (e) {
    if (!isDaemonUnavailable(e)) throw e;
    throw new OvmsError(
      "DAEMON_UNAVAILABLE",
      `no ovmd answers on ${t.socket} for the store ${canonicalStore(t.storeDir)}; \`ovm run\` starts one, \`ovm serve\` runs one in the foreground`,
      { cause: e },
    );
  }
  checkStore(t, v);
  return client;
}

/**
 * ensureDaemon returns a client of the daemon serving this command's store, starting one in
 * the background when nobody answers on the socket: detached, with the same environment and
 * store, its output in `ovmd.log` of its state folder (daemonStateDir). It waits up to 5 s for the socket to answer.
 */
export async function ensureDaemon(cmd: Command, out: Printer): Promise<OvmdClient> {
  const t = target(cmd);
  const client = new OvmdClient({ socketPath: t.socket });
  try {
    checkStore(t, await client.version());
    return client;
  } catch (e) {
    if (!isDaemonUnavailable(e)) throw e;
  }
  const storeDir = t.storeDir;
  await checkStoreDir(storeDir);
  if (!existsSync(join(storeDir, "oci-layout"))) out.info(`creating the store ${resolve(storeDir)}`);
  const stateDir = daemonStateDir(storeDir);
  await mkdir(stateDir, { recursive: true, mode: 0o711 });
  const logFile = join(stateDir, "ovmd.log");
  // Imported here: only starting a daemon needs it, not every command that talks to one.
  const { spawn } = await import("node:child_process");
  const fd = openSync(logFile, "a");
  let exited: number | null | undefined;
  let pid: number | undefined;
  try {
    const child = spawn(process.execPath, [OVMD_JS, "--socket", t.socket, "--store", storeDir], {
      detached: true,
      stdio: ["ignore", fd, fd],
      env: process.env,
    });
    pid = child.pid;
    child.on("exit", (code) => (exited = code));
    child.on("error", () => (exited = -1));
    child.unref();
  } finally {
    closeSync(fd);
  }
  const deadline = Date.now() + STARTUP_MS;
  for (;;) {
    try {
      checkStore(t, await client.version());
      out.info(`started ovmd (pid ${pid}) on ${t.socket}; its log is ${logFile}`);
      return client;
    } catch (e) {
      if (!isDaemonUnavailable(e)) throw e;
    }
    // A daemon that exited may have lost a race to another one starting: keep asking until the deadline.
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const tail = (await readFile(logFile, "utf8").catch(() => "")).trim().split("\n").slice(-3).join("\n  ");
  throw new OvmsError(
    "DAEMON_UNAVAILABLE",
    `started ovmd${exited !== undefined ? ` but it exited (status ${exited})` : ""}, and it did not answer on ${t.socket} within ${STARTUP_MS / 1000} s; see ${logFile}${tail ? `:\n  ${tail}` : ""}`,
  );
}

/**
 * manifestArg makes what the user typed fit for `POST /start`: a local path (a layout folder,
 * a .tar, a .json, or anything starting with ./ ../ /) becomes absolute, since the daemon
 * does not share our working folder; anything else is a reference.
 */
export function manifestArg(ref: string): string {
  if (isPathLike(ref)) return resolve(ref);
  if (/\.(tar|json)$/.test(ref) && existsSync(ref)) return resolve(ref);
  if (existsSync(join(ref, "oci-layout"))) return resolve(ref);
  return ref;
}

/** formatDuration writes milliseconds for people: 850ms, 12s, 5m, 3h, 2d. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60 ? `${s % 60}s` : ""}`;
  if (s < 86400)
    return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60) ? `${Math.floor((s % 3600) / 60)}m` : ""}`;
  return `${Math.floor(s / 86400)}d`;
}

/** shortId is the first 12 hex digits of an instance id, as `ovm ps` shows it (the daemon accepts it as an id). */
export function shortId(info: Pick<InstanceInfo, "instance_id">): string {
  return info.instance_id.replace(/-/g, "").slice(0, 12);
}

/**
 * inFlagWords rewords a daemon's BAD_REQUEST whose problems point at members a flag set
 * (`/overrides/name` for --name): `--name 'a b': <why>` instead of the API's JSON Pointers.
 * Any other error is returned as it is.
 */
export function inFlagWords(e: unknown, flags: Record<string, [flag: string, value: unknown]>): unknown {
  if (!isOvmsError(e, "BAD_REQUEST")) return e;
  const problems = (e.details?.problems ?? []) as { path: string; message: string }[];
  const worded = problems.map((p) => {
    const key = Object.keys(flags).find((k) => p.path === k || p.path.startsWith(`${k}/`));
    if (!key) return undefined;
    const [flag, value] = flags[key];
    return `${flag} ${typeof value === "string" && /\s/.test(value) ? `'${value}'` : String(value)}: ${p.message}`;
  });
  if (!problems.length || worded.some((w) => w === undefined)) return e;
  return new OvmsError("BAD_REQUEST", worded.join("; "), { cause: e, details: e.details });
}
