import type { Command } from "commander";
import { Printer, globals } from "../context.js";
import { addSocketOption, daemonClient } from "./daemon-client.js";

/** register adds `ovm snapshot ID -t REF`: a RAM snapshot of an instance as a new artifact. */
export function register(program: Command): void {
  const cmd = program
    .command("snapshot")
    .description("take a RAM snapshot of an instance into a new artifact")
    .argument("<id>", "instance id or name")
    .requiredOption("-t, --tag <ref>", "reference to name the snapshot artifact")
    .option("--stop", "stop the instance after the snapshot instead of resuming it");
  addSocketOption(cmd).action(async (id: string, opts: { tag: string; stop?: boolean }, c: Command) => {
    const out = new Printer(globals(c));
    const r = await daemonClient(c).snapshot({
      instance_id: id,
      tag: opts.tag,
      ...(opts.stop ? { stop: true } : {}),
    });
    out.result(r, () => `${r.reference} ${r.snapshot_ref}`);
  });
}
