import type { Command } from "commander";
import { formatReference, parseReference } from "../../core/reference.js";
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
    .option("--platform <os/arch>", "platform to pick from a multi-platform index (default: this host's)");
  addRegistryFlags(cmd).action(
    async (ref: string, opts: RegistryFlags & { referrers: boolean; platform?: string }, c: Command) => {
      const { copy } = await import("../../registry/copy.js");
      const { hostPlatform, parsePlatform } = await import("../../registry/platform.js");
      const r = parseReference(ref);
      const platform = opts.platform ? parsePlatform(opts.platform) : hostPlatform();
      const store = await openStore(c);
      const client = await makeClient(opts);
      const view = await progressView(globals(c));
      // The store names what it pulled by the full reference (tag kept, digest dropped).
      const name = r.tag ? formatReference({ ...r, digest: undefined }) : undefined;
      try {
        const result = await interruptible(globals(c), `pull of ${formatReference(r)}`, view, (signal) =>
          copy(client.repository(r), r.digest ?? r.tag!, store, name, {
            concurrency: opts.concurrency,
            referrers: opts.referrers,
            platform,
            progress: view.progress,
            signal,
          }),
        );
        view.stop();
        if (result.done) printSummary(c, "Pulled", name ?? formatReference(r), result.value);
      } finally {
        view.stop();
        await client.close();
      }
    },
  );
}
