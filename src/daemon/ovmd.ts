#!/usr/bin/env node
import { Command, CommanderError } from "commander";
import { isOvmsError } from "../core/errors.js";
import { VERSION } from "../version.js";
import { addDaemonOptions, serveOptions, type DaemonFlags } from "./options.js";
import { serve } from "./server.js";

/**
 * ovmd is the OVMS reference runtime: the runtime API (spec/api/ovms-runtime.openapi.yaml)
 * on a UNIX socket, running instances on QEMU. It runs until SIGTERM or SIGINT; instances
 * outlive it and the next ovmd re-attaches to them.
 */
async function main(argv: string[]): Promise<void> {
  const program = addDaemonOptions(
    new Command("ovmd")
      .description("OVMS runtime daemon: runs OVMS artifacts on QEMU behind the runtime API")
      .version(VERSION)
      .exitOverride(),
  ).addHelpText(
    "after",
    `
Examples:
  ovmd                                     # the API on the UNIX socket only
  ovmd --http 127.0.0.1:7070               # and the web console: open http://127.0.0.1:7070/,
                                           # log in with the token in <state dir>/http-token
  OVMD_TOKEN=… ovmd --listen 0.0.0.0:7000  # the API on TCP for remote clients (token required)`,
  );
  try {
    program.parse(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode === 0 ? 0 : 2;
      return;
    }
    throw e;
  }
  try {
    const d = await serve(serveOptions(program.opts<DaemonFlags>()));
    await d.closed;
  } catch (e) {
    process.stderr.write(`ovmd: ${(e as Error).message}\n`);
    if (argv.includes("--log-level") && argv.includes("debug"))
      process.stderr.write(`${(e as Error).stack}\n`);
    process.exitCode = isOvmsError(e, "USAGE") ? 2 : 1;
  }
}

await main(process.argv);
