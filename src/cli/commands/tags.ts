import { Option, type Command } from "commander";
import { parseReference } from "../../core/reference.js";
import { Printer, globals } from "../context.js";
import { addRegistryFlags, makeClient, positiveInt, type RegistryFlags } from "./copy.js";

/** register adds `ovm tags REPO`: every tag of a registry repository, all pages. */
export function register(program: Command): void {
  const cmd = program
    .command("tags")
    .description("list the tags of a registry repository")
    .argument("<repo>", "repository, e.g. 127.0.0.1:5000/demo/vm")
    .addOption(new Option("--page-size <n>", "tags asked per page").argParser(positiveInt("--page-size")))
    .addHelpText(
      "after",
      `
Examples:
  ovm tags 127.0.0.1:5000/demo/vm
  ovm tags registry.example.com/team/vm --json`,
    );
  addRegistryFlags(cmd, {}).action(
    async (repo: string, opts: RegistryFlags & { pageSize?: number }, c: Command) => {
      const out = new Printer(globals(c));
      const r = parseReference(repo);
      const client = await makeClient(opts);
      try {
        const tags = await client.repository(r).tags({ pageSize: opts.pageSize });
        out.result({ repository: `${r.registry}/${r.repository}`, tags }, () => tags.join("\n"));
      } finally {
        await client.close();
      }
    },
  );
}
