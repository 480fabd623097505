import { homedir } from "node:os";
import { join } from "node:path";

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
