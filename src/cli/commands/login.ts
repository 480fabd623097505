import type { Command } from "commander";
import { OvmsError } from "../../core/errors.js";
import { Printer, globals } from "../context.js";
import { addRegistryFlags, type RegistryFlags } from "./copy.js";

/** registryHost reduces what a user types (`host:port`, `https://host/v2/`) to `host[:port]`. */
export function registryHost(input: string): string {
  let h = input.trim().replace(/^[a-z]+:\/\//i, "");
  const slash = h.indexOf("/");
  if (slash >= 0) h = h.slice(0, slash);
  if (!h || !/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/.test(h)) {
    throw new OvmsError("USAGE", `"${input}" is not a registry host[:port]`);
  }
  return h === "index.docker.io" || h === "registry-1.docker.io" ? "docker.io" : h;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks)
    .toString("utf8")
    .replace(/\r?\n$/, "");
}

/**
 * register adds `ovm login` (checks the credentials against the registry, then stores them
 * in the docker config or its credential helper) and `ovm logout`.
 */
export function register(program: Command): void {
  const login = program
    .command("login")
    .description(
      "log in to a registry; credentials go to the docker config ($DOCKER_CONFIG/config.json or ~/.docker/config.json)",
    )
    .argument("<registry>", "registry host[:port]")
    .option("-u, --username <user>", "user name")
    .option(
      "-p, --password <password>",
      "password (visible to other users of this machine: prefer --password-stdin)",
    )
    .option("--password-stdin", "read the password from stdin")
    .addHelpText(
      "after",
      `
Examples:
  echo "$TOKEN" | ovm login registry.example.com -u robot --password-stdin
  ovm login 127.0.0.1:5000 -u admin -p secret   # the password shows in ps: prefer --password-stdin`,
    );
  addRegistryFlags(login, {}).action(
    async (
      registry: string,
      opts: RegistryFlags & { username?: string; password?: string; passwordStdin?: boolean },
      c: Command,
    ) => {
      const out = new Printer(globals(c));
      const host = registryHost(registry);
      if (!opts.username) throw new OvmsError("USAGE", "login needs -u USER");
      if (opts.password !== undefined && opts.passwordStdin)
        throw new OvmsError("USAGE", "give either -p or --password-stdin, not both");
      const password = opts.passwordStdin ? await readStdin() : opts.password;
      if (password === undefined)
        throw new OvmsError("USAGE", "login needs --password-stdin (or -p PASSWORD)");
      if (opts.password !== undefined)
        out.info("WARNING! Using -p on the command line is insecure; use --password-stdin.");
      const { RegistryClient } = await import("../../registry/client.js");
      const { dockerConfigPath, saveCredential } = await import("../../registry/credentials.js");
      const user = opts.username;
      const client = new RegistryClient({
        plainHttp: opts.plainHttp,
        caFile: opts.caFile,
        credentials: async () => ({ username: user, password }),
      });
      try {
        await client.ping(host);
      } catch (e) {
        if (e instanceof OvmsError && (e.code === "UNAUTHORIZED" || e.code === "DENIED")) {
          throw new OvmsError("UNAUTHORIZED", `login to ${host} as "${user}" failed: ${e.message}`, {
            cause: e,
          });
        }
        throw e;
      } finally {
        await client.close();
      }
      const where = await saveCredential(host, user, password);
      out.result(
        {
          registry: host,
          username: user,
          stored: where === "file" ? dockerConfigPath() : "credential helper",
        },
        () => "Login Succeeded",
      );
    },
  );

  program
    .command("logout")
    .description("forget the credentials of a registry")
    .argument("<registry>", "registry host[:port]")
    .addHelpText(
      "after",
      `
Examples:
  ovm logout registry.example.com`,
    )
    .action(async (registry: string, _opts, c: Command) => {
      const out = new Printer(globals(c));
      const host = registryHost(registry);
      const { removeCredential } = await import("../../registry/credentials.js");
      const removed = await removeCredential(host);
      out.result({ registry: host, removed }, () =>
        removed ? `Removed login credentials for ${host}` : `Not logged in to ${host}`,
      );
    });
}
