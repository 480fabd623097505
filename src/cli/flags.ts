import { OvmsError } from "../core/errors.js";

/** STORE_HELP says, in the order resolveStoreDir tries them, which store a command uses. */
export const STORE_HELP =
  "local store (default: $OVM_STORE, else /var/lib/ovms/store as root, else $XDG_DATA_HOME/ovms/store, with ~/.local/share for an unset XDG_DATA_HOME)";

/** MAX_VCPUS is the most vCPUs an instance can have (the API's StartOverrides.cpus and the manifest's resources.vcpus). */
const MAX_VCPUS = 255;

/** cpuCount parses `--cpus`: a whole number of vCPUs from 1 to 255; `abc`, `0`, `1.5`, `2x` are refused. */
export function cpuCount(v: string): number {
  const n = /^\d+$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_VCPUS)
    throw new OvmsError("USAGE", `--cpus ${v}: expected a whole number of vCPUs from 1 to ${MAX_VCPUS}`);
  return n;
}

/** NAME_PATTERN is the API's InstanceName pattern. */
const NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;

/** instanceName checks `--name` before the daemon sees it, in the words of the flag. */
export function instanceName(v: string): string {
  if (!NAME_PATTERN.test(v))
    throw new OvmsError(
      "USAGE",
      `--name '${v}': names are letters, digits, '.', '_' and '-', start with a letter or digit, and have at most 63 characters`,
    );
  return v;
}
