import type { Command } from "commander";
import { Printer, globals } from "../context.js";
import { positiveInt } from "./copy.js";
import { addSocketOption, daemonClient } from "./daemon-client.js";

/** register adds `ovm logs [-f] [--tail N] ID`: an instance's serial console. */
export function register(program: Command): void {
  const cmd = program
    .command("logs")
    .description("print an instance's serial console")
    .argument("<id>", "instance id or name")
    .option("-f, --follow", "keep printing until the instance ends")
    .option("--tail <n>", "start with the last N lines", (v) => (v === "0" ? 0 : positiveInt("--tail")(v)))
    .addHelpText(
      "after",
      `
Examples:
  ovm logs web
  ovm logs -f --tail 20 web   # the last 20 lines, then new ones until the VM ends
  ovm logs --json web         # one {"ts","stream","line"} record per line`,
    );
  addSocketOption(cmd).action(async (id: string, opts: { follow?: boolean; tail?: number }, c: Command) => {
    const out = new Printer(globals(c));
    const records = await (
      await daemonClient(c)
    ).logs(id, {
      follow: !!opts.follow,
      ...(opts.tail !== undefined ? { tail: opts.tail } : {}),
    });
    for await (const rec of records) {
      const line = out.json ? JSON.stringify(rec) : rec.line;
      // A container's stderr lines go to stderr, as `docker logs` does.
      const to = rec.stream === "stderr" && !out.json ? process.stderr : process.stdout;
      if (!to.write(line + "\n")) await new Promise((r) => to.once("drain", r));
    }
  });
}
