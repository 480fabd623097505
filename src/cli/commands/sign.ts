import type { Command } from "commander";
import { OvmsError, isOvmsError } from "../../core/errors.js";
import type { ContentStore } from "../../core/content.js";
import type { Descriptor, ImageIndex, ImageManifest } from "../../core/oci.js";
import { formatReference, parseReference, repositoryOf } from "../../core/reference.js";
import type { Store } from "../../store/store.js";
import { Printer, globals, openStore } from "../context.js";
import { passphrase } from "../passphrase.js";
import { addRegistryFlags, makeClient, type RegistryFlags } from "./copy.js";

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** Located is where a reference's manifest was found: in the store, or only in its registry. */
interface Located {
  source: ContentStore;
  descriptor: Descriptor;
  store?: Store;
  close(): Promise<void>;
}

/** locate finds REF in the store, else in its registry (for signing or verifying a remote artifact). */
async function locate(c: Command, ref: string, flags: RegistryFlags, push = false): Promise<Located> {
  const r = parseReference(ref);
  // No store yet is no different from a store without it: look in the registry.
  const store = await openStore(c, "read").catch((e: unknown) => {
    if (isOvmsError(e, "NOT_FOUND")) return undefined;
    throw e;
  });
  try {
    if (store) {
      const descriptor = await store.resolve(ref);
      return { source: store, descriptor, store, close: async () => undefined };
    }
  } catch (e) {
    if (!isOvmsError(e, "NOT_FOUND")) throw e;
  }
  const client = await makeClient(flags);
  try {
    const repo = client.repository(r, push ? { push: true } : undefined);
    const descriptor = await repo.resolve(r.digest ?? r.tag!);
    return { source: repo, descriptor, close: () => client.close() };
  } catch (e) {
    await client.close();
    throw e;
  }
}

/** register adds `ovm sign REF --key KEY` and `ovm verify REF --key PUB | --policy FILE`. */
export function register(program: Command): void {
  const sign = program
    .command("sign")
    .description("sign an artifact: a sigstore bundle (DSSE, in-toto) stored as a referrer of its manifest")
    .argument("<ref>", "artifact reference, in the store or in a registry")
    .requiredOption("--key <file>", "private key (ovm key generate, cosign generate-key-pair, or PKCS#8 PEM)")
    .addHelpText(
      "after",
      `
An artifact in the store is signed there (the signature is an untagged referrer that
\`ovm push\` uploads with it); one only in a registry is signed there. The passphrase of an
encrypted key comes from $OVM_KEY_PASSWORD, else it is asked on the terminal.

Examples:
  ovm sign 127.0.0.1:5000/demo/vm:1.0 --key ovm.key && ovm push 127.0.0.1:5000/demo/vm:1.0
  ovm sign registry.example.com/team/vm@sha256:… --key cosign.key`,
    );
  addRegistryFlags(sign, {}).action(
    async (ref: string, opts: RegistryFlags & { key: string }, c: Command) => {
      const out = new Printer(globals(c));
      const { loadSigningKey } = await import("../../sign/keys.js");
      const { signManifest, storeSignature } = await import("../../sign/sign.js");
      const key = await loadSigningKey(opts.key, () => passphrase(opts.key));
      const at = await locate(c, ref, opts, true);
      try {
        const sig = await signManifest(at.descriptor, key);
        let where: string;
        if (at.store) {
          await storeSignature(at.store, sig);
          where = "store";
        } else {
          const repo = at.source as import("../../registry/repository.js").Repository;
          const { EMPTY_CONFIG } = await import("../../sign/signature-artifact.js");
          const { Readable } = await import("node:stream");
          await repo.push(EMPTY_CONFIG, Readable.from([Buffer.from("{}")]));
          await repo.push(
            { mediaType: "application/octet-stream", digest: sig.bundleDigest, size: sig.bundle.length },
            Readable.from([sig.bundle]),
          );
          await repo.pushManifest(sig.descriptor, sig.manifestBytes);
          where = "registry";
        }
        out.result(
          {
            reference: formatReference(parseReference(ref)),
            digest: at.descriptor.digest,
            signature: sig.descriptor.digest,
            key: sig.key,
            signedAt: sig.signedAt,
            stored: where,
          },
          () =>
            `Signed ${ref} (${at.descriptor.digest}) with key ${sig.key}\n` +
            `Signature ${sig.descriptor.digest} ${where === "store" ? "is in the store (ovm push uploads it)" : "was pushed to the registry"}`,
        );
      } finally {
        await at.close();
      }
    },
  );

  const verify = program
    .command("verify")
    .description("verify an artifact's signatures with trusted public keys, or against a policy")
    .argument("<ref>", "artifact reference, in the store or in a registry")
    .option("--key <file>", "trusted public key (PEM), repeatable: any one is enough", collect)
    .option("--policy <file>", "judge the artifact as `ovm pull --policy` and ovmd would")
    .addHelpText(
      "after",
      `
Exit status 0 when a signature verifies (or the policy admits the artifact), 1 otherwise.
For an artifact in the store, every blob is also checked against the manifest.

Examples:
  ovm verify 127.0.0.1:5000/demo/vm:1.0 --key ovm.pub
  ovm verify 127.0.0.1:5000/demo/vm:1.0 --key release.pub --key ci.pub --json
  ovm verify 127.0.0.1:5000/demo/vm:fast --policy /etc/ovms/policy.json`,
    );
  addRegistryFlags(verify, {}).action(
    async (ref: string, opts: RegistryFlags & { key?: string[]; policy?: string }, c: Command) => {
      const out = new Printer(globals(c));
      if (!opts.key?.length && !opts.policy)
        throw new OvmsError("USAGE", "verify: give --key PUB (repeatable) or --policy FILE");
      const { loadPublicKey } = await import("../../sign/keys.js");
      const { verifySignatures } = await import("../../sign/verify.js");
      const { decide, carriesRamSnapshot, originOf } = await import("../../sign/admission.js");
      const { loadPolicy } = await import("../../sign/policy.js");
      const keys = await Promise.all((opts.key ?? []).map((k) => loadPublicKey(k)));
      const policy = opts.policy ? await loadPolicy(opts.policy) : undefined;
      const at = await locate(c, ref, opts);
      try {
        const report = keys.length ? await verifySignatures(at.source, at.descriptor, keys) : undefined;
        const decision = policy
          ? await decide(
              policy,
              {
                reference: ref,
                descriptor: at.descriptor,
                ramSnapshot: await carriesRamSnapshot(at.source, at.descriptor),
                from: at.store ? originOf(at.descriptor) : { repository: repositoryOf(parseReference(ref)) },
              },
              at.source,
            )
          : undefined;
        const blobs = at.store ? await checkBlobs(at.store, at.descriptor) : undefined;
        const ok = (!report || report.verified) && (!decision || decision.allowed) && !blobs?.length;
        const body = {
          reference: formatReference(parseReference(ref)),
          digest: at.descriptor.digest,
          verified: ok,
          ...(report ? { signatures: report.signatures } : {}),
          ...(decision
            ? { policy: { allowed: decision.allowed, rule: decision.rule, reason: decision.reason } }
            : {}),
          blobs: blobs === undefined ? "not checked (remote)" : blobs.length ? blobs : "verified",
        };
        out.result(body, () => {
          const lines = [`${ref} (${at.descriptor.digest})`];
          for (const s of report?.signatures ?? [])
            lines.push(
              s.ok
                ? `  signature ${s.digest}: verified with ${s.keyName} (${s.key})${s.signedAt ? `, signed ${s.signedAt}` : ""}`
                : `  signature ${s.digest}: ${s.reason}`,
            );
          if (report && !report.signatures.length) lines.push("  no signatures");
          if (decision)
            lines.push(`  policy: ${decision.allowed ? "admits" : "refuses"} it: ${decision.reason}`);
          if (blobs?.length) lines.push(...blobs.map((b) => `  blob ${b}`));
          lines.push(ok ? "Verified" : "NOT verified");
          return lines.join("\n");
        });
        if (!ok) {
          const why = blobs?.length
            ? `a blob does not match the signed manifest (${blobs[0]})`
            : decision && !decision.allowed
              ? decision.reason
              : report!.signatures.length
                ? "no signature verifies with the given keys"
                : "it has no signatures";
          throw new OvmsError(
            decision && !decision.allowed && !blobs?.length ? "POLICY_DENIED" : "SIGNATURE_INVALID",
            `${ref} (${at.descriptor.digest}): not verified: ${why}`,
          );
        }
      } finally {
        await at.close();
      }
    },
  );
}

/**
 * checkBlobs hashes every blob the manifest (or index) `desc` names in the store and returns
 * the problems: a signature covers the manifest, and the manifest covers the blobs only if
 * they still match it.
 */
async function checkBlobs(store: Store, desc: Descriptor): Promise<string[]> {
  const problems: string[] = [];
  const m = await store.readJson<Partial<ImageManifest & ImageIndex>>(desc.digest);
  const blobs = [...(m.config ? [m.config] : []), ...(m.layers ?? [])];
  for (const b of blobs) {
    try {
      const s = await store.fetch(b);
      for await (const _ of s) void _;
    } catch (e) {
      problems.push(`${b.digest}: ${(e as Error).message}`);
    }
  }
  for (const child of m.manifests ?? []) {
    if (await store.exists(child)) problems.push(...(await checkBlobs(store, child)));
  }
  return problems;
}
