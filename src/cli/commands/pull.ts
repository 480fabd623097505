import type { Command } from "commander";
import { Annotation, hasRamSnapshotLayer } from "../../core/media-types.js";
import type { ImageManifest } from "../../core/oci.js";
import { formatReference, parseReference, repositoryOf } from "../../core/reference.js";
import { globals, openStore } from "../context.js";
import {
  addRegistryFlags,
  interruptible,
  makeClient,
  parseBool,
  printSummary,
  progressView,
  type RegistryFlags,
} from "./copy.js";

interface PullFlags extends RegistryFlags {
  referrers: boolean;
  platform?: string;
  policy?: string;
  preload: boolean;
}

/** register adds `ovm pull REF`: manifest, blobs the store lacks, and referrers, from a registry into the store. */
export function register(program: Command): void {
  const cmd = program
    .command("pull")
    .description("pull an artifact from a registry into the local store (only the blobs it lacks)")
    .argument("<ref>", "reference, e.g. 127.0.0.1:5000/demo/vm:1.0 or …@sha256:…")
    .option(
      "--referrers <bool>",
      "also pull signatures, snapshots and other referrers",
      parseBool("--referrers"),
      true,
    )
    .option("--platform <os/arch>", "platform to pick from a multi-platform index (default: this host's)")
    .option(
      "--policy <file>",
      "trust policy (default: $OVM_POLICY): the artifact is named in the store only if the policy admits it",
    )
    .option(
      "--preload <bool>",
      "decompress a RAM snapshot whose manifest sets preload_hint into tmpfs right away",
      parseBool("--preload"),
      true,
    )
    .addHelpText(
      "after",
      `
Examples:
  ovm pull 127.0.0.1:5000/demo/vm:1.0
  ovm pull 127.0.0.1:5000/demo/vm:fast --policy policy.json   # refused unless signed as the policy says
  ovm pull 127.0.0.1:5000/demo/vm@sha256:… --referrers=false`,
    );
  addRegistryFlags(cmd, { transfer: true }).action(async (ref: string, opts: PullFlags, c: Command) => {
    const { copy } = await import("../../registry/copy.js");
    const { hostPlatform, parsePlatform } = await import("../../registry/platform.js");
    const r = parseReference(ref);
    const platform = opts.platform ? parsePlatform(opts.platform) : hostPlatform();
    const policyFile = opts.policy ?? process.env.OVM_POLICY;
    const policy = policyFile
      ? await (await import("../../sign/policy.js")).loadPolicy(policyFile)
      : undefined;
    const store = await openStore(c, "write");
    const client = await makeClient(opts);
    const view = await progressView(globals(c));
    // The store names what it pulled by the full reference (tag kept, digest dropped).
    const name = r.tag ? formatReference({ ...r, digest: undefined }) : undefined;
    const origin = repositoryOf(r);
    let admitted: string | undefined;
    try {
      const result = await interruptible(globals(c), `pull of ${formatReference(r)}`, view, (signal) =>
        copy(client.repository(r), r.digest ?? r.tag!, store, name, {
          concurrency: opts.concurrency,
          referrers: opts.referrers,
          platform,
          progress: view.progress,
          signal,
          // Where it came from goes on its name: a policy decides on it later (ovmd's admission).
          nameAnnotations: { [Annotation.Origin]: origin },
          beforeName: policy
            ? async (root) => {
                const { enforce, carriesRamSnapshot } = await import("../../sign/admission.js");
                const d = await enforce(
                  policy,
                  {
                    reference: formatReference(r),
                    descriptor: root,
                    ramSnapshot: await carriesRamSnapshot(store, root),
                    from: { repository: origin },
                  },
                  store,
                );
                admitted = d.reason;
              }
            : undefined,
        }),
      );
      view.stop();
      if (!result.done) return;
      const preloaded = opts.preload
        ? await preloadIfHinted(store, result.value.digest, name ?? ref)
        : undefined;
      printSummary(c, "Pulled", name ?? formatReference(r), result.value, {
        ...(admitted ? { policy: admitted } : {}),
        ...(preloaded ? { preloaded } : {}),
      });
    } finally {
      view.stop();
      await client.close();
    }
  });
}

/**
 * preloadIfHinted honours `ramSnapshot.preload_hint` (rfc §2.2): when the pulled artifact asks
 * for it, its snapshot memory is decompressed now into the store's snapshot cache, where the
 * runtime's first start finds it. Returns the folder, or undefined when there is nothing to do.
 */
async function preloadIfHinted(
  store: import("../../store/store.js").Store,
  digest: string,
  reference: string,
): Promise<string | undefined> {
  const desc = await store.resolve(digest);
  // Most pulls carry no RAM snapshot: say so from the manifest, before loading the artifact
  // code (schema compilation and all, a tenth of a second of a small pull).
  const m = await store.readJson<Partial<ImageManifest>>(desc.digest);
  if (!hasRamSnapshotLayer(m)) return undefined;
  const { loadArtifactByDescriptor } = await import("../../artifact/artifact.js");
  const { preloadSnapshot } = await import("../../artifact/prepare.js");
  let a;
  try {
    a = await loadArtifactByDescriptor(store, desc, reference);
  } catch {
    return undefined; // not an OVMS artifact (an index, another kind): nothing to preload
  }
  if (!a.ovms.ramSnapshot?.preload_hint) return undefined;
  const { memoryFile } = await preloadSnapshot(store, a);
  const { dirname } = await import("node:path");
  return dirname(memoryFile);
}
