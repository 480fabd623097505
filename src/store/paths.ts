import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { digestHex, sha256 } from "../core/digest.js";

/**
 * defaultStateDir is where OVMS keeps its state: `/var/lib/ovms` as root, else
 * `$XDG_DATA_HOME/ovms` (default `~/.local/share/ovms`).
 */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (process.getuid?.() === 0) return "/var/lib/ovms";
  return join(env.XDG_DATA_HOME || join(homedir(), ".local", "share"), "ovms");
}

/** defaultStoreDir is the store used when neither `--store` nor `OVM_STORE` names one: `<state dir>/store`. */
export function defaultStoreDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(defaultStateDir(env), "store");
}

/** resolveStoreDir picks the store: the flag, else `OVM_STORE`, else the default store. */
export function resolveStoreDir(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  return flag || env.OVM_STORE || defaultStoreDir(env);
}

/**
 * daemonStateDir is where the daemon serving the store `storeDir` keeps its instances, pid
 * file and log: `<state dir>/daemons/<key>`, the key naming the store's absolute path, so that
 * daemons of different stores never share instances. It is never inside the store: a store may
 * sit anywhere, in a folder only its owner may enter, and the daemon's state is its own.
 */
export function daemonStateDir(storeDir: string, env: NodeJS.ProcessEnv = process.env): string {
  return join(defaultStateDir(env), "daemons", digestHex(sha256(resolve(storeDir))).slice(0, 16));
}
