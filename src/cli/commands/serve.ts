import type { Command } from "commander";
import { globals } from "../context.js";
import { addDaemonOptions, serveOptions, type DaemonFlags } from "../../daemon/options.js";

/** register adds `ovm serve`: the daemon in the foreground, exactly as `ovmd` runs it. */
export function register(program: Command): void {
  const cmd = program
    .command("serve")
    .description("run the runtime daemon (ovmd) in the foreground")
    .addHelpText(
      "after",
      `
One daemon serves one store (--store); without --socket it listens on that store's own socket,
where every ovm command using the same store finds it (ovm run starts one when none answers).

Examples:
  ovm serve
  ovm --store /srv/ovms serve --warm-pool 2 --snapshot-cache 4G`,
    );
  addDaemonOptions(cmd, false).action(async (opts: DaemonFlags, c: Command) => {
    const { serve } = await import("../../daemon/server.js");
    const store = globals(c).store;
    const d = await serve({ ...serveOptions(opts), ...(store ? { store } : {}) });
    await d.closed;
  });
}
