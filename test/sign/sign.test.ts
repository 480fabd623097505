import { test } from "node:test";
import assert from "node:assert/strict";
import { createPrivateKey, generateKeyPairSync, randomBytes, scryptSync } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import nacl from "tweetnacl";
import { sha256 } from "../../src/core/digest.js";
import { isOvmsError } from "../../src/core/errors.js";
import { MediaType } from "../../src/core/media-types.js";
import type { Descriptor, ImageManifest } from "../../src/core/oci.js";
import { Store } from "../../src/store/store.js";
import { decryptSigstoreKey } from "../../src/sign/cosign-key.js";
import {
  generateKeyPair,
  keyFingerprint,
  loadPublicKey,
  loadSigningKey,
  parsePublicKey,
} from "../../src/sign/keys.js";
import { signManifest, storeSignature } from "../../src/sign/sign.js";
import { verifyBundle, verifySignatures } from "../../src/sign/verify.js";
import { COSIGN_SIGN_PREDICATE, IN_TOTO_PAYLOAD_TYPE, STATEMENT_TYPE } from "../../src/sign/statement.js";
import { tempDir } from "../helpers.js";

/** anArtifact puts a small OCI manifest in the store and returns its descriptor. */
async function anArtifact(store: Store, salt = "a"): Promise<Descriptor> {
  const layer = await store.putBlob(`layer ${salt}`);
  const config = await store.putBlob("{}");
  const m: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciEmpty, ...config },
    layers: [{ mediaType: "application/octet-stream", ...layer }],
  };
  const desc = await store.putManifest(m);
  await store.tag(desc, `example/vm:${salt}`);
  return desc;
}

async function keyFiles(dir: string, pass = "pw") {
  const pair = generateKeyPair(pass);
  await writeFile(join(dir, "k.key"), pair.privatePem);
  await writeFile(join(dir, "k.pub"), pair.publicPem);
  return {
    pair,
    key: await loadSigningKey(join(dir, "k.key"), async () => pass),
    pub: await loadPublicKey(join(dir, "k.pub"), "k"),
  };
}

test("key generate writes an encrypted PKCS#8 P-256 key; the right passphrase opens it, a wrong one is KEY_INVALID", async (t) => {
  const dir = await tempDir(t);
  const { pair, key, pub } = await keyFiles(dir, "s3cret");
  assert.match(pair.privatePem, /^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
  assert.match(pair.publicPem, /^-----BEGIN PUBLIC KEY-----/);
  assert.equal(key.fingerprint, pub.fingerprint);
  assert.equal(key.privateKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
  await assert.rejects(
    loadSigningKey(join(dir, "k.key"), async () => "nope"),
    (e) => isOvmsError(e, "KEY_INVALID") && /wrong passphrase/.test(e.message),
  );
  // A private key where a public key belongs, and a key of another curve, are refused by name.
  assert.throws(
    () => parsePublicKey(pair.privatePem, "x"),
    (e) => isOvmsError(e, "KEY_INVALID") && /private key/.test(e.message),
  );
  const ed = generateKeyPairSync("ed25519").publicKey.export({ format: "pem", type: "spki" }) as string;
  assert.throws(
    () => parsePublicKey(ed, "ed"),
    (e) => isOvmsError(e, "KEY_INVALID") && /P-256 only/.test(e.message),
  );
});

test("cosign's encrypted key format: go-securesystemslib's own test vector decrypts; a key file built per the format signs", async (t) => {
  // TestDecrypt of github.com/secure-systems-lab/go-securesystemslib/encrypted (the package
  // cosign encrypts its keys with): passphrase "supersecret", plaintext "reallyimportant".
  const vector = Buffer.from(
    '{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"N9a7x5JFGbrtB2uBR81jPwp0eiLR4A7FV3mjVAQrg1g="},"cipher":{"name":"nacl/secretbox","nonce":"2h8HxMmgRfuYdpswZBQaU3xJ1nkA/5Ik"},"ciphertext":"SEW6sUh0jf2wfdjJGPNS9+bkk2uB+Cxamf32zR8XkQ=="}',
  );
  assert.equal((await decryptSigstoreKey(vector, "supersecret", "vector")).toString(), "reallyimportant");
  await assert.rejects(decryptSigstoreKey(vector, "wrong", "vector"), (e) => isOvmsError(e, "KEY_INVALID"));
  // Parameters outside the three go-securesystemslib accepts are refused before any work.
  const huge = Buffer.from(vector.toString().replace('"N":32768', '"N":1073741824'));
  await assert.rejects(decryptSigstoreKey(huge, "supersecret", "vector"), /unsupported scrypt parameters/);

  // cosign itself is not installable here: build a key file exactly as cosign's
  // marshalKeyPair does (PKCS#8 DER, encrypted.Encrypt, PEM type ENCRYPTED SIGSTORE PRIVATE KEY).
  const dir = await tempDir(t);
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const der = privateKey.export({ format: "der", type: "pkcs8" });
  const salt = randomBytes(32);
  const nonce = randomBytes(24);
  const k = scryptSync("cosign-pass", salt, 32, { N: 32768, r: 8, p: 1, maxmem: 64 << 20 });
  const body = JSON.stringify({
    kdf: { name: "scrypt", params: { N: 32768, r: 8, p: 1 }, salt: salt.toString("base64") },
    cipher: { name: "nacl/secretbox", nonce: nonce.toString("base64") },
    ciphertext: Buffer.from(nacl.secretbox(der, nonce, k)).toString("base64"),
  });
  const b64 = Buffer.from(body)
    .toString("base64")
    .replace(/(.{64})/g, "$1\n");
  for (const type of ["ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY"]) {
    const file = join(dir, `${type.split(" ")[1]}.key`);
    await writeFile(file, `-----BEGIN ${type}-----\n${b64}\n-----END ${type}-----\n`);
    const key = await loadSigningKey(file, async () => "cosign-pass");
    assert.equal(key.fingerprint, keyFingerprint(publicKey));
    await assert.rejects(
      loadSigningKey(file, async () => "bad"),
      /wrong passphrase/,
    );
  }
  assert.ok(createPrivateKey({ key: der, format: "der", type: "pkcs8" }));
});

test("a signature is a v0.3 bundle with a DSSE in-toto statement, stored as a referrer in cosign's shape, and verifies", async (t) => {
  const dir = await tempDir(t);
  const store = await Store.open(join(dir, "store"));
  const { key, pub } = await keyFiles(dir);
  const subject = await anArtifact(store);
  const sig = await signManifest(subject, key, new Date("2026-01-02T03:04:05Z"));
  await storeSignature(store, sig);

  const bundle = JSON.parse(sig.bundle.toString());
  assert.equal(bundle.mediaType, "application/vnd.dev.sigstore.bundle.v0.3+json");
  assert.equal(bundle.dsseEnvelope.payloadType, IN_TOTO_PAYLOAD_TYPE);
  assert.ok(bundle.verificationMaterial.publicKey.hint, "a key hint, never the key");
  const statement = JSON.parse(Buffer.from(bundle.dsseEnvelope.payload, "base64").toString());
  assert.equal(statement._type, STATEMENT_TYPE);
  assert.equal(statement.predicateType, COSIGN_SIGN_PREDICATE);
  assert.deepEqual(statement.subject[0].digest, { sha256: subject.digest.slice(7) });

  const m = await store.readJson<ImageManifest>(sig.descriptor.digest);
  assert.equal(m.artifactType, MediaType.SigstoreBundle);
  assert.equal(m.config.mediaType, MediaType.OciEmpty);
  assert.equal(m.config.digest, sha256(Buffer.from("{}")));
  assert.deepEqual(
    m.layers.map((l) => l.mediaType),
    [MediaType.SigstoreBundle],
  );
  assert.equal(m.subject?.digest, subject.digest);
  assert.equal(m.annotations?.["dev.sigstore.bundle.content"], "dsse-envelope");
  assert.equal(m.annotations?.["dev.sigstore.bundle.predicateType"], COSIGN_SIGN_PREDICATE);

  const r = await verifySignatures(store, subject, [pub]);
  assert.equal(r.verified, true);
  assert.equal(r.signatures[0].key, pub.fingerprint);
  assert.equal(r.signatures[0].signedAt, "2026-01-02T03:04:05Z");
});

test("tampering: the wrong key, a changed bundle, a signature moved onto another artifact, a bundle in another shape all fail", async (t) => {
  const dir = await tempDir(t);
  const store = await Store.open(join(dir, "store"));
  const { key, pub } = await keyFiles(dir);
  const a = await anArtifact(store, "a");
  const b = await anArtifact(store, "b");
  const sig = await signManifest(a, key);
  await storeSignature(store, sig);

  // The wrong key.
  const other = parsePublicKey(generateKeyPair("x").publicPem, "other");
  let r = await verifySignatures(store, a, [other]);
  assert.equal(r.verified, false);
  assert.match(r.signatures[0].reason!, /does not verify with key other/);

  // Moved onto b: the same bundle under a referrer manifest whose subject is b.
  const moved = { ...sig.manifest, subject: { mediaType: b.mediaType, digest: b.digest, size: b.size } };
  const movedDesc = await store.putManifest(moved);
  await store.addUntagged({ ...movedDesc, artifactType: MediaType.SigstoreBundle });
  r = await verifySignatures(store, b, [pub]);
  assert.equal(r.verified, false);
  assert.match(r.signatures[0].reason!, new RegExp(`signs sha256:${a.digest.slice(7)}, not ${b.digest}`));

  // A changed bundle: one bit of the signature flipped, or the statement rewritten to b.
  const bundle = JSON.parse(sig.bundle.toString());
  const flipped = Buffer.from(bundle.dsseEnvelope.signatures[0].sig, "base64");
  flipped[flipped.length - 1] ^= 1;
  const badSig = structuredClone(bundle);
  badSig.dsseEnvelope.signatures[0].sig = flipped.toString("base64");
  assert.match(verifyBundle(Buffer.from(JSON.stringify(badSig)), a.digest, [pub]).reason!, /does not verify/);
  const rewritten = structuredClone(bundle);
  const st = JSON.parse(Buffer.from(bundle.dsseEnvelope.payload, "base64").toString());
  st.subject[0].digest.sha256 = b.digest.slice(7);
  rewritten.dsseEnvelope.payload = Buffer.from(JSON.stringify(st)).toString("base64");
  assert.match(
    verifyBundle(Buffer.from(JSON.stringify(rewritten)), b.digest, [pub]).reason!,
    /does not verify/,
  );
  // Another predicate, payload type, or not a bundle at all.
  const pred = structuredClone(bundle);
  pred.dsseEnvelope.payload = Buffer.from(
    JSON.stringify({ ...st, predicateType: "https://slsa.dev/provenance/v1" }),
  ).toString("base64");
  assert.match(verifyBundle(Buffer.from(JSON.stringify(pred)), b.digest, [pub]).reason!, /predicateType/);
  const pt = structuredClone(bundle);
  pt.dsseEnvelope.payloadType = "text/plain";
  assert.match(verifyBundle(Buffer.from(JSON.stringify(pt)), a.digest, [pub]).reason!, /payload type/);
  assert.match(verifyBundle(Buffer.from("{}"), a.digest, [pub]).reason!, /not a sigstore bundle/);

  // A corrupt bundle blob in the store is a failed signature, not a crash.
  const blob = store.blobPath(sig.bundleDigest);
  const { chmod, writeFile: wf } = await import("node:fs/promises");
  await chmod(blob, 0o644);
  await wf(blob, Buffer.from(JSON.stringify(badSig)));
  r = await verifySignatures(store, a, [pub]);
  assert.equal(r.verified, false);
  assert.match(r.signatures[0].reason!, /cannot read it: .*digest mismatch/);
});
