import { OvmsError } from "../core/errors.js";
import { Annotation } from "../core/media-types.js";
import { formatReference, parseReference, repositoryOf } from "../core/reference.js";
import type { Store } from "../store/store.js";

/**
 * PullFn brings `reference` from its registry into `store` and names it there by its full
 * reference; `signal` stops it (the client that asked went away).
 */
export type PullFn = (store: Store, reference: string, opts?: { signal?: AbortSignal }) => Promise<void>;

/**
 * pullFromRegistry is the default PullFn: registry/copy from the reference's registry into
 * the store (referrers too, this host's platform when it is an index), named by the full
 * reference. A registry that has no such artifact, refuses access or cannot be reached is
 * ARTIFACT_NOT_FOUND, saying which. `signal` stops the pull (CANCELLED), leaving nothing half-written.
 */
export async function pullFromRegistry(
  store: Store,
  reference: string,
  opts: { signal?: AbortSignal } = {},
): Promise<void> {
  const [{ RegistryClient }, { copy }, { hostPlatform }, { RegistryError }] = await Promise.all([
    import("../registry/client.js"),
    import("../registry/copy.js"),
    import("../registry/platform.js"),
    import("../registry/registry-error.js"),
  ]);
  const r = parseReference(reference);
  const name = r.tag ? formatReference({ ...r, digest: undefined }) : undefined;
  const client = new RegistryClient({ retry: { attempts: 2 } });
  try {
    await copy(client.repository(r), r.digest ?? r.tag!, store, name, {
      referrers: true,
      platform: hostPlatform(),
      signal: opts.signal,
      // Where it came from goes on its name, for the policy's admission (sign/admission originOf).
      nameAnnotations: { [Annotation.Origin]: repositoryOf(r) },
    });
  } catch (e) {
    if (e instanceof RegistryError) {
      const why =
        e.status === 404 || ["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "NOT_FOUND"].includes(e.code)
          ? "the registry has no such artifact"
          : e.code === "UNAUTHORIZED" || e.code === "DENIED"
            ? "the registry refused access (does it need `ovm login`?)"
            : e.code === "REGISTRY_UNREACHABLE"
              ? "the registry cannot be reached"
              : undefined;
      if (why) {
        throw new OvmsError(
          "ARTIFACT_NOT_FOUND",
          `${reference}: not in the store, and ${why}: ${e.message}`,
          {
            cause: e,
            details: { registry: r.registry, registry_code: e.code },
          },
        );
      }
    }
    throw e;
  } finally {
    await client.close();
  }
}
