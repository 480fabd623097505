import type { Command } from "commander";
import { OvmsError, isOvmsError } from "../../core/errors.js";
import { formatSize } from "../../core/size.js";
import { Printer, globals, table } from "../context.js";
import { eachArgument } from "../each.js";
import { addSocketOption, daemonClient } from "./daemon-client.js";
import { artifactName } from "./ps.js";

/**
 * register adds `ovm pool ls` and `ovm pool rm REF...`: the daemon's warm pools — paused QEMU
 * processes kept ready per hot snapshot, which are not instances but hold memory.
 */
export function register(program: Command): void {
  const pool = program
    .command("pool")
    .description("the warm pool: paused QEMU processes ovmd keeps ready per hot snapshot")
    .addHelpText(
      "after",
      `
After a snapshot artifact is started, ovmd keeps --warm-pool paused QEMU processes (default: 1)
ready for it, so the next restore skips starting one. They are not instances (ovm ps does not
list them) but each holds its guest's memory.

Examples:
  ovm pool ls
  ovm pool rm demo/vm:fast    # stop its ready processes; no refill until ovmd restarts
  ovmd --warm-pool 0          # never keep any`,
    );
  const ls = pool
    .command("ls")
    .description("list the warm pools: snapshot, ready processes, guest memory")
    .addHelpText(
      "after",
      `
Examples:
  ovm pool ls
  ovm pool ls --json | jq '.[].ready'`,
    );
  addSocketOption(ls).action(async (_opts, c: Command) => {
    const out = new Printer(globals(c));
    const pools = await (await daemonClient(c)).pools();
    out.result(pools, () =>
      table(
        ["REFERENCE", "DIGEST", "READY", "SIZE", "MEMORY"],
        pools.map((p) => [
          artifactName(p.reference),
          p.digest.slice(7, 19),
          String(p.ready),
          String(p.size),
          formatSize(p.ready * p.memory_bytes),
        ]),
      ),
    );
  });
  const rm = pool
    .command("rm")
    .description("empty the warm pool of snapshot artifacts (by reference or digest) and keep it empty")
    .argument("<ref...>", "snapshot artifact references or manifest digests, as ovm pool ls shows them")
    .addHelpText(
      "after",
      `
The pool stays empty until ovmd restarts; restores of the snapshot still work, each starting
its own QEMU. To never keep one: ovmd --warm-pool-for REF=0 (one snapshot) or --warm-pool 0.

Examples:
  ovm pool rm demo/vm:fast
  ovm pool rm $(ovm pool ls --json | jq -r '.[].digest')   # every pool`,
    );
  addSocketOption(rm).action(async (refs: string[], _opts, c: Command) => {
    const out = new Printer(globals(c));
    const client = await daemonClient(c);
    const { done, errors } = await eachArgument(refs, out, async (ref) => {
      try {
        return await client.emptyPool(ref);
      } catch (e) {
        if (!isOvmsError(e, "NOT_FOUND")) throw e;
        throw new OvmsError("NOT_FOUND", `pool rm ${ref}: no warm pool for it (ovm pool ls lists them)`);
      }
    });
    out.result({ emptied: done, errors }, () =>
      done
        .map((r) => `${artifactName(r.reference)}: ${r.discarded} paused QEMU process(es) stopped`)
        .join("\n"),
    );
  });
}
