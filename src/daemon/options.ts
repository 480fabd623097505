import { OvmsError } from "../core/errors.js";
import { parseSize } from "../core/size.js";
import { Option, type Command } from "commander";
import { LOG_LEVELS, type LogLevel } from "./log.js";
import type { ServeOptions } from "./server.js";
import { SOCKET_DEFAULTS } from "../api/paths.js";
import type { ConfineSetting } from "../runtime/qemu/confine.js";

/** DaemonFlags are the parsed flags of `ovmd` and `ovm serve`. */
export interface DaemonFlags {
  socket?: string;
  store?: string;
  stateDir?: string;
  group?: string;
  listen?: string;
  token?: string;
  http?: string;
  benchResults?: string;
  logLevel?: LogLevel;
  warmPool?: number;
  warmPoolFor?: Record<string, number>;
  policy?: string;
  snapshotCache?: number;
  confine?: ConfineSetting;
  limits?: boolean;
  bootTimeout?: number;
  backgroundSnapshots?: "auto" | "off";
}

/**
 * addDaemonOptions adds the daemon's flags to a command (`ovmd` itself, or `ovm serve`,
 * which takes --store from the global flags instead).
 */
export function addDaemonOptions(cmd: Command, withStore = true): Command {
  cmd.option("--socket <path>", `UNIX socket to listen on ${SOCKET_DEFAULTS}`);
  if (withStore)
    cmd.option(
      "--store <dir>",
      "local store (default: $OVM_STORE, else /var/lib/ovms/store as root, else $XDG_DATA_HOME/ovms/store, with ~/.local/share for an unset XDG_DATA_HOME)",
    );
  return cmd
    .option(
      "--state-dir <dir>",
      "where instances live (default: /var/lib/ovms/daemons/<store key> as root, else $XDG_DATA_HOME/ovms/daemons/<store key>)",
    )
    .addOption(
      new Option(
        "--confine <mode>",
        "how QEMU is confined as root: auto (namespaces with bubblewrap where installed, else -runas), on (namespaces or refuse to start), off (-runas only)",
      )
        .choices(["auto", "on", "off"])
        .default("auto", "auto"),
    )
    .addOption(
      new Option(
        "--background-snapshots <mode>",
        "auto: snapshots pause a guest only for its device state, QEMU writing its memory afterwards with userfaultfd (a QEMU confined in namespaces keeps CAP_SYS_PTRACE for it unless vm.unprivileged_userfaultfd is 1); off: QEMU gets no userfaultfd, memory is saved while paused or by precopy",
      )
        .choices(["auto", "off"])
        .default("auto", "auto"),
    )
    .option("--no-limits", "no per-instance cgroup limits (memory and CPU)")
    .option(
      "--boot-timeout <seconds>",
      "a booting guest whose console stays silent this long is reported stalled (0: never)",
      (v) => {
        const n = Number(v);
        if (!Number.isFinite(n) || n < 0)
          throw new OvmsError("USAGE", `--boot-timeout ${v}: want seconds, 0 or more`);
        return n;
      },
      60,
    )
    .option("--group <name>", "give this group access to the socket (mode 0660 instead of 0600)")
    .option("--listen <host:port>", "also listen on TCP (requires --token)")
    .option("--token <token>", "bearer token TCP requests must carry (default: $OVMD_TOKEN)")
    .option(
      "--http <host:port>",
      "serve the web console (and the API it calls) on TCP, e.g. 127.0.0.1:7070; token from --token, else one made into <state dir>/http-token",
    )
    .option(
      "--bench-results <dir>",
      "benchmark results the console draws (default: the package's bench/results)",
    )
    .option(
      "--policy <file>",
      "trust policy every POST /start is admitted by (default: $OVM_POLICY; none: no signature checks)",
    )
    .option(
      "--warm-pool <n>",
      "paused QEMU processes kept ready per hot snapshot artifact (0: off; ovm pool ls shows them)",
      (v) => {
        const n = /^\d+$/.test(v) ? Number(v) : NaN;
        if (!Number.isSafeInteger(n))
          throw new OvmsError("USAGE", `--warm-pool ${v}: expected a whole number ≥ 0`);
        return n;
      },
      1,
    )
    .option(
      "--warm-pool-for <ref=n>",
      "pool size for one snapshot artifact (reference or digest), repeatable; overrides --warm-pool",
      (v: string, prev: Record<string, number> = {}) => {
        const i = v.lastIndexOf("=");
        const n = Number(v.slice(i + 1));
        if (i <= 0 || !Number.isInteger(n) || n < 0)
          throw new OvmsError("USAGE", `--warm-pool-for ${v}: want REF=N`);
        return { ...prev, [v.slice(0, i)]: n };
      },
    )
    .option(
      "--snapshot-cache <size>",
      "cap on the store's preloaded RAM snapshots in tmpfs; least recently used go first, never one in use (default: 2G)",
      (v) => parseSize(v, "--snapshot-cache"),
    )
    .addOption(
      new Option("--log-level <level>", "how much to log on stderr")
        .choices(LOG_LEVELS)
        .default("info", "info"),
    );
}

/** serveOptions turns parsed flags into ServeOptions. */
export function serveOptions(flags: DaemonFlags): ServeOptions {
  const o: ServeOptions = {};
  if (flags.socket) o.socket = flags.socket;
  if (flags.store) o.store = flags.store;
  if (flags.stateDir) o.stateDir = flags.stateDir;
  if (flags.group) o.group = flags.group;
  if (flags.listen) o.listen = flags.listen;
  if (flags.token) o.token = flags.token;
  if (flags.http) o.http = flags.http;
  if (flags.benchResults) o.benchResults = flags.benchResults;
  if (flags.logLevel) o.logLevel = flags.logLevel;
  if (flags.warmPool !== undefined && Number.isInteger(flags.warmPool)) o.warmPool = flags.warmPool;
  if (flags.warmPoolFor) o.warmPools = flags.warmPoolFor;
  if (flags.policy) o.policy = flags.policy;
  if (flags.snapshotCache !== undefined) o.snapshotCache = flags.snapshotCache;
  if (flags.confine) o.confine = flags.confine;
  if (flags.limits === false) o.limits = false;
  if (flags.backgroundSnapshots === "off") o.backgroundSnapshots = false;
  if (flags.bootTimeout !== undefined) o.bootTimeoutMs = Math.round(flags.bootTimeout * 1000);
  return o;
}
