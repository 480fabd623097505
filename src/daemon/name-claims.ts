import { OvmsError } from "../core/errors.js";
import type { Runtime } from "../runtime/types.js";

/**
 * NameClaims gives an instance name to one start at a time. A name is claimed before the first
 * await of a start, so two starts with one name cannot both get past the check; an instance the
 * runtime already has under that name (in any state) refuses it too.
 */
export class NameClaims {
  private readonly claimed = new Set<string>();

  /** claim takes `name` for a start (nothing when undefined) and returns what releases it. */
  async claim(name: string | undefined, runtime: Runtime): Promise<() => void> {
    if (name === undefined) return () => undefined;
    if (this.claimed.has(name))
      throw new OvmsError("CONFLICT", `name "${name}" is being used by an instance that is starting`);
    this.claimed.add(name);
    const release = () => void this.claimed.delete(name);
    try {
      const clash = (await runtime.list({ all: true })).find((i) => i.name === name);
      if (clash)
        throw new OvmsError(
          "CONFLICT",
          `name "${name}" is already used by instance ${clash.id} (${clash.state}); remove it first`,
        );
    } catch (e) {
      release();
      throw e;
    }
    return release;
  }
}
