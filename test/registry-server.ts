import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createSign, randomUUID, X509Certificate } from "node:crypto";
import { appendFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { connect, createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Test helper: the real CNCF distribution registry (Debian `docker-registry`, v2.8) on a free
 * loopback port, open, with htpasswd basic auth, or with token auth backed by a small token
 * issuer (the one piece of the setup that is not the system under test).
 */

/** RegistryServer is one running registry. */
export interface RegistryServer {
  /** host is `127.0.0.1:<port>`, what references name. */
  host: string;
  port: number;
  /** dir holds the registry's config and storage. */
  dir: string;
  /** issuer is the token issuer when auth is "token". */
  issuer?: TokenIssuer;
  /** caFile is the certificate to trust when the registry serves TLS. */
  caFile?: string;
  stop(): Promise<void>;
}

/** RegistryOptions choose how the registry authenticates. */
export interface RegistryOptions {
  auth?: "none" | "htpasswd" | "token";
  /** users are user → password (htpasswd and token auth). */
  users?: Record<string, string>;
  /**
   * grants decide what the token issuer lets a user (undefined: anonymous) do on a repository;
   * default: every asked action for a known user, nothing for anonymous.
   */
  grants?: (user: string | undefined, repository: string, asked: string[]) => string[];
  /** tls serves HTTPS with a fresh self-signed certificate for 127.0.0.1 (its PEM is `caFile`). */
  tls?: boolean;
}

/** TokenIssuer is the test's token server: it signs JWTs the registry trusts. */
export interface TokenIssuer {
  url: string;
  /** requests are the scopes and user of every token request, in order. */
  requests: { user?: string; scopes: string[]; service?: string }[];
  close(): Promise<void>;
}

/** freePort finds a loopback port nobody listens on. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { cwd }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(" ")}: ${stderr || err.message}`)) : resolve(stdout),
    ),
  );
}

/**
 * startRegistry starts `docker-registry serve` with a config in a fresh temp dir and waits
 * until `/v2/` answers. `stop()` ends it and removes its storage.
 */
export async function startRegistry(opts: RegistryOptions = {}): Promise<RegistryServer> {
  const dir = await mkdtemp(join(tmpdir(), "ovms-registry-"));
  const port = await freePort();
  const auth = opts.auth ?? "none";
  const users = opts.users ?? {};
  let authYaml = "";
  let issuer: TokenIssuer | undefined;
  if (auth === "htpasswd") {
    const file = join(dir, "htpasswd");
    await writeFile(file, "");
    for (const [u, p] of Object.entries(users)) await appendFile(file, await run("htpasswd", ["-Bbn", u, p]));
    authYaml = `auth:\n  htpasswd:\n    realm: ovms-test\n    path: ${file}\n`;
  } else if (auth === "token") {
    // A self-signed certificate: the registry's root bundle, and the x5c chain of every token.
    await run(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-subj",
        "/CN=ovms-test-token-issuer",
      ],
      dir,
    );
    issuer = await startTokenIssuer({
      key: await readFile(join(dir, "key.pem"), "utf8"),
      cert: await readFile(join(dir, "cert.pem"), "utf8"),
      users,
      grants: opts.grants,
    });
    authYaml = `auth:\n  token:\n    realm: ${issuer.url}\n    service: ovms-test-registry\n    issuer: ovms-test-issuer\n    rootcertbundle: ${join(dir, "cert.pem")}\n`;
  }
  let tlsYaml = "";
  if (opts.tls) {
    await run(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "tls-key.pem",
        "-out",
        "tls-cert.pem",
        "-days",
        "2",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
      ],
      dir,
    );
    tlsYaml = `  tls:\n    certificate: ${join(dir, "tls-cert.pem")}\n    key: ${join(dir, "tls-key.pem")}\n`;
  }
  const config = `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${join(dir, "data")}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${port}
  secret: ovms-test-secret
${tlsYaml}${authYaml}`;
  await writeFile(join(dir, "config.yml"), config);
  const child: ChildProcess = spawn("docker-registry", ["serve", join(dir, "config.yml")], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited ${child.exitCode}: ${stderr}`);
    try {
      await new Promise<void>((resolve, reject) => {
        const sock = connect(port, "127.0.0.1", () => {
          sock.destroy();
          resolve();
        });
        sock.on("error", reject);
      });
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`docker-registry did not answer on ${port}: ${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  return {
    host: `127.0.0.1:${port}`,
    port,
    dir,
    issuer,
    caFile: opts.tls ? join(dir, "tls-cert.pem") : undefined,
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
        if (child.exitCode === null) child.kill("SIGKILL");
      }
      await issuer?.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** registry starts a registry for one test and stops it when the test ends. */
export async function registry(
  t: { after: (fn: () => Promise<void>) => void },
  opts: RegistryOptions = {},
): Promise<RegistryServer> {
  const r = await startRegistry(opts);
  t.after(() => r.stop());
  return r;
}

function b64url(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

/**
 * startTokenIssuer serves `GET /token?service=…&scope=…` (docker token spec): it checks basic
 * credentials against `users`, grants actions per `grants`, and returns an RS256 JWT with the
 * issuer's certificate in `x5c`, which the registry verifies against its root bundle.
 */
export async function startTokenIssuer(o: {
  key: string;
  cert: string;
  users: Record<string, string>;
  grants?: RegistryOptions["grants"];
}): Promise<TokenIssuer> {
  const der = new X509Certificate(o.cert).raw.toString("base64");
  const requests: TokenIssuer["requests"] = [];
  const grants = o.grants ?? ((user, _repo, asked) => (user ? asked : []));
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    let user: string | undefined;
    const h = req.headers.authorization;
    if (h?.startsWith("Basic ")) {
      const plain = Buffer.from(h.slice(6), "base64").toString("utf8");
      const i = plain.indexOf(":");
      const [u, p] = [plain.slice(0, i), plain.slice(i + 1)];
      if (o.users[u] === undefined || o.users[u] !== p) {
        res.writeHead(401, { "content-type": "application/json" });
        res.end(
          JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "invalid username or password" }] }),
        );
        return;
      }
      user = u;
    }
    const scopes = url.searchParams
      .getAll("scope")
      .flatMap((s) => s.split(" "))
      .filter(Boolean);
    requests.push({ user, scopes, service: url.searchParams.get("service") ?? undefined });
    const access = scopes
      .map((s) => {
        const [type, ...rest] = s.split(":");
        const actions = rest.pop()!.split(",");
        const name = rest.join(":");
        return { type, name, actions: type === "repository" ? grants(user, name, actions) : [] };
      })
      .filter((a) => a.actions.length > 0);
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: "RS256", typ: "JWT", x5c: [der] };
    const claims = {
      iss: "ovms-test-issuer",
      sub: user ?? "",
      aud: url.searchParams.get("service") ?? "",
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access,
    };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const signature = createSign("RSA-SHA256").update(signingInput).sign(o.key);
    const token = `${signingInput}.${b64url(signature)}`;
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() }),
    );
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/token`,
    requests,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
