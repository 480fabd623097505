#!/usr/bin/env node
import { Command, CommanderError } from "commander";
import { exitStatus, isOvmsError, ValidationError } from "../core/errors.js";
import { register as registerValidate } from "./commands/validate.js";
import { register as registerBuild } from "./commands/build.js";
import { register as registerStore } from "./commands/store.js";
import { register as registerPush } from "./commands/push.js";
import { register as registerPull } from "./commands/pull.js";
import { register as registerCopy } from "./commands/copy.js";
import { register as registerTags } from "./commands/tags.js";
import { register as registerLogin } from "./commands/login.js";
import { register as registerRun } from "./commands/run.js";
import { register as registerPs } from "./commands/ps.js";
import { register as registerLogs } from "./commands/logs.js";
import { register as registerStop } from "./commands/stop.js";
import { register as registerRm } from "./commands/rm.js";
import { register as registerStatus } from "./commands/status.js";
import { register as registerInject } from "./commands/inject.js";
import { register as registerSnapshot } from "./commands/snapshot.js";
import { register as registerServe } from "./commands/serve.js";
import { register as registerKey } from "./commands/key.js";
import { register as registerSign } from "./commands/sign.js";
import { register as registerConformance } from "./commands/conformance.js";
import { register as registerConvert } from "./commands/convert.js";
import { register as registerAttach } from "./commands/attach.js";
import { VERSION } from "../version.js";

/** program builds the `ovm` command tree. */
export function program(): Command {
  const p = new Command("ovm")
    .description("OVMS: build, ship and run full virtual machines as OCI artifacts")
    .version(VERSION)
    .option(
      "--store <dir>",
      "local store (default: $OVM_STORE, else /var/lib/ovms/store as root, else $XDG_DATA_HOME/ovms/store)",
    )
    .option("--json", "machine-readable output")
    .option("-q, --quiet", "print only results")
    .option("--debug", "print stack traces on errors")
    .showHelpAfterError()
    .exitOverride();
  registerValidate(p);
  registerBuild(p);
  registerStore(p);
  registerPush(p);
  registerPull(p);
  registerCopy(p);
  registerTags(p);
  registerLogin(p);
  registerRun(p);
  registerPs(p);
  registerLogs(p);
  registerAttach(p);
  registerStop(p);
  // rm: an instance id or name when the daemon knows it, else an artifact reference (store.ts removeArtifacts).
  registerRm(p);
  registerStatus(p);
  registerInject(p);
  registerSnapshot(p);
  registerKey(p);
  registerSign(p);
  registerConvert(p);
  registerServe(p);
  registerConformance(p);
  return p;
}

/** main runs `ovm` and maps errors to one line on stderr and an exit status. */
export async function main(argv: string[]): Promise<void> {
  const debug = argv.includes("--debug");
  const json = argv.includes("--json");
  try {
    await program().parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode === 0 ? 0 : 2;
      return;
    }
    if (json && isOvmsError(e)) {
      const body: Record<string, unknown> = { code: e.code, message: e.message };
      if (e instanceof ValidationError) body.problems = e.problems;
      process.stderr.write(JSON.stringify({ error: body }) + "\n");
    } else {
      process.stderr.write(`ovm: ${isOvmsError(e) ? e.message : ((e as Error).message ?? String(e))}\n`);
    }
    if (debug) process.stderr.write(`${(e as Error).stack ?? ""}\n`);
    // 2 for a mistake in what was typed (like commander's own), 1 otherwise: the error table says which.
    process.exitCode = exitStatus(e);
  }
}

await main(process.argv);
