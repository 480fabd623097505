import { execFile } from "node:child_process";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { randomBytes } from "node:crypto";
import { OvmsError } from "../core/errors.js";
import type { Credential, CredentialProvider } from "./auth.js";

/**
 * Credentials in the docker CLI's config file, so `docker login`, `skopeo login`, `oras login`
 * and `ovm login` share them: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
 * Format: https://github.com/docker/cli/blob/master/cli/config/configfile/file.go and the
 * credential-helper protocol https://github.com/docker/docker-credential-helpers.
 */

/** DockerConfig is the part of the docker config file OVMS reads and writes; other keys are kept as they are. */
export interface DockerConfig {
  auths?: Record<
    string,
    { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string }
  >;
  credHelpers?: Record<string, string>;
  credsStore?: string;
  [key: string]: unknown;
}

/** DOCKER_HUB_KEY is the key docker uses for Docker Hub credentials. */
const DOCKER_HUB_KEY = "https://index.docker.io/v1/";

/** dockerConfigPath is where the docker config lives: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. */
export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.DOCKER_CONFIG || join(env.HOME || homedir(), ".docker"), "config.json");
}

/** credentialKey is the key credentials of `registry` are stored under (Docker Hub has its historical URL). */
export function credentialKey(registry: string): string {
  return isDockerHub(registry) ? DOCKER_HUB_KEY : registry;
}

function isDockerHub(host: string): boolean {
  return ["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"].includes(host);
}

/** hostOfKey reduces a config key (`https://host:port/v1/`, `host`) to `host[:port]`. */
function hostOfKey(key: string): string {
  let k = key.replace(/^[a-z]+:\/\//i, "");
  const slash = k.indexOf("/");
  if (slash >= 0) k = k.slice(0, slash);
  return isDockerHub(k) ? "docker.io" : k;
}

/** readDockerConfig reads the docker config; a missing file is an empty config. */
export async function readDockerConfig(path = dockerConfigPath()): Promise<DockerConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw e;
  }
  try {
    return JSON.parse(text) as DockerConfig;
  } catch (e) {
    throw new OvmsError("CONFIG_INVALID", `${path}: not valid JSON: ${(e as Error).message}`);
  }
}

/** writeDockerConfig replaces the config atomically, readable by its owner only (it holds secrets). */
export async function writeDockerConfig(config: DockerConfig, path = dockerConfigPath()): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, JSON.stringify(config, null, "\t") + "\n", { mode: 0o600 });
  await rename(tmp, path);
}

/** helperFor names the credential helper configured for `registry`, if any. */
function helperFor(config: DockerConfig, registry: string): string | undefined {
  for (const [key, helper] of Object.entries(config.credHelpers ?? {})) {
    if (hostOfKey(key) === hostOfKey(registry)) return helper;
  }
  return config.credsStore || undefined;
}

/** runHelper runs `docker-credential-<helper> <action>` with `input` on stdin. */
function runHelper(
  helper: string,
  action: "get" | "store" | "erase",
  input: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      `docker-credential-${helper}`,
      [action],
      { timeout: 30_000 },
      (err, stdout, stderr) => {
        if (err && (err as NodeJS.ErrnoException).code === "ENOENT") {
          reject(
            new OvmsError(
              "CREDENTIAL_HELPER",
              `credential helper docker-credential-${helper} is not installed (named in ${dockerConfigPath()})`,
            ),
          );
          return;
        }
        const code = err
          ? typeof (err as { code?: unknown }).code === "number"
            ? (err as { code: number }).code
            : 1
          : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.end(input);
  });
}

/**
 * loadCredential finds the credential for `registry` (host[:port]): the credential helper
 * named for it in `credHelpers`, else `credsStore`, else `auths` (base64 `auth`, or
 * `username`/`password`, `identitytoken`, `registrytoken`). A helper's `<token>` user means
 * the secret is an identity token.
 */
export async function loadCredential(
  registry: string,
  path = dockerConfigPath(),
): Promise<Credential | undefined> {
  const config = await readDockerConfig(path);
  const helper = helperFor(config, registry);
  if (helper) {
    const r = await runHelper(helper, "get", credentialKey(registry));
    if (r.code === 0) {
      const body = JSON.parse(r.stdout) as { Username?: string; Secret?: string };
      if (body.Username === "<token>") return { identityToken: body.Secret };
      return { username: body.Username ?? "", password: body.Secret ?? "" };
    }
    // "credentials not found" is an answer, not a failure: fall back to the file.
    if (!/not found/i.test(r.stdout + r.stderr)) {
      throw new OvmsError(
        "CREDENTIAL_HELPER",
        `docker-credential-${helper} get ${registry}: ${(r.stderr || r.stdout).trim()}`,
      );
    }
  }
  for (const [key, entry] of Object.entries(config.auths ?? {})) {
    if (hostOfKey(key) !== hostOfKey(registry)) continue;
    const c: Credential = {};
    if (entry.auth) {
      const plain = Buffer.from(entry.auth, "base64").toString("utf8");
      const i = plain.indexOf(":");
      if (i < 0)
        throw new OvmsError("CONFIG_INVALID", `${path}: auths["${key}"].auth is not base64 of user:password`);
      c.username = plain.slice(0, i);
      c.password = plain.slice(i + 1);
    } else if (entry.username !== undefined) {
      c.username = entry.username;
      c.password = entry.password ?? "";
    }
    if (entry.identitytoken) c.identityToken = entry.identitytoken;
    if (entry.registrytoken) c.registryToken = entry.registrytoken;
    if (Object.keys(c).length) return c;
  }
  return undefined;
}

/** dockerConfigCredentials is the CredentialProvider reading the docker config at `path`. */
export function dockerConfigCredentials(path = dockerConfigPath()): CredentialProvider {
  return (registry) => loadCredential(registry, path);
}

/**
 * saveCredential stores a user and password for `registry` where docker would: the
 * credential helper if one is configured for it, else `auths[registry].auth` in the file.
 */
export async function saveCredential(
  registry: string,
  username: string,
  password: string,
  path = dockerConfigPath(),
): Promise<"helper" | "file"> {
  const config = await readDockerConfig(path);
  const helper = helperFor(config, registry);
  const key = credentialKey(registry);
  if (helper) {
    const r = await runHelper(
      helper,
      "store",
      JSON.stringify({ ServerURL: key, Username: username, Secret: password }),
    );
    if (r.code !== 0)
      throw new OvmsError(
        "CREDENTIAL_HELPER",
        `docker-credential-${helper} store ${registry}: ${(r.stderr || r.stdout).trim()}`,
      );
    // A stale plain-text entry would shadow nothing but would still leak a password: drop it.
    if (config.auths?.[key]?.auth) {
      config.auths[key] = {};
      await writeDockerConfig(config, path);
    }
    return "helper";
  }
  config.auths ??= {};
  config.auths[key] = { auth: Buffer.from(`${username}:${password}`).toString("base64") };
  await writeDockerConfig(config, path);
  return "file";
}

/** removeCredential forgets the credential of `registry`; it tells whether there was one. */
export async function removeCredential(registry: string, path = dockerConfigPath()): Promise<boolean> {
  const config = await readDockerConfig(path);
  let removed = false;
  const helper = helperFor(config, registry);
  if (helper) {
    const r = await runHelper(helper, "erase", credentialKey(registry));
    if (r.code === 0) removed = true;
    else if (!/not found/i.test(r.stdout + r.stderr)) {
      throw new OvmsError(
        "CREDENTIAL_HELPER",
        `docker-credential-${helper} erase ${registry}: ${(r.stderr || r.stdout).trim()}`,
      );
    }
  }
  for (const key of Object.keys(config.auths ?? {})) {
    if (hostOfKey(key) === hostOfKey(registry)) {
      delete config.auths![key];
      removed = true;
    }
  }
  if (removed) await writeDockerConfig(config, path);
  return removed;
}
