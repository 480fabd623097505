import type { ContentStore } from "../core/content.js";
import { Annotation, hasRamSnapshotLayer } from "../core/media-types.js";
import type { Descriptor, ImageManifest } from "../core/oci.js";
import { MAX_MANIFEST, readAll } from "../registry/manifest-bytes.js";
import type { TrustedKey } from "./keys.js";
import { ruleFor, type Policy } from "./policy.js";
import { SignError } from "./sign-error.js";
import { verifySignatures, type SignatureCheck, type VerifyReport } from "./verify.js";

/**
 * Admission: applying a policy to one artifact (rfc §8.3). Used by `ovm pull --policy`
 * (before the pulled manifest is named) and by ovmd at `POST /start` (after the artifact is
 * resolved, before anything is unpacked or preloaded).
 */

/** Origin is where an artifact came from: a registry repository, a path (`file://…`), or this host. */
export type Origin = { local: true } | { repository: string };

/** AdmissionRequest is the artifact to judge. */
export interface AdmissionRequest {
  /** reference as it was asked for (messages name it). */
  reference: string;
  /** descriptor of the artifact's OCI manifest. */
  descriptor: Descriptor;
  /** ramSnapshot: the artifact carries a RAM snapshot. */
  ramSnapshot: boolean;
  from: Origin;
}

/** Decision is a policy's answer and why. */
export interface Decision {
  allowed: boolean;
  /** rule names the rule that decided (`scopes[0] (match "…")`, `default`, `local`). */
  rule: string;
  reason: string;
  /** signatures: what verification found, when a signature was needed. */
  report?: VerifyReport;
  /** signer: the signature that let it in. */
  signer?: SignatureCheck;
}

/**
 * originOf reads where a store entry came from: the `ovms.origin` annotation a pull records on
 * the name it writes (the registry repository), else this host (built, snapshotted, imported).
 */
export function originOf(entry: Descriptor): Origin {
  const o = entry.annotations?.[Annotation.Origin];
  return o ? { repository: o } : { local: true };
}

/**
 * carriesRamSnapshot reads the manifest `desc` from `source` and tells whether it has a RAM
 * snapshot layer. The layer list decides, not the OVMS config: rule S6 makes a ramSnapshot
 * part a layer of that media type, so an artifact cannot carry one without showing it here.
 */
export async function carriesRamSnapshot(source: ContentStore, desc: Descriptor): Promise<boolean> {
  const m = JSON.parse(
    (
      await readAll(
        await source.fetch({ mediaType: desc.mediaType, digest: desc.digest, size: desc.size }),
        MAX_MANIFEST,
      )
    ).toString("utf8"),
  ) as Partial<ImageManifest>;
  return hasRamSnapshotLayer(m);
}

function keyNames(keys: TrustedKey[]): string {
  return keys.map((k) => k.name).join(", ");
}

/**
 * decide applies `policy` to an artifact whose signatures are found in `source`: the rule for
 * its origin says accept, reject, or require a signature by its keys; an artifact with a RAM
 * snapshot needs a signature whatever its rule (by the rule's keys, or any key of the policy)
 * unless the policy says `ramSnapshots: accept`.
 */
export async function decide(policy: Policy, req: AdmissionRequest, source: ContentStore): Promise<Decision> {
  const rule = ruleFor(policy, req.from);
  if (rule.action === "reject")
    return { allowed: false, rule: rule.name, reason: `rule ${rule.name} rejects it` };
  const snapshot = req.ramSnapshot && policy.ramSnapshots === "requireSigned";
  if (rule.action === "accept" && !snapshot)
    return { allowed: true, rule: rule.name, reason: `rule ${rule.name} accepts it` };
  const keys = rule.keys.length ? rule.keys : [...policy.keys.values()];
  const why =
    rule.action === "requireSigned"
      ? `rule ${rule.name} requires a signature by ${keyNames(keys)}`
      : `it carries a RAM snapshot, and unsigned RAM snapshots may not run (ramSnapshots: requireSigned; rule ${rule.name}) — it needs a signature by ${keys.length ? keyNames(keys) : "a key of the policy, which has none"}`;
  const report = await verifySignatures(source, req.descriptor, keys);
  const signer = report.signatures.find((s) => s.ok);
  if (signer)
    return {
      allowed: true,
      rule: rule.name,
      reason: `${why}: signed by ${signer.keyName} (${signer.key})`,
      report,
      signer,
    };
  const found = report.signatures.length
    ? `${report.signatures.length} signature(s), none verifies: ${report.signatures.map((s) => `${s.digest}: ${s.reason}`).join("; ")}`
    : "it has no signature (was it pulled with its referrers?)";
  return { allowed: false, rule: rule.name, reason: `${why}, and ${found}`, report };
}

/** enforce is `decide` that throws POLICY_DENIED naming the policy, the reference, the digest, the rule and why. */
export async function enforce(
  policy: Policy,
  req: AdmissionRequest,
  source: ContentStore,
): Promise<Decision> {
  const d = await decide(policy, req, source);
  if (!d.allowed) {
    throw new SignError(
      "POLICY_DENIED",
      `policy ${policy.file} refuses ${req.reference} (${req.descriptor.digest}): ${d.reason}`,
      { details: { rule: d.rule, reference: req.reference, digest: req.descriptor.digest } },
    );
  }
  return d;
}
