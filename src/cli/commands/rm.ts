import type { Command } from "commander";
import { isOvmsError } from "../../core/errors.js";
import { isDaemonUnavailable } from "../../client/client.js";
import { Printer, globals } from "../context.js";
import { addSocketOption, daemonClient } from "./daemon-client.js";
import { removeArtifacts } from "./store.js";

/** register adds `ovm rm`: instances by id or name when the daemon knows them, else artifacts by reference. */
export function register(program: Command): void {
  const cmd = program
    .command("rm")
    .description("remove instances (by id or name) or, for anything else, artifact names from the store")
    .argument("<target...>", "instance ids or names, or artifact references")
    .option("-f, --force", "stop a running instance before removing it");
  addSocketOption(cmd).action(async (targets: string[], opts: { force?: boolean }, c: Command) => {
    const out = new Printer(globals(c));
    const client = daemonClient(c);
    const removed: string[] = [];
    const artifacts: string[] = [];
    let daemon = true;
    for (const t of targets) {
      if (daemon) {
        try {
          await client.remove(t, { force: !!opts.force });
          removed.push(t);
          continue;
        } catch (e) {
          // No daemon: nothing to remove but artifacts. Unknown instance: it names an artifact.
          if (isDaemonUnavailable(e)) daemon = false;
          else if (!isOvmsError(e, "NOT_FOUND") && !isOvmsError(e, "BAD_REQUEST")) throw e;
        }
      }
      artifacts.push(t);
    }
    if (removed.length)
      out.result({ removed: removed.map((instance) => ({ instance })) }, () => removed.join("\n"));
    if (artifacts.length) await removeArtifacts(artifacts, c);
  });
}
