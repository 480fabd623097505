import { digestHex, type Digest } from "../core/digest.js";
import { Annotation } from "../core/media-types.js";

/**
 * The in-toto Statement v1 an OVMS signature signs, the one `cosign sign --new-bundle-format`
 * writes for an image (https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md):
 * one subject, the signed OCI manifest's sha256, and cosign's signing predicate type with an
 * empty predicate. It travels in a DSSE envelope of payload type application/vnd.in-toto+json.
 */

/** IN_TOTO_PAYLOAD_TYPE is the DSSE payload type of an in-toto statement. */
export const IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json";
/** STATEMENT_TYPE is the `_type` of an in-toto Statement v1. */
export const STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
/** COSIGN_SIGN_PREDICATE is the predicate type cosign's `sign` writes (types.CosignSignPredicateType). */
export const COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1";

/** Statement is the part of an in-toto Statement v1 OVMS reads. */
export interface Statement {
  _type: string;
  subject: { name?: string; digest: Record<string, string>; annotations?: Record<string, unknown> }[];
  predicateType: string;
  predicate?: unknown;
}

/**
 * signingStatement is the statement that signs the manifest `digest`. The signing time goes in
 * the subject's annotations (where cosign puts `-a key=value`), so it is covered by the
 * signature: a signer's claim, not a trusted timestamp.
 */
export function signingStatement(digest: Digest, signedAt: string): Buffer {
  const s: Statement = {
    _type: STATEMENT_TYPE,
    subject: [{ digest: { sha256: digestHex(digest) }, annotations: { [Annotation.Created]: signedAt } }],
    predicateType: COSIGN_SIGN_PREDICATE,
    predicate: {},
  };
  return Buffer.from(JSON.stringify(s));
}

/**
 * checkStatement reads a DSSE payload as the statement that signs exactly the manifest
 * `digest`: `_type` Statement v1, cosign's signing predicate, and one subject whose only
 * digest is that manifest's sha256. Returns the signing time it claims, or why it does not sign
 * this manifest.
 */
export function checkStatement(payload: Buffer, digest: Digest): { signedAt?: string } | { reason: string } {
  let s: Partial<Statement>;
  try {
    s = JSON.parse(payload.toString("utf8"));
  } catch {
    return { reason: "the signed payload is not JSON" };
  }
  if (typeof s !== "object" || s === null)
    return { reason: "the signed payload is not an in-toto statement" };
  if (s._type !== STATEMENT_TYPE)
    return { reason: `the signed statement's _type is ${JSON.stringify(s._type)}, want ${STATEMENT_TYPE}` };
  if (s.predicateType !== COSIGN_SIGN_PREDICATE)
    return {
      reason: `the signed statement's predicateType is ${JSON.stringify(s.predicateType)}, want ${COSIGN_SIGN_PREDICATE}`,
    };
  if (!Array.isArray(s.subject) || s.subject.length !== 1)
    return {
      reason: `the signed statement has ${Array.isArray(s.subject) ? s.subject.length : 0} subjects, want 1`,
    };
  const d = s.subject[0]?.digest;
  const entries = d && typeof d === "object" ? Object.entries(d) : [];
  if (entries.length !== 1 || entries[0][0] !== "sha256" || entries[0][1] !== digestHex(digest)) {
    return {
      reason: `it signs ${entries.map(([k, v]) => `${k}:${String(v)}`).join(", ") || "no digest"}, not ${digest}`,
    };
  }
  const at = s.subject[0].annotations?.[Annotation.Created];
  return typeof at === "string" ? { signedAt: at } : {};
}
