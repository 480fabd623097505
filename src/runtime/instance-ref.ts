import { RuntimeError } from "./runtime-error.js";

/** MIN_PREFIX is the shortest id prefix taken for an instance: shorter ones match too much. */
export const MIN_PREFIX = 6;

const PREFIX_RE = /^[0-9a-f-]{6,36}$/;

/**
 * resolveInstanceRef finds the one instance a client named: its id, its name, or the start
 * of its id (at least MIN_PREFIX characters, with or without the dashes, as `ovm ps` shows
 * ids). An exact id wins over a name, a name over a prefix. A prefix shared by several ids
 * names none of them: NOT_FOUND says to give more of it rather than picking one.
 */
export function resolveInstanceRef<T extends { id: string; name: string }>(
  ref: string,
  instances: Iterable<T>,
): T {
  const all = [...instances];
  const hit = all.find((i) => i.id === ref) ?? all.find((i) => i.name === ref);
  if (hit) return hit;
  if (ref.length >= MIN_PREFIX && PREFIX_RE.test(ref)) {
    const want = ref.replace(/-/g, "");
    const hits = all.filter((i) => i.id.replace(/-/g, "").startsWith(want));
    if (hits.length === 1) return hits[0];
    if (hits.length > 1)
      throw new RuntimeError(
        "NOT_FOUND",
        `"${ref}" is the start of ${hits.length} instance ids; give more of it`,
      );
  }
  throw new RuntimeError("NOT_FOUND", `no instance "${ref}"`);
}
