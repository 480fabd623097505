import type { Command } from "commander";
import { constants } from "node:os";
import { OvmsError, isOvmsError } from "../../core/errors.js";
import { Printer, globals } from "../context.js";
import { eachArgument } from "../each.js";
import { addSocketOption, daemonClient } from "./daemon-client.js";

/**
 * register adds `ovm kill [-s SIGNAL] ID...`: a signal to each instance (POST /kill). SIGKILL
 * stops the VM at once; other signals reach a container's program; a VM without one takes
 * SIGTERM as `ovm stop`. Every argument is tried; each failure makes the exit non-zero.
 */
export function register(program: Command): void {
  const cmd = program
    .command("kill")
    .description("send a signal to instances: to a container's program, or SIGKILL/SIGTERM to stop a VM")
    .argument("<id...>", "instance ids, names or id prefixes")
    .option(
      "-s, --signal <signal>",
      "signal name or number (default: SIGKILL, as docker kill)",
      parseSignal,
      9,
    )
    .addHelpText(
      "after",
      `
Examples:
  ovm kill web                # SIGKILL: the VM is stopped at once
  ovm kill -s USR1 app        # SIGUSR1 to the container's program
  ovm kill -s 15 web          # SIGTERM: a container's program gets it; another VM is stopped gracefully`,
    );
  addSocketOption(cmd).action(async (ids: string[], opts: { signal: number }, c: Command) => {
    const out = new Printer(globals(c));
    const client = await daemonClient(c);
    const { done, errors } = await eachArgument(ids, out, async (id) => {
      try {
        return { target: id, ...(await client.kill({ instance_id: id, signal: opts.signal })) };
      } catch (e) {
        if (!isOvmsError(e, "NOT_FOUND")) throw e;
        throw new OvmsError("NOT_FOUND", `kill ${id}: no such instance`);
      }
    });
    out.result(
      {
        killed: done.map(({ instance_id, name, status, signal }) => ({ instance_id, name, status, signal })),
        errors,
      },
      () => done.map((s) => s.target).join("\n"),
    );
  });
}

/** parseSignal reads a signal as a number (1-64) or a name, with or without SIG (TERM, SIGUSR1). */
export function parseSignal(v: string): number {
  if (/^\d+$/.test(v)) {
    const n = Number(v);
    if (n >= 1 && n <= 64) return n;
  } else {
    const name = v.toUpperCase().startsWith("SIG") ? v.toUpperCase() : `SIG${v.toUpperCase()}`;
    const n = (constants.signals as Record<string, number>)[name];
    if (n) return n;
  }
  throw new OvmsError("USAGE", `--signal ${v}: not a signal (a number 1-64 or a name such as TERM, SIGUSR1)`);
}
