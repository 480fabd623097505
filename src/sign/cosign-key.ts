import { scrypt as scryptCb, type ScryptOptions } from "node:crypto";
import nacl from "tweetnacl";
import { SignError } from "./sign-error.js";

/**
 * The encrypted private key format of `cosign generate-key-pair` (PEM type `ENCRYPTED SIGSTORE
 * PRIVATE KEY`, or `ENCRYPTED COSIGN PRIVATE KEY` from older versions): the PEM body is a JSON
 * document written by go-securesystemslib's `encrypted` package
 * (https://github.com/secure-systems-lab/go-securesystemslib/tree/main/encrypted):
 *
 *     {"kdf":    {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": "<base64>"},
 *      "cipher": {"name": "nacl/secretbox", "nonce": "<base64, 24 bytes>"},
 *      "ciphertext": "<base64>"}
 *
 * The key is scrypt(passphrase, salt, N, r, p) of 32 bytes; the plaintext, opened with NaCl
 * secretbox (XSalsa20-Poly1305), is the private key as PKCS#8 DER (cosign's marshalKeyPair).
 */

/** SIGSTORE_KEY_PEM_TYPES are the PEM types cosign writes its encrypted private keys under. */
export const SIGSTORE_KEY_PEM_TYPES = ["ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY"];

/**
 * SCRYPT_PARAMS are the only parameter sets go-securesystemslib accepts (Legacy, Standard,
 * OWASP): anything else is refused, as there, so a hostile key file cannot ask for gigabytes.
 */
const SCRYPT_PARAMS: [number, number, number][] = [
  [32768, 8, 1],
  [65536, 8, 1],
  [131072, 8, 1],
];

function scrypt(pass: Buffer, salt: Buffer, len: number, o: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scryptCb(pass, salt, len, o, (e, key) => (e ? reject(e) : resolve(key))),
  );
}

/**
 * decryptSigstoreKey opens the JSON body of a cosign encrypted key with `passphrase` and
 * returns the PKCS#8 DER it holds. A wrong passphrase and a changed file look the same to
 * secretbox (the MAC fails); both are KEY_INVALID, saying so.
 */
export async function decryptSigstoreKey(body: Buffer, passphrase: string, what: string): Promise<Buffer> {
  const bad = (why: string) => new SignError("KEY_INVALID", `${what}: ${why}`);
  let doc: {
    kdf?: { name?: unknown; params?: { N?: unknown; r?: unknown; p?: unknown }; salt?: unknown };
    cipher?: { name?: unknown; nonce?: unknown };
    ciphertext?: unknown;
  };
  try {
    doc = JSON.parse(body.toString("utf8"));
  } catch {
    throw bad("not a cosign encrypted key (its body is not JSON)");
  }
  if (doc?.kdf?.name !== "scrypt") throw bad(`unsupported key derivation ${JSON.stringify(doc?.kdf?.name)}`);
  if (doc.cipher?.name !== "nacl/secretbox")
    throw bad(`unsupported cipher ${JSON.stringify(doc.cipher?.name)}`);
  const { N, r, p } = doc.kdf.params ?? {};
  if (!SCRYPT_PARAMS.some(([n, rr, pp]) => n === N && rr === r && pp === p))
    throw bad(`unsupported scrypt parameters N=${String(N)} r=${String(r)} p=${String(p)}`);
  const b64 = (v: unknown, field: string) => {
    if (typeof v !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) throw bad(`${field} is not base64`);
    return Buffer.from(v, "base64");
  };
  const salt = b64(doc.kdf.salt, "kdf.salt");
  const nonce = b64(doc.cipher.nonce, "cipher.nonce");
  const ciphertext = b64(doc.ciphertext, "ciphertext");
  if (nonce.length !== nacl.secretbox.nonceLength)
    throw bad(`cipher.nonce is ${nonce.length} bytes, want 24`);
  const n = N as number;
  const key = await scrypt(Buffer.from(passphrase, "utf8"), salt, nacl.secretbox.keyLength, {
    N: n,
    r: r as number,
    p: p as number,
    // scrypt needs 128·N·r bytes; Node's default ceiling (32 MiB) is below the OWASP set.
    maxmem: 256 * n * (r as number),
  });
  const plain = nacl.secretbox.open(ciphertext, nonce, key);
  if (!plain) throw bad("cannot decrypt it: wrong passphrase, or the file was changed");
  return Buffer.from(plain);
}
