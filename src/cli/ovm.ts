#!/usr/bin/env node
import { VERSION } from "../version.js";

/** main runs `ovm` and maps errors to one line on stderr and an exit status. */
export async function main(argv: string[]): Promise<void> {
  const debug = argv.includes("--debug");
  const json = argv.includes("--json");
  // Imported here, not at the top, so that `ovm --version` loads neither (see below).
  const [{ CommanderError }, { exitStatus, isOvmsError, ValidationError }, { program }] = await Promise.all([
    import("commander"),
    import("../core/errors.js"),
    import("./program.js"),
  ]);
  try {
    await (await program(argv)).parseAsync(argv);
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

// A reader that stops early (`ovm ls | head`) closes the pipe: that ends the output, it is no
// failure, so leave quietly as other command-line tools do instead of crashing on EPIPE.
process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  if (e.code === "EPIPE") process.exit(0);
  throw e;
});

// `ovm --version` alone prints what commander would print (the version and a newline, exit 0)
// without loading commander: about half of what is left of its start-up (bench/cli).
const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === "--version" || args[0] === "-V")) process.stdout.write(`${VERSION}\n`);
else await main(process.argv);
