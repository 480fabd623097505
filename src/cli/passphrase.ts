import { OvmsError } from "../core/errors.js";

/** PASSWORD_ENV is where `ovm` reads a key's passphrase from before it asks (cosign reads COSIGN_PASSWORD the same way). */
export const PASSWORD_ENV = "OVM_KEY_PASSWORD";

/** askHidden reads one line from the terminal without echoing it. */
function askHidden(prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    process.stderr.write(prompt);
    stdin.setRawMode(true);
    stdin.resume();
    let line = "";
    const done = (err?: Error) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off("data", onData);
      process.stderr.write("\n");
      if (err) reject(err);
      else resolve(line);
    };
    const onData = (chunk: Buffer) => {
      for (const ch of chunk.toString("utf8")) {
        if (ch === "\r" || ch === "\n") return done();
        if (ch === "\u0003") return done(new OvmsError("CANCELLED", "passphrase prompt interrupted"));
        if (ch === "\u007f" || ch === "\b") line = line.slice(0, -1);
        else line += ch;
      }
    };
    stdin.on("data", onData);
  });
}

/**
 * passphrase returns a key's passphrase: $OVM_KEY_PASSWORD when set (scripts, CI), else asked
 * on the terminal (twice with `confirm`, for a new key). Without either it is a usage error
 * that says how to give one.
 */
export async function passphrase(what: string, confirm = false): Promise<string> {
  const env = process.env[PASSWORD_ENV];
  if (env !== undefined) return env;
  if (!process.stdin.isTTY || !process.stderr.isTTY) {
    throw new OvmsError(
      "USAGE",
      `${what} needs a passphrase: set ${PASSWORD_ENV} or run ovm on a terminal to be asked`,
    );
  }
  const first = await askHidden(`Passphrase for ${what}: `);
  if (confirm && (await askHidden("Again: ")) !== first)
    throw new OvmsError("USAGE", "the passphrases do not match");
  return first;
}
