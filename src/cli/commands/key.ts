import { writeFile } from "node:fs/promises";
import { Option, type Command } from "commander";
import { OvmsError } from "../../core/errors.js";
import { Printer, globals } from "../context.js";
import { PASSWORD_ENV, passphrase } from "../passphrase.js";

/** register adds `ovm key generate`: an ECDSA P-256 key pair for `ovm sign`. */
export function register(program: Command): void {
  const key = program
    .command("key")
    .description("manage signing keys")
    .addHelpText(
      "after",
      `
Examples:
  ovm key generate -o release`,
    );
  key
    .command("generate")
    .description(
      "make an ECDSA P-256 key pair: PREFIX.key (PKCS#8, encrypted with a passphrase) and PREFIX.pub",
    )
    .addOption(new Option("-o, --output <prefix>", "file name prefix of the pair").default("ovm", "ovm"))
    .option("--force", "overwrite existing files")
    .addHelpText(
      "after",
      `
The passphrase comes from $${PASSWORD_ENV}, else it is asked on the terminal.

Examples:
  ovm key generate                       # ovm.key and ovm.pub here
  ${PASSWORD_ENV}=… ovm key generate -o keys/release
  ovm sign 127.0.0.1:5000/demo/vm:1.0 --key keys/release.key`,
    )
    .action(async (opts: { output: string; force?: boolean }, c: Command) => {
      const out = new Printer(globals(c));
      const { generateKeyPair } = await import("../../sign/keys.js");
      const privatePath = `${opts.output}.key`;
      const publicPath = `${opts.output}.pub`;
      const pair = generateKeyPair(await passphrase(privatePath, true));
      const flag = opts.force ? "w" : "wx";
      try {
        await writeFile(privatePath, pair.privatePem, { mode: 0o600, flag });
        await writeFile(publicPath, pair.publicPem, { mode: 0o644, flag });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EEXIST")
          throw new OvmsError(
            "USAGE",
            `${(e as NodeJS.ErrnoException).path}: already exists (--force to overwrite, or -o another prefix)`,
          );
        throw e;
      }
      out.result(
        { private: privatePath, public: publicPath, fingerprint: pair.fingerprint },
        () =>
          `Private key written to ${privatePath}\nPublic key written to ${publicPath}\nFingerprint ${pair.fingerprint}`,
      );
    });
}
