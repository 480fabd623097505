import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { formatReference, parseReference } from "../core/reference.js";
import { Store } from "../store/store.js";
import { runChecks, type Check, type Result, type RunHooks } from "./check.js";
import { ArtifactContext, fetchArtifact } from "./artifact-source.js";
import { MANIFEST_CHECKS, OCI_CHECKS } from "./artifact-checks.js";
import { DISK_CHECKS } from "./disk-checks.js";
import { RAMSNAP_CHECKS } from "./ramsnap-checks.js";
import { makeReport, type Report } from "./report.js";

/**
 * ARTIFACT_CHECKS are the Artifact level (rfc §9) in the order they run: the OCI wrapping
 * first (what a registry sees), then the OVMS manifest, the blobs, disk layers, RAM snapshot.
 */
export const ARTIFACT_CHECKS: Check<ArtifactContext>[] = [
  ...OCI_CHECKS.slice(0, 3),
  ...MANIFEST_CHECKS,
  ...OCI_CHECKS.slice(3),
  ...DISK_CHECKS,
  ...RAMSNAP_CHECKS,
];

/** checkStoredArtifact runs the Artifact level on an artifact of a local OCI layout store. */
export async function checkStoredArtifact(
  store: Store,
  reference: string,
  hooks: RunHooks = {},
): Promise<Result[]> {
  return runChecks(ARTIFACT_CHECKS, await ArtifactContext.load(store, reference), hooks);
}

/** ArtifactSuiteOptions say what to check and where to look for it. */
export interface ArtifactSuiteOptions {
  /** given is a reference (the local store, else its registry) or a path to an OCI layout (`PATH[:NAME]`). */
  given: string;
  /** store is the local store to look in first. */
  store: Store;
  /** pull brings a reference from its registry into a (temporary) store. */
  pull: (reference: string, into: Store) => Promise<void>;
  hooks?: RunHooks;
  onStep?: (line: string) => void;
}

/**
 * runArtifactSuite checks one artifact against the Artifact level: from the local store when
 * it is there, otherwise pulled (or copied from a layout) into a temporary store that is
 * removed afterwards, every blob verified on the way in.
 */
export async function runArtifactSuite(opts: ArtifactSuiteOptions): Promise<Report> {
  const started = new Date();
  const tmp = await mkdtemp(join(tmpdir(), "ovms-conformance-artifact-"));
  try {
    const { store, reference, from } = await fetchArtifact(
      opts.given,
      opts.store,
      await Store.open(tmp),
      opts.pull,
    );
    opts.onStep?.(`checking ${opts.given} from ${from}`);
    const ctx = await ArtifactContext.load(store, reference);
    const results = await runChecks(ARTIFACT_CHECKS, ctx, opts.hooks);
    const about: Record<string, unknown> = { digest: ctx.descriptor.digest, from };
    return makeReport("artifact", targetName(opts.given), ["artifact"], results, started, about);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

function targetName(given: string): string {
  try {
    return formatReference(parseReference(given));
  } catch {
    return given;
  }
}
