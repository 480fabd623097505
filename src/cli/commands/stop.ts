import type { Command } from "commander";
import { OvmsError, isOvmsError } from "../../core/errors.js";
import { Printer, globals } from "../context.js";
import { eachArgument } from "../each.js";
import { addSocketOption, daemonClient } from "./daemon-client.js";

/**
 * register adds `ovm stop ID...`: ACPI power-off, then quit, then kill (or at once with
 * --force). Every argument is tried; each failure is reported and makes the exit non-zero.
 */
export function register(program: Command): void {
  const cmd = program
    .command("stop")
    .description("stop instances: ask the guest to power off, then force it after the timeout")
    .argument("<id...>", "instance ids, names or id prefixes")
    .option("-t, --timeout <seconds>", "how long the guest gets to power off (default: 10)", seconds)
    .option("--force", "do not ask the guest: quit QEMU at once")
    .addHelpText(
      "after",
      `
Examples:
  ovm stop web                # ACPI power-off; after 10 s QEMU is told to quit
  ovm stop -t 30 web db       # give the guests 30 s
  ovm stop --force web        # no ACPI: quit QEMU at once`,
    );
  addSocketOption(cmd).action(
    async (ids: string[], opts: { timeout?: number; force?: boolean }, c: Command) => {
      const out = new Printer(globals(c));
      const client = await daemonClient(c);
      const { done, errors } = await eachArgument(ids, out, async (id) => {
        try {
          const r = await client.stop({
            instance_id: id,
            ...(opts.timeout !== undefined ? { timeout_ms: opts.timeout } : {}),
            ...(opts.force ? { force: true } : {}),
          });
          return { target: id, ...r };
        } catch (e) {
          if (!isOvmsError(e, "NOT_FOUND")) throw e;
          throw new OvmsError("NOT_FOUND", `stop ${id}: no such instance`);
        }
      });
      out.result(
        {
          stopped: done.map(({ instance_id, name, status }) => ({ instance_id, name, status })),
          errors,
        },
        () => done.map((s) => s.target).join("\n"),
      );
    },
  );
}

function seconds(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new OvmsError("USAGE", `--timeout ${v}: expected seconds ≥ 0`);
  return Math.round(n * 1000);
}
