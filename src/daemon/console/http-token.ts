import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

/**
 * consoleToken is the bearer token of the `--http` listener: the one given (`--token`,
 * OVMD_TOKEN), else one made once and kept in `<stateDir>/http-token` (mode 0600, readable by
 * the daemon's user only), the same across restarts so open consoles keep working. A TCP
 * listener never opens without a token (RFC §6.1).
 */
export async function consoleToken(
  stateDir: string,
  given?: string,
): Promise<{ token: string; file?: string }> {
  if (given) return { token: given };
  const file = join(stateDir, "http-token");
  let token = (await readFile(file, "utf8").catch(() => "")).trim();
  if (!token) {
    token = randomBytes(24).toString("base64url");
    await writeFile(file, `${token}\n`, { mode: 0o600 });
  }
  return { token, file };
}
