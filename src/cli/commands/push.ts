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

/** register adds `ovm push REF`: the artifact, its blobs and its referrers from the store to the registry REF names. */
export function register(program: Command): void {
  const cmd = program
    .command("push")
    .description("push an artifact from the local store to a registry (blobs the registry has are skipped)")
    .argument("<ref>", "reference in the store, naming the destination, e.g. 127.0.0.1:5000/demo/vm:1.0")
    .option(
      "--referrers <bool>",
      "also push the signatures and snapshots that refer to it",
      parseBool("--referrers"),
      true,
    )
    .addHelpText(
      "after",
      `
The store's name of the artifact says where it goes: tag it with the registry first.

Examples:
  ovm tag demo/vm:1.0 127.0.0.1:5000/demo/vm:1.0 && ovm push 127.0.0.1:5000/demo/vm:1.0
  ovm push registry.example.com/team/vm:1.0 --referrers=false   # without signatures and snapshots`,
    );
  addRegistryFlags(cmd).action(
    async (ref: string, opts: RegistryFlags & { referrers: boolean }, c: Command) => {
      const { copy } = await import("../../registry/copy.js");
      const r = parseReference(ref);
      const store = await openStore(c, "read");
      const client = await makeClient(opts);
      const view = await progressView(globals(c));
      try {
        const result = await interruptible(globals(c), `push of ${formatReference(r)}`, view, (signal) =>
          copy(store, ref, client.repository(r, { push: true }), r.tag, {
            concurrency: opts.concurrency,
            referrers: opts.referrers,
            progress: view.progress,
            signal,
          }),
        );
        view.stop();
        if (result.done) printSummary(c, "Pushed", formatReference(r), result.value);
      } finally {
        view.stop();
        await client.close();
      }
    },
  );
}
