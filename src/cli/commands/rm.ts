import type { Command } from "commander";
import { OvmsError, isOvmsError } from "../../core/errors.js";
import { Printer, globals, openStore } from "../context.js";
import { eachArgument } from "../each.js";
import { addSocketOption, daemonClient } from "./daemon-client.js";

/**
 * register adds `ovm rm ID...`: instances only (artifacts are `ovm rmi`). Every argument is
 * tried; each one that names no instance is reported, and the exit status is non-zero.
 */
export function register(program: Command): void {
  const cmd = program
    .command("rm")
    .description("remove instances (artifacts: ovm rmi)")
    .argument("<instance...>", "instance ids, names or id prefixes")
    .option("-f, --force", "stop a running instance before removing it")
    .addHelpText(
      "after",
      `
Examples:
  ovm rm web                  # an instance that has ended
  ovm rm -f web db            # stop them first if they still run
  ovm rm $(ovm ps -aq)        # every instance`,
    );
  addSocketOption(cmd).action(async (targets: string[], opts: { force?: boolean }, c: Command) => {
    const out = new Printer(globals(c));
    const client = await daemonClient(c);
    const { done, errors } = await eachArgument(targets, out, async (t) => {
      try {
        const r = await client.remove(t, { force: !!opts.force });
        return { target: t, instance_id: r.instance_id, name: r.name };
      } catch (e) {
        if (!isOvmsError(e, "NOT_FOUND")) throw e;
        throw new OvmsError("NOT_FOUND", `rm ${t}: no such instance${await artifactHint(c, t)}`);
      }
    });
    out.result({ removed: done.map(({ instance_id, name }) => ({ instance_id, name })), errors }, () =>
      done.map((d) => d.target).join("\n"),
    );
  });
}

/** artifactHint points to `ovm rmi` when what was given to `rm` names an artifact in the store. */
async function artifactHint(c: Command, t: string): Promise<string> {
  try {
    const store = await openStore(c, "read");
    await store.resolve(t);
    return `; an artifact is named ${t}: \`ovm rmi ${t}\` removes it`;
  } catch {
    return "";
  }
}
