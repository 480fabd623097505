import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
} from "node:crypto";
import { readFile } from "node:fs/promises";
import { OvmsError } from "../core/errors.js";
import { SIGSTORE_KEY_PEM_TYPES, decryptSigstoreKey } from "./cosign-key.js";
import { SignError } from "./sign-error.js";

/**
 * Keys of OVMS signatures: ECDSA P-256 with SHA-256, as cosign generates them
 * (https://github.com/sigstore/cosign/blob/main/pkg/cosign/keys.go). Public keys are PEM
 * SubjectPublicKeyInfo; private keys PEM PKCS#8, encrypted (`ENCRYPTED PRIVATE KEY`, what
 * `ovm key generate` writes) or in cosign's own encrypted format (cosign-key.ts).
 */

/** SigningKey is a private key ready to sign, with its public half and fingerprint. */
export interface SigningKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** fingerprint is `sha256:<hex>` of the public key's DER SubjectPublicKeyInfo. */
  fingerprint: string;
}

/** TrustedKey is a public key a verifier trusts, with the name a policy gives it. */
export interface TrustedKey {
  name: string;
  publicKey: KeyObject;
  fingerprint: string;
}

/** Passphrase gives the passphrase of an encrypted private key when one is needed. */
export type Passphrase = () => Promise<string>;

/** keyFingerprint is `sha256:<hex>` of the DER SubjectPublicKeyInfo of `key` (the hex is what `openssl pkey -pubin -outform DER | sha256sum` prints). */
export function keyFingerprint(key: KeyObject): string {
  return `sha256:${createHash("sha256")
    .update(key.export({ format: "der", type: "spki" }))
    .digest("hex")}`;
}

/**
 * keyHint is the key hint a key-based sigstore bundle carries: base64 of the SHA-256 of the
 * DER public key, the form sigstore-go writes. Verifiers may use it to pick a key; OVMS
 * verifies against every trusted key and never trusts the hint.
 */
export function keyHint(key: KeyObject): string {
  return createHash("sha256")
    .update(key.export({ format: "der", type: "spki" }))
    .digest("base64");
}

/** GeneratedKeyPair is a new key pair as PEM text. */
export interface GeneratedKeyPair {
  privatePem: string;
  publicPem: string;
  fingerprint: string;
}

/**
 * generateKeyPair makes an ECDSA P-256 key pair: the private key as PKCS#8 PEM encrypted with
 * `passphrase` (AES-256-CBC, the key derived by PBKDF2, as OpenSSL writes `ENCRYPTED PRIVATE
 * KEY`), the public key as SubjectPublicKeyInfo PEM.
 */
export function generateKeyPair(passphrase: string): GeneratedKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return {
    privatePem: privateKey.export({
      format: "pem",
      type: "pkcs8",
      cipher: "aes-256-cbc",
      passphrase,
    }) as string,
    publicPem: publicKey.export({ format: "pem", type: "spki" }) as string,
    fingerprint: keyFingerprint(publicKey),
  };
}

/** PemBlock is the first PEM block of a text: its type and decoded body. */
interface PemBlock {
  type: string;
  body: Buffer;
}

function firstPem(text: string): PemBlock | undefined {
  const m = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/.exec(text);
  if (!m) return undefined;
  // Encapsulated headers (RFC 1421 "Proc-Type: …") are not base64.
  const lines = m[2].split(/\r?\n/).filter((l) => l && !l.includes(":"));
  return { type: m[1], body: Buffer.from(lines.join(""), "base64") };
}

/** checkP256 refuses keys other than ECDSA P-256, the one algorithm OVMS signs with. */
function checkP256(key: KeyObject, what: string): void {
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (key.asymmetricKeyType !== "ec" || curve !== "prime256v1") {
    throw new SignError(
      "KEY_INVALID",
      `${what}: a ${key.asymmetricKeyType}${curve ? ` (${curve})` : ""} key; OVMS signs with ECDSA P-256 only`,
    );
  }
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new OvmsError(
      code === "ENOENT" ? "FILE_NOT_FOUND" : "CONFIG_INVALID",
      `${what} ${path}: ${code === "ENOENT" ? "no such file" : (e as Error).message}`,
      { cause: e },
    );
  }
}

/**
 * loadSigningKey reads a private key file: `ENCRYPTED PRIVATE KEY` (PKCS#8, what `ovm key
 * generate` and `openssl` write), cosign's `ENCRYPTED SIGSTORE PRIVATE KEY` /
 * `ENCRYPTED COSIGN PRIVATE KEY`, or an unencrypted `PRIVATE KEY` / `EC PRIVATE KEY`.
 * `passphrase` is asked only for an encrypted one.
 */
export async function loadSigningKey(path: string, passphrase: Passphrase): Promise<SigningKey> {
  const what = `private key ${path}`;
  const text = await readText(path, "private key");
  const pem = firstPem(text);
  if (!pem) throw new SignError("KEY_INVALID", `${what}: no PEM block (want a private key in PEM)`);
  let privateKey: KeyObject;
  try {
    if (SIGSTORE_KEY_PEM_TYPES.includes(pem.type)) {
      const der = await decryptSigstoreKey(pem.body, await passphrase(), what);
      privateKey = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
    } else if (pem.type === "ENCRYPTED PRIVATE KEY") {
      privateKey = createPrivateKey({ key: text, format: "pem", passphrase: await passphrase() });
    } else if (pem.type === "PRIVATE KEY" || pem.type === "EC PRIVATE KEY") {
      privateKey = createPrivateKey({ key: text, format: "pem" });
    } else {
      throw new SignError("KEY_INVALID", `${what}: a PEM "${pem.type}", not a private key`);
    }
  } catch (e) {
    if (e instanceof OvmsError) throw e;
    const msg = (e as Error).message;
    // A wrong passphrase usually fails the padding check ("bad decrypt"), but about one time
    // in 256 the padding of the garbage looks right and the DER decoder fails instead.
    const encrypted = pem.type === "ENCRYPTED PRIVATE KEY";
    throw new SignError(
      "KEY_INVALID",
      encrypted || /decrypt|bad decrypt|passphrase/i.test(msg)
        ? `${what}: cannot decrypt it: wrong passphrase (${msg})`
        : `${what}: not a usable private key: ${msg}`,
      { cause: e },
    );
  }
  checkP256(privateKey, what);
  const publicKey = createPublicKey(privateKey);
  return { privateKey, publicKey, fingerprint: keyFingerprint(publicKey) };
}

/** parsePublicKey reads a PEM public key (SubjectPublicKeyInfo), which must be ECDSA P-256. */
export function parsePublicKey(pem: string, name: string, what = `public key ${name}`): TrustedKey {
  const block = firstPem(pem);
  if (!block) throw new SignError("KEY_INVALID", `${what}: no PEM block (want a PUBLIC KEY)`);
  // Node derives the public half from a private key: never accept a secret where a public key belongs.
  if (block.type.includes("PRIVATE"))
    throw new SignError("KEY_INVALID", `${what}: a private key; give the public key (.pub)`);
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: pem, format: "pem" });
  } catch (e) {
    throw new SignError("KEY_INVALID", `${what}: not a public key: ${(e as Error).message}`, { cause: e });
  }
  checkP256(publicKey, what);
  return { name, publicKey, fingerprint: keyFingerprint(publicKey) };
}

/** loadPublicKey reads a PEM public key file; `name` defaults to the path. */
export async function loadPublicKey(path: string, name = path): Promise<TrustedKey> {
  return parsePublicKey(await readText(path, "public key"), name, `public key ${path}`);
}
