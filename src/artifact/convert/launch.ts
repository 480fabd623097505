import type { BootstrapConfig } from "../../core/bootstrap.js";
import { OvmsError } from "../../core/errors.js";

/**
 * The launch file: how a runtime hands OVMS-Init (scripts/ovms-init/) what to run (rfc §6.7).
 * The bootstrap config and the start's overrides are resolved here by the rules of the OCI
 * image spec and `docker run` (argv = entrypoint + cmd, a command override replaces cmd,
 * environment overrides replace names), and written as POSIX shell that OVMS-Init sources:
 * every string single-quoted, so nothing in it is ever expanded. Pure: tested without a VM.
 */

/** LaunchOverrides are what one start asks beyond the image's config. */
export interface LaunchOverrides {
  /** Replaces the image's cmd (arguments after the entrypoint). */
  args?: string[];
  /** NAME=VALUE entries that replace or add environment names. */
  env?: string[];
  /** The guest's hostname (the instance name). */
  hostname?: string;
  /** The program's stdin comes from the runtime (the control channel), not /dev/null. */
  stdin?: boolean;
}

/** Launch is what OVMS-Init runs, fully resolved. */
export interface Launch {
  argv: string[];
  env: string[];
  workdir: string;
  uid: number;
  gid: number;
  /** Signal name without `SIG` (busybox `kill -s`). */
  stopSignal: string;
  hostname?: string;
  /** stdin from the runtime (`ovms_stdin=1`, rfc §6.7). */
  stdin?: boolean;
}

/** DEFAULT_PATH is the PATH a program gets when the image sets none (as docker does). */
export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** ENV_NAME is an environment name the guest can set: not empty, no `=`, not an option. */
const ENV_NAME = /^[^=\-\s][^=]*$/;

/**
 * resolveLaunch applies the OCI rules to a bootstrap config and a start's overrides:
 * argv = entrypoint + (args ?? cmd); env = image env with overrides replacing names, plus
 * PATH, HOME and HOSTNAME when the image does not set them. An empty argv, or a program name
 * with `=`, is refused (INVALID_ARGUMENT): there is nothing OVMS-Init could run.
 */
export function resolveLaunch(b: BootstrapConfig, o: LaunchOverrides = {}): Launch {
  const argv = [...(b.entrypoint ?? []), ...(o.args?.length ? o.args : (b.cmd ?? []))];
  if (argv.length === 0 || argv[0] === "")
    throw new OvmsError(
      "INVALID_ARGUMENT",
      "no command to run: the image has neither an entrypoint nor a cmd; give one after `--`",
    );
  if (argv[0].includes("="))
    throw new OvmsError("INVALID_ARGUMENT", `command "${argv[0]}": a program name cannot contain "="`);
  const env = new Map<string, string>();
  const put = (entry: string, where: string) => {
    const eq = entry.indexOf("=");
    const name = eq > 0 ? entry.slice(0, eq) : "";
    if (!ENV_NAME.test(name) || entry.includes("\0"))
      throw new OvmsError("INVALID_ARGUMENT", `${where} "${entry}": expected NAME=VALUE`);
    env.set(name, entry.slice(eq + 1));
  };
  for (const e of b.env ?? []) put(e, "image environment entry");
  for (const e of o.env ?? []) put(e, "environment override");
  const uid = b.user?.uid ?? 0;
  if (!env.has("PATH")) env.set("PATH", DEFAULT_PATH);
  if (!env.has("HOME")) env.set("HOME", uid === 0 ? "/root" : "/");
  if (o.hostname && !env.has("HOSTNAME")) env.set("HOSTNAME", o.hostname);
  for (const s of argv) {
    if (s.includes("\0")) throw new OvmsError("INVALID_ARGUMENT", "a command argument holds a NUL byte");
  }
  const launch: Launch = {
    argv,
    env: [...env].map(([k, v]) => `${k}=${v}`),
    workdir: b.workdir || "/",
    uid,
    gid: b.user?.gid ?? 0,
    stopSignal: (b.stopSignal ?? "SIGTERM").replace(/^SIG/, ""),
  };
  if (o.hostname) launch.hostname = o.hostname;
  if (o.stdin) launch.stdin = true;
  return launch;
}

/** shellQuote writes `s` as one single-quoted shell word: nothing inside is expanded. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** GUEST_BUSYBOX is where OVMS-Init's stage 1 puts busybox inside the image's /dev (devtmpfs). */
export const GUEST_BUSYBOX = "/dev/.ovms/busybox";

/**
 * renderLaunch writes the launch file OVMS-Init sources (scripts/ovms-init/init2): the
 * variables it reads and `ovms_exec`, which replaces the shell with the program: an empty
 * environment filled with `env`'s entries (`env -i`), then uid and gid set (`nsenter -S -G`,
 * which also clears supplementary groups), then argv, looked up in the program's own PATH.
 */
export function renderLaunch(l: Launch): string {
  const q = shellQuote;
  const exec = [
    GUEST_BUSYBOX,
    "env",
    "-i",
    "--",
    ...l.env.map(q),
    GUEST_BUSYBOX,
    "nsenter",
    "-F",
    "-S",
    String(l.uid),
    "-G",
    String(l.gid),
    "--",
    ...l.argv.map(q),
  ].join(" ");
  return [
    "# OVMS-Init launch file (rfc/ovms-v0.1.md §6.7), written by the runtime for one instance.",
    `ovms_hostname=${q(l.hostname ?? "")}`,
    `ovms_workdir=${q(l.workdir)}`,
    `ovms_stop_signal=${q(l.stopSignal)}`,
    ...(l.stdin ? ["ovms_stdin='1'"] : []),
    "ovms_exec() {",
    `  exec ${exec}`,
    "}",
    "",
  ].join("\n");
}
