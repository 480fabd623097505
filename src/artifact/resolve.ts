import { isDigest } from "../core/digest.js";
import { OvmsError, isOvmsError } from "../core/errors.js";
import type { Descriptor } from "../core/oci.js";
import { parseReference } from "../core/reference.js";
import type { Store } from "../store/store.js";
import { loadArtifactByDescriptor, type Artifact } from "./artifact.js";

/** FetchMissing brings `reference` from wherever it lives into `store`, named by it there. */
export type FetchMissing = (store: Store, reference: string) => Promise<void>;

/**
 * resolveReference turns a reference someone asked to run into a validated artifact of the
 * store: looked up there, else fetched with `fetchMissing` (a pull) and looked up again. A
 * bare digest names no repository to pull from, so it is only ever looked up. What is nowhere
 * is ARTIFACT_NOT_FOUND, saying why; a malformed reference is INVALID_REFERENCE before
 * anything is looked up.
 */
export async function resolveReference(
  store: Store,
  reference: string,
  fetchMissing: FetchMissing,
): Promise<Artifact> {
  parseReference(reference);
  let desc: Descriptor;
  try {
    desc = await store.resolve(reference);
  } catch (e) {
    if (!isOvmsError(e, "NOT_FOUND")) throw e;
    if (isDigest(reference))
      throw new OvmsError(
        "ARTIFACT_NOT_FOUND",
        `${reference}: not in the store (a bare digest cannot be pulled: name its repository)`,
      );
    await fetchMissing(store, reference);
    desc = await store.resolve(reference).catch((e2: unknown) => {
      throw isOvmsError(e2, "NOT_FOUND")
        ? new OvmsError("ARTIFACT_NOT_FOUND", `${reference}: not in the store after the pull`)
        : e2;
    });
  }
  return loadStoredArtifact(store, desc, reference);
}

/**
 * loadStoredArtifact loads an artifact a client asked for from the store: a manifest or
 * config missing there means the artifact is not found (ARTIFACT_NOT_FOUND), not that the
 * store lost something.
 */
export async function loadStoredArtifact(
  store: Store,
  desc: Descriptor,
  reference: string,
): Promise<Artifact> {
  try {
    return await loadArtifactByDescriptor(store, desc, reference);
  } catch (e) {
    if (isOvmsError(e, "NOT_FOUND"))
      throw new OvmsError("ARTIFACT_NOT_FOUND", `${reference}: ${e.message}`, { cause: e });
    throw e;
  }
}
