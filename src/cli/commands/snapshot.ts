import type { Command } from "commander";
import { OvmsError, isOvmsError } from "../../core/errors.js";
import { formatReference, namesRegistry, parseReference } from "../../core/reference.js";
import { Printer, globals, openStore } from "../context.js";
import { passphrase } from "../passphrase.js";
import {
  addRegistryFlags,
  interruptible,
  makeClient,
  parseBool,
  progressView,
  type RegistryFlags,
} from "./copy.js";
import { addSocketOption, daemonClient } from "./daemon-client.js";

interface SnapshotFlags extends RegistryFlags {
  tag: string;
  stop?: boolean;
  sign?: string;
  push?: boolean;
}

/**
 * register adds `ovm snapshot ID -t REF`: a RAM snapshot of an instance as a new artifact,
 * signed with `--sign KEY` and pushed when REF names a registry.
 */
export function register(program: Command): void {
  const cmd = program
    .command("snapshot")
    .description(
      "take a RAM snapshot of an instance into a new artifact; push it when the tag names a registry",
    )
    .argument("<id>", "instance id or name")
    .requiredOption(
      "-t, --tag <ref>",
      "reference to name the snapshot artifact (REGISTRY/REPO:TAG pushes it there)",
    )
    .option("--stop", "stop the instance after the snapshot instead of resuming it")
    .option("--sign <key>", "sign the snapshot artifact with this private key (before it is pushed)")
    .option(
      "--push <bool>",
      "push to the registry the tag names (default: true when the tag names one)",
      parseBool("--push"),
    )
    .addHelpText(
      "after",
      `
The daemon takes the snapshot into its store; signing and pushing happen here, in the store
this command uses (--store / $OVM_STORE), which must be the daemon's.

Examples:
  ovm snapshot web -t demo/vm:fast                                   # in the store only
  ovm snapshot web -t 127.0.0.1:5000/demo/vm:fast --sign ovm.key     # signed, pushed with its signature`,
    );
  addRegistryFlags(addSocketOption(cmd)).action(async (id: string, opts: SnapshotFlags, c: Command) => {
    const out = new Printer(globals(c));
    const push = opts.push ?? namesRegistry(opts.tag);
    const ref = parseReference(opts.tag);
    if (push && !ref.tag) throw new OvmsError("USAGE", `-t ${opts.tag}: a snapshot needs a tag`);
    // Ask for the passphrase before the guest is paused, not after.
    const key = opts.sign
      ? await (await import("../../sign/keys.js")).loadSigningKey(opts.sign, () => passphrase(opts.sign!))
      : undefined;
    const r = await (
      await daemonClient(c)
    ).snapshot({
      instance_id: id,
      tag: opts.tag,
      ...(opts.stop ? { stop: true } : {}),
    });
    const result: Record<string, unknown> = { ...r };
    if (key || push) {
      const store = await openStore(c, "read");
      let desc;
      try {
        desc = await store.resolve(r.snapshot_ref);
      } catch (e) {
        if (!isOvmsError(e, "NOT_FOUND")) throw e;
        throw new OvmsError(
          "USAGE",
          `snapshot ${r.snapshot_ref} was taken, but it is not in ${store.root}: sign and push need the daemon's store (--store or $OVM_STORE)`,
        );
      }
      if (key) {
        const { signManifest, storeSignature } = await import("../../sign/sign.js");
        const sig = await signManifest(desc, key);
        await storeSignature(store, sig);
        result.signature = sig.descriptor.digest;
        result.key = sig.key;
      }
      if (push) {
        const { copy } = await import("../../registry/copy.js");
        const client = await makeClient(opts);
        const view = await progressView(globals(c));
        try {
          const done = await interruptible(globals(c), `push of ${formatReference(ref)}`, view, (signal) =>
            copy(store, r.snapshot_ref, client.repository(ref, { push: true }), ref.tag, {
              concurrency: opts.concurrency,
              progress: view.progress,
              signal,
            }),
          );
          if (!done.done) return;
          result.pushed = formatReference({ ...ref, digest: undefined });
          result.bytes_transferred = done.value.bytesTransferred;
        } finally {
          view.stop();
          await client.close();
        }
      }
    }
    out.result(result, () =>
      [
        `${r.reference} ${r.snapshot_ref}`,
        ...(r.pause_ms !== undefined
          ? [`Guest paused ${r.pause_ms} ms${r.pause_mode ? ` (${r.pause_mode})` : ""}`]
          : []),
        ...(result.signature
          ? [`Signed with key ${String(result.key)}: signature ${String(result.signature)}`]
          : []),
        ...(result.pushed ? [`Pushed to ${String(result.pushed)} (with its signatures)`] : []),
      ].join("\n"),
    );
  });
}
