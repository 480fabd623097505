import { sign as cryptoSign } from "node:crypto";
import { Readable } from "node:stream";
import { DSSEBundleBuilder, type Signer } from "@sigstore/sign";
import { bundleToJSON } from "@sigstore/bundle";
import { sha256, type Digest } from "../core/digest.js";
import type { Descriptor, ImageManifest } from "../core/oci.js";
import type { Store } from "../store/store.js";
import { keyHint, type SigningKey } from "./keys.js";
import { EMPTY_CONFIG, signatureManifest } from "./signature-artifact.js";
import { IN_TOTO_PAYLOAD_TYPE, signingStatement } from "./statement.js";

/** Signature is a signature made for one manifest: the bundle and the referrer manifest that carries it. */
export interface Signature {
  /** subject is the signed manifest. */
  subject: Descriptor;
  bundle: Buffer;
  bundleDigest: Digest;
  manifest: ImageManifest;
  manifestBytes: Buffer;
  /** descriptor of the referrer manifest. */
  descriptor: Descriptor;
  signedAt: string;
  /** key is the fingerprint of the signing key. */
  key: string;
}

/**
 * keySigner is a @sigstore/sign Signer over a local private key: ECDSA P-256 with SHA-256,
 * DER-encoded signatures (what DSSE verifiers and cosign expect).
 */
function keySigner(key: SigningKey): Signer {
  const publicKey = key.publicKey.export({ format: "pem", type: "spki" }) as string;
  return {
    sign: async (data: Buffer) => ({
      signature: cryptoSign("sha256", data, key.privateKey),
      key: { $case: "publicKey", publicKey, hint: keyHint(key.publicKey) },
    }),
  };
}

/**
 * signManifest signs the OCI manifest `subject` with `key`, offline: a sigstore bundle v0.3
 * holding a DSSE envelope (payload type application/vnd.in-toto+json) around the in-toto
 * statement whose subject is the manifest's sha256 (statement.ts), made with @sigstore/sign's
 * DSSEBundleBuilder and no witnesses (no transparency log, no timestamp authority), wrapped in
 * its referrer manifest.
 */
export async function signManifest(
  subject: Descriptor,
  key: SigningKey,
  now: Date = new Date(),
): Promise<Signature> {
  const signedAt = now.toISOString().replace(/\.\d{3}Z$/, "Z");
  const builder = new DSSEBundleBuilder({ signer: keySigner(key), witnesses: [] });
  const bundle = await builder.create({
    data: signingStatement(subject.digest, signedAt),
    type: IN_TOTO_PAYLOAD_TYPE,
  });
  const bytes = Buffer.from(JSON.stringify(bundleToJSON(bundle)));
  const bundleDigest = sha256(bytes);
  const manifest = signatureManifest(subject, { digest: bundleDigest, size: bytes.length }, signedAt);
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  return {
    subject,
    bundle: bytes,
    bundleDigest,
    manifest,
    manifestBytes,
    descriptor: {
      mediaType: manifest.mediaType,
      digest: sha256(manifestBytes),
      size: manifestBytes.length,
      artifactType: manifest.artifactType!,
      annotations: manifest.annotations!,
    },
    signedAt,
    key: key.fingerprint,
  };
}

/**
 * storeSignature writes a signature into the store (empty config, bundle, referrer manifest)
 * and lists it untagged in index.json, where `ovm push` and `copy` find it as a referrer of
 * its subject.
 */
export async function storeSignature(store: Store, sig: Signature): Promise<Descriptor> {
  await store.putBlob(Buffer.from("{}"), EMPTY_CONFIG.digest);
  await store.putBlob(sig.bundle, sig.bundleDigest);
  await store.ingest(Readable.from([sig.manifestBytes]), {
    digest: sig.descriptor.digest,
    size: sig.descriptor.size,
  });
  const d: Descriptor = {
    mediaType: sig.descriptor.mediaType,
    digest: sig.descriptor.digest,
    size: sig.descriptor.size,
    artifactType: sig.descriptor.artifactType!,
  };
  await store.addUntagged(d);
  return d;
}
