import { bundleFromJSON, type Bundle } from "@sigstore/bundle";
import { Verifier, toSignedEntity, type TrustMaterial } from "@sigstore/verify";
import type { ContentStore } from "../core/content.js";
import { type Digest } from "../core/digest.js";
import { MediaType } from "../core/media-types.js";
import type { Descriptor, ImageManifest } from "../core/oci.js";
import { readAll } from "../registry/manifest-bytes.js";
import type { TrustedKey } from "./keys.js";
import { MAX_BUNDLE, signatureShapeProblem } from "./signature-artifact.js";
import { IN_TOTO_PAYLOAD_TYPE, checkStatement } from "./statement.js";

/** MAX_SIGNATURE_MANIFEST bounds a signature referrer manifest (they are well under 1 KiB). */
const MAX_SIGNATURE_MANIFEST = 64 << 10;

/** SignatureCheck is what verifying one signature referrer found. */
export interface SignatureCheck {
  /** digest of the referrer manifest. */
  digest: Digest;
  ok: boolean;
  /** key is the fingerprint of the trusted key it verified with. */
  key?: string;
  /** keyName is that key's name (a policy's key name, or the file it was read from). */
  keyName?: string;
  /** signedAt is the time the signer put in the signed statement (its claim; no trusted timestamp is required offline). */
  signedAt?: string;
  /** reason says why it did not verify. */
  reason?: string;
  /** unchecked lists material the bundle carries that offline verification does not check (tlog entries, timestamps). */
  unchecked?: string[];
}

/** VerifyReport is the outcome of verifying an artifact's signatures with a set of keys. */
export interface VerifyReport {
  digest: Digest;
  verified: boolean;
  signatures: SignatureCheck[];
}

/** trustMaterial is offline trust: no CA, log or timestamp authority, one public key whatever the hint. */
function trustMaterial(key: TrustedKey): TrustMaterial {
  return {
    certificateAuthorities: [],
    timestampAuthorities: [],
    tlogs: [],
    ctlogs: [],
    publicKey: () => ({ publicKey: key.publicKey, validFor: () => true }),
  };
}

/**
 * verifyBundle verifies one sigstore bundle as a signature of the manifest `subject` with the
 * trusted `keys`: a v0.3 bundle holding a DSSE envelope of an in-toto statement
 * (application/vnd.in-toto+json) whose subject is exactly that manifest's sha256 and whose
 * predicate is cosign's signing predicate (statement.ts), and a signature over the envelope's
 * PAE bytes that @sigstore/verify's Verifier accepts with one of the keys, with thresholds of
 * 0 for transparency-log entries, SCTs and timestamps (key-based, offline).
 */
export function verifyBundle(
  bytes: Buffer,
  subject: Digest,
  keys: TrustedKey[],
): Omit<SignatureCheck, "digest"> {
  let bundle: Bundle;
  try {
    bundle = bundleFromJSON(JSON.parse(bytes.toString("utf8")));
  } catch (e) {
    return { ok: false, reason: `not a sigstore bundle: ${(e as Error).message}` };
  }
  if (bundle.mediaType !== MediaType.SigstoreBundle)
    return { ok: false, reason: `bundle media type ${bundle.mediaType}, want ${MediaType.SigstoreBundle}` };
  if (bundle.content.$case !== "dsseEnvelope")
    return { ok: false, reason: `a ${bundle.content.$case} bundle; OVMS signatures are DSSE envelopes` };
  const env = bundle.content.dsseEnvelope;
  if (env.payloadType !== IN_TOTO_PAYLOAD_TYPE)
    return { ok: false, reason: `DSSE payload type ${env.payloadType}, want ${IN_TOTO_PAYLOAD_TYPE}` };
  if (env.signatures.length !== 1)
    return { ok: false, reason: `the envelope has ${env.signatures.length} signatures, want 1` };
  const statement = checkStatement(Buffer.from(env.payload), subject);
  if ("reason" in statement) return { ok: false, reason: statement.reason };
  if (bundle.verificationMaterial.content.$case !== "publicKey")
    return {
      ok: false,
      reason: `signed with a ${bundle.verificationMaterial.content.$case} (keyless); only key-based signatures are verified offline`,
    };
  // Offline, with no log or authority to check them against, transparency-log entries and
  // timestamps are not evidence of anything: they are set aside (and reported), not trusted.
  const vm = bundle.verificationMaterial;
  const unchecked: string[] = [];
  if (vm.tlogEntries.length) unchecked.push(`${vm.tlogEntries.length} transparency-log entries`);
  const ts = vm.timestampVerificationData?.rfc3161Timestamps.length ?? 0;
  if (ts) unchecked.push(`${ts} RFC 3161 timestamps`);
  const offline = {
    ...bundle,
    verificationMaterial: { ...vm, tlogEntries: [], timestampVerificationData: { rfc3161Timestamps: [] } },
  } as Bundle;
  const entity = toSignedEntity(offline);
  for (const key of keys) {
    try {
      new Verifier(trustMaterial(key), { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 }).verify(
        entity,
      );
      const out: Omit<SignatureCheck, "digest"> = { ok: true, key: key.fingerprint, keyName: key.name };
      if (statement.signedAt) out.signedAt = statement.signedAt;
      if (unchecked.length) out.unchecked = unchecked;
      return out;
    } catch {
      // not this key; try the next
    }
  }
  return {
    ok: false,
    reason: keys.length
      ? `the signature does not verify with ${keys.length === 1 ? `key ${keys[0].name} (${keys[0].fingerprint})` : `any of ${keys.length} trusted keys (${keys.map((k) => k.name).join(", ")})`}`
      : "no trusted key was given",
  };
}

/**
 * verifySignatures finds the signature referrers of the manifest `subject` in `source` (a
 * store, or a registry repository: Referrers API or its tag fallback) and verifies each with
 * `keys`. A signature whose referrer is malformed, missing or corrupt is reported with the
 * reason, never fatal; the artifact is verified when at least one signature verifies.
 */
export async function verifySignatures(
  source: ContentStore,
  subject: Descriptor,
  keys: TrustedKey[],
): Promise<VerifyReport> {
  const list = await source.referrers(subject, MediaType.SigstoreBundle);
  const signatures: SignatureCheck[] = [];
  for (const r of list) {
    signatures.push({ digest: r.digest, ...(await checkReferrer(source, r, subject.digest, keys)) });
  }
  return { digest: subject.digest, verified: signatures.some((s) => s.ok), signatures };
}

async function checkReferrer(
  source: ContentStore,
  r: Descriptor,
  subject: Digest,
  keys: TrustedKey[],
): Promise<Omit<SignatureCheck, "digest">> {
  try {
    if (r.size > MAX_SIGNATURE_MANIFEST)
      return { ok: false, reason: `referrer manifest of ${r.size} bytes is too large` };
    const desc: Descriptor = { mediaType: r.mediaType, digest: r.digest, size: r.size };
    const m = JSON.parse(
      (await readAll(await source.fetch(desc), MAX_SIGNATURE_MANIFEST)).toString("utf8"),
    ) as Partial<ImageManifest>;
    const shape = signatureShapeProblem(m, subject);
    if (shape) return { ok: false, reason: `not a signature of ${subject}: ${shape}` };
    const layer = m.layers![0];
    const bundle = await readAll(
      await source.fetch({ mediaType: layer.mediaType, digest: layer.digest, size: layer.size }),
      MAX_BUNDLE,
    );
    return verifyBundle(bundle, subject, keys);
  } catch (e) {
    return { ok: false, reason: `cannot read it: ${(e as Error).message}` };
  }
}
