import { Command } from "commander";
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
import { register as registerAttach } from "./commands/attach.js";
import { register as registerStop } from "./commands/stop.js";
import { register as registerKill } from "./commands/kill.js";
import { register as registerRm } from "./commands/rm.js";
import { register as registerStatus } from "./commands/status.js";
import { register as registerInject } from "./commands/inject.js";
import { register as registerSnapshot } from "./commands/snapshot.js";
import { register as registerServe } from "./commands/serve.js";
import { register as registerKey } from "./commands/key.js";
import { register as registerSign } from "./commands/sign.js";
import { register as registerPool } from "./commands/pool.js";
import { register as registerSystem } from "./commands/system.js";
import { register as registerConformance } from "./commands/conformance.js";
import { register as registerConvert } from "./commands/convert.js";
import { VERSION } from "../version.js";
import { STORE_HELP } from "./context.js";

/** program builds the `ovm` command tree. */
export function program(): Command {
  const p = new Command("ovm")
    .description("OVMS: build, ship and run full virtual machines as OCI artifacts")
    .version(VERSION)
    .option("--store <dir>", STORE_HELP)
    .option("--json", "machine-readable output")
    .option("-q, --quiet", "print only results")
    .option("--debug", "print stack traces on errors")
    .exitOverride()
    // Usage errors look like every other error of ovm: `ovm: …` (subcommands inherit this).
    .configureOutput({ outputError: (text, write) => write(text.replace(/^error: /, "ovm: ")) })
    .addHelpText(
      "after",
      `
Examples:
  ovm build -t example/vm:1.0 --kernel vmlinuz --initrd initrd.img --disk base.qcow2
  ovm run -d --name web -p 8080:80 example/vm:1.0 && ovm ps
  ovm <command> --help        # flags and examples of one command`,
    );
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
  registerKill(p);
  registerRm(p);
  registerStatus(p);
  registerInject(p);
  registerSnapshot(p);
  registerPool(p);
  registerKey(p);
  registerSign(p);
  registerSystem(p);
  registerConvert(p);
  registerServe(p);
  registerConformance(p);
  pointToHelp(p, "ovm");
  return p;
}

/**
 * pointToHelp makes a usage error (unknown command or option, missing argument) print its one
 * line and where the help is, on every command, instead of the whole help.
 */
function pointToHelp(cmd: Command, path: string): void {
  cmd.showHelpAfterError(`(see '${path} --help' for its flags and examples)`);
  for (const sub of cmd.commands) pointToHelp(sub, `${path} ${sub.name()}`);
}
