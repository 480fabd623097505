import { isDigest } from "../core/digest.js";
import { FileBoundMemo } from "../core/fingerprint.js";
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
  memo?: ArtifactMemo,
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
  const known = memo?.recall(desc, reference);
  if (known) return known;
  const a = await loadStoredArtifact(store, desc, reference);
  memo?.remember(store, a);
  return a;
}

/**
 * ArtifactMemo remembers artifacts loaded and validated from a store, by manifest digest, for
 * as long as their manifest and config blobs are the files that were read (same inode, size
 * and mtime): content-addressed bytes that have not changed validate the same way again, so a
 * restore does not re-read, re-hash and re-validate them at every start. Held by its user (the
 * daemon's controller).
 */
export class ArtifactMemo {
  private readonly known = new FileBoundMemo<string, Artifact>();

  recall(desc: Descriptor, reference: string): Artifact | undefined {
    const hit = this.known.get(desc.digest);
    // The descriptor is today's (its annotations say where it came from), the rest is content.
    return hit && { ...hit, reference, descriptor: desc };
  }

  remember(store: Store, a: Artifact): void {
    const files = [a.descriptor.digest, a.oci.config.digest].map((d) => store.blobPath(d));
    this.known.set(a.descriptor.digest, a, files);
  }
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
