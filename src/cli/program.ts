import { Command } from "commander";
import { VERSION } from "../version.js";
import { STORE_HELP } from "./flags.js";

/** CommandModule is a file under commands/: it adds its commands to the program. */
interface CommandModule {
  register(program: Command): void;
}

/**
 * COMMANDS lists the command files in the order `ovm --help` shows them, each with the names
 * and aliases it adds. A command's file is imported only when it runs (or for the whole help):
 * `ovm ls` does not pay for what `ovm build` or `ovm push` load (ajv, sigstore, undici, tar).
 * test/cli/lazy-load.test.ts holds these names to what each file registers.
 */
export const COMMANDS: readonly { names: readonly string[]; load: () => Promise<CommandModule> }[] = [
  { names: ["validate"], load: () => import("./commands/validate.js") },
  { names: ["build"], load: () => import("./commands/build.js") },
  { names: ["ls", "images", "inspect", "tag", "rmi", "gc"], load: () => import("./commands/store.js") },
  { names: ["push"], load: () => import("./commands/push.js") },
  { names: ["pull"], load: () => import("./commands/pull.js") },
  { names: ["copy", "cp"], load: () => import("./commands/copy.js") },
  { names: ["tags"], load: () => import("./commands/tags.js") },
  { names: ["login", "logout"], load: () => import("./commands/login.js") },
  { names: ["run"], load: () => import("./commands/run.js") },
  { names: ["ps"], load: () => import("./commands/ps.js") },
  { names: ["logs"], load: () => import("./commands/logs.js") },
  { names: ["attach"], load: () => import("./commands/attach.js") },
  { names: ["stop"], load: () => import("./commands/stop.js") },
  { names: ["kill"], load: () => import("./commands/kill.js") },
  { names: ["rm"], load: () => import("./commands/rm.js") },
  { names: ["status"], load: () => import("./commands/status.js") },
  { names: ["inject"], load: () => import("./commands/inject.js") },
  { names: ["snapshot"], load: () => import("./commands/snapshot.js") },
  { names: ["pool"], load: () => import("./commands/pool.js") },
  { names: ["key"], load: () => import("./commands/key.js") },
  { names: ["sign", "verify"], load: () => import("./commands/sign.js") },
  { names: ["system"], load: () => import("./commands/system.js") },
  { names: ["convert"], load: () => import("./commands/convert.js") },
  { names: ["serve"], load: () => import("./commands/serve.js") },
  { names: ["conformance"], load: () => import("./commands/conformance.js") },
];

/**
 * program builds the `ovm` command tree. Given the command line, it holds only the command
 * file that line names (none for `ovm --version`); without one, or when the line names no
 * known command (`ovm`, `ovm help`, a typo commander suggests a fix for), every command.
 */
export async function program(argv?: readonly string[]): Promise<Command> {
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
  for (const m of await Promise.all(needed(argv).map((c) => c.load()))) m.register(p);
  pointToHelp(p, "ovm");
  return p;
}

/** needed picks the command files a command line uses (see program). */
function needed(argv: readonly string[] | undefined): (typeof COMMANDS)[number][] {
  if (!argv) return [...COMMANDS];
  const args = argv.slice(2);
  const name = commandName(args);
  if (name === undefined) {
    const version = args.some((a) => a === "-V" || a === "--version");
    const help = args.some((a) => a === "-h" || a === "--help");
    if (version && !help) return [];
  }
  const one = COMMANDS.find((c) => name !== undefined && c.names.includes(name));
  return one ? [one] : [...COMMANDS];
}

/**
 * commandName is the first operand of `ovm`'s arguments: the command, after the global flags
 * (`--store` takes the next argument as its value). Undefined when there is none.
 */
export function commandName(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") return undefined;
    if (a === "--store") i++;
    else if (!a.startsWith("-")) return a;
  }
  return undefined;
}

/**
 * pointToHelp makes a usage error (unknown command or option, missing argument) print its one
 * line and where the help is, on every command, instead of the whole help.
 */
function pointToHelp(cmd: Command, path: string): void {
  cmd.showHelpAfterError(`(see '${path} --help' for its flags and examples)`);
  for (const sub of cmd.commands) pointToHelp(sub, `${path} ${sub.name()}`);
}
