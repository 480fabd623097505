import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import { OvmsError } from "../../core/errors.js";
import { daemonStateDir, resolveStoreDir } from "../../store/paths.js";
import { OvmdClient, isDaemonUnavailable } from "../../client/client.js";
import { isPathLike, resolveSocketPath } from "../../api/paths.js";
import type { InstanceInfo } from "../../api/types.generated.js";
import { globals, type Printer } from "../context.js";

/** OVMD_JS is the daemon's entry point, beside the CLI in dist/src. */
const OVMD_JS = fileURLToPath(new URL("../../daemon/ovmd.js", import.meta.url));

/** STARTUP_MS bounds how long `ovm run` waits for a daemon it started to answer. */
const STARTUP_MS = 5000;

/** addSocketOption adds `--socket PATH` to a command that talks to the daemon. */
export function addSocketOption(cmd: Command): Command {
  return cmd.option(
    "--socket <path>",
    "ovmd socket (default: $OVMD_SOCKET, else $XDG_RUNTIME_DIR/ovms/ovmd.sock, else /run/ovms/ovmd.sock as root)",
  );
}

/** daemonClient is the client of the daemon the flags and environment name. */
export function daemonClient(cmd: Command): OvmdClient {
  return new OvmdClient({ socketPath: resolveSocketPath(cmd.opts<{ socket?: string }>().socket) });
}

/**
 * ensureDaemon returns a client of a daemon that answers, starting one in the background
 * when nobody answers on the socket: detached, with the same environment and store, its
 * output in `ovmd.log` of its state folder (daemonStateDir). It waits up to 5 s for the socket to answer.
 */
export async function ensureDaemon(cmd: Command, out: Printer): Promise<OvmdClient> {
  const client = daemonClient(cmd);
  try {
    await client.version();
    return client;
  } catch (e) {
    if (!isDaemonUnavailable(e)) throw e;
  }
  const storeDir = resolveStoreDir(globals(cmd).store);
  const stateDir = daemonStateDir(storeDir);
  await mkdir(stateDir, { recursive: true, mode: 0o711 });
  const logFile = join(stateDir, "ovmd.log");
  const fd = openSync(logFile, "a");
  let exited: number | null | undefined;
  let pid: number | undefined;
  try {
    const child = spawn(process.execPath, [OVMD_JS, "--socket", client.socketPath!, "--store", storeDir], {
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
      await client.version();
      out.info(`started ovmd (pid ${pid}) on ${client.socketPath}; its log is ${logFile}`);
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
    `started ovmd${exited !== undefined ? ` but it exited (status ${exited})` : ""}, and it did not answer on ${client.socketPath} within ${STARTUP_MS / 1000} s; see ${logFile}${tail ? `:\n  ${tail}` : ""}`,
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
