import type { Dispatcher } from "undici";
import type { UndiciHttp } from "./undici-transport.js";
import { RegistryError, networkError, redactUrl, responseError } from "./registry-error.js";

/**
 * Registry authentication: anonymous, HTTP basic, and the bearer token flow of the docker
 * token specification (https://distribution.github.io/distribution/spec/auth/token/ and
 * …/auth/oauth/): a 401 carries `WWW-Authenticate: Bearer realm=…,service=…,scope=…`, the
 * client asks the realm for a token covering the scopes it needs and retries with it.
 */

/** Credential is what a user gave for one registry: a user and password, or an identity token. */
export interface Credential {
  username?: string;
  password?: string;
  /** OAuth2 refresh token (docker config `identitytoken`), exchanged at the realm for access tokens. */
  identityToken?: string;
  /** A bearer token to send as is (docker config `registrytoken`). */
  registryToken?: string;
}

/** CredentialProvider returns the credential for a registry host (e.g. `127.0.0.1:5000`), if any. */
export type CredentialProvider = (registry: string) => Promise<Credential | undefined>;

/** Challenge is one parsed `WWW-Authenticate` challenge: its scheme (lowercased) and parameters. */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * parseChallenges reads a `WWW-Authenticate` header (RFC 7235 §4.1): one or more challenges,
 * each a scheme followed by comma-separated `key=value` or `key="quoted, value"` parameters.
 */
export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  const text = Array.isArray(header) ? header.join(", ") : (header ?? "");
  const out: Challenge[] = [];
  let i = 0;
  const n = text.length;
  const skipWs = () => {
    while (i < n && (text[i] === " " || text[i] === "\t" || text[i] === ",")) i++;
  };
  const token = () => {
    const start = i;
    while (i < n && /[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(text[i])) i++;
    return text.slice(start, i);
  };
  while (i < n) {
    skipWs();
    const scheme = token();
    if (!scheme) {
      i++;
      continue;
    }
    const ch: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(ch);
    for (;;) {
      while (i < n && (text[i] === " " || text[i] === "\t")) i++;
      const save = i;
      const key = token();
      while (i < n && (text[i] === " " || text[i] === "\t")) i++;
      if (!key || text[i] !== "=") {
        // Not a parameter: the start of the next challenge (or token68 data we ignore).
        i = save;
        break;
      }
      i++;
      while (i < n && (text[i] === " " || text[i] === "\t")) i++;
      let value = "";
      if (text[i] === '"') {
        i++;
        while (i < n && text[i] !== '"') {
          if (text[i] === "\\" && i + 1 < n) i++;
          value += text[i++];
        }
        i++;
      } else {
        const start = i;
        while (i < n && text[i] !== "," && text[i] !== " ") i++;
        value = text.slice(start, i);
      }
      ch.params[key.toLowerCase()] = value;
      while (i < n && (text[i] === " " || text[i] === "\t")) i++;
      if (text[i] === ",") {
        i++;
        continue;
      }
      break;
    }
  }
  return out;
}

/** repositoryScope is the token scope for actions on a repository, e.g. `repository:demo/vm:pull,push`. */
export function repositoryScope(name: string, actions: string[]): string {
  return `repository:${name}:${actions.join(",")}`;
}

/**
 * mergeScopes unions scope strings, joining the actions asked for one resource:
 * `repository:a:pull` + `repository:a:push` = `repository:a:pull,push`. The result is sorted
 * so it can key a token cache.
 */
export function mergeScopes(scopes: string[]): string[] {
  const byResource = new Map<string, Set<string>>();
  for (const s of scopes) {
    for (const one of s.split(" ").filter(Boolean)) {
      const i = one.lastIndexOf(":");
      if (i < 0) continue;
      const resource = one.slice(0, i);
      const set = byResource.get(resource) ?? new Set<string>();
      for (const a of one
        .slice(i + 1)
        .split(",")
        .filter(Boolean))
        set.add(a);
      byResource.set(resource, set);
    }
  }
  return [...byResource.entries()].map(([r, a]) => `${r}:${[...a].sort().join(",")}`).sort();
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

/** AuthState is what an Authorizer learnt, in a form that crosses to a worker thread. */
export interface AuthState {
  scheme?: "basic" | "bearer";
  realm?: string;
  service?: string;
  credential?: Credential;
  tokens: [string, CachedToken][];
}

/**
 * Authorizer keeps the authentication state of one registry: the scheme it asked for, its
 * token realm, and the tokens obtained per set of scopes (refreshed before they expire).
 * `header` gives the Authorization header to send ahead of time, `challenged` learns from a
 * 401 and tells whether a retry with new credentials makes sense.
 */
export class Authorizer {
  private scheme?: "basic" | "bearer";
  private realm?: string;
  private service?: string;
  private credential?: Promise<Credential | undefined>;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly inflight = new Map<string, Promise<string>>();

  constructor(
    /** registry is the host (and port) credentials are stored under. */
    readonly registry: string,
    private readonly credentials: CredentialProvider,
    /** undici's request and the pool to send token requests through (loaded on first need). */
    private readonly http: () => Promise<UndiciHttp>,
    private readonly userAgent: string,
  ) {}

  private cred(): Promise<Credential | undefined> {
    this.credential ??= this.credentials(this.registry);
    return this.credential;
  }

  /** snapshot returns what this Authorizer knows (scheme, realm, credential, live tokens) for another thread. */
  async snapshot(): Promise<AuthState> {
    return {
      scheme: this.scheme,
      realm: this.realm,
      service: this.service,
      credential: await this.cred(),
      tokens: [...this.tokens.entries()].filter(([, t]) => t.expiresAt > Date.now() + 5_000),
    };
  }

  /** restore takes over a snapshot, so a worker sends the right Authorization from its first request. */
  restore(state: AuthState): void {
    this.scheme = state.scheme;
    this.realm = state.realm;
    this.service = state.service;
    this.credential = Promise.resolve(state.credential);
    for (const [k, t] of state.tokens) this.tokens.set(k, t);
  }

  /** anonymous tells whether no credential is known for the registry. */
  async anonymous(): Promise<boolean> {
    const c = await this.cred();
    return !c || (c.username === undefined && !c.identityToken && !c.registryToken);
  }

  /** header returns the Authorization header for a request needing `scopes`, or undefined (anonymous). */
  async header(scopes: string[]): Promise<string | undefined> {
    if (this.scheme === "basic") {
      const c = await this.cred();
      return c?.username !== undefined ? basic(c.username, c.password ?? "") : undefined;
    }
    if (this.scheme === "bearer") {
      const c = await this.cred();
      if (c?.registryToken) return `Bearer ${c.registryToken}`;
      return `Bearer ${await this.token(mergeScopes(scopes))}`;
    }
    return undefined;
  }

  /**
   * challenged learns the scheme from a 401's `WWW-Authenticate` and fetches what is needed;
   * it returns false when nothing new can be tried (no credentials, or they were just used).
   */
  async challenged(
    header: string | string[] | undefined,
    scopes: string[],
    sentAuthorization: boolean,
  ): Promise<boolean> {
    const challenges = parseChallenges(header);
    const bearer = challenges.find((c) => c.scheme === "bearer");
    const basicCh = challenges.find((c) => c.scheme === "basic");
    if (bearer?.params.realm) {
      this.scheme = "bearer";
      this.realm = bearer.params.realm;
      this.service = bearer.params.service;
      // Ask for what we need plus what the registry named (it may want more than we guessed).
      const want = mergeScopes([...scopes, ...(bearer.params.scope ? [bearer.params.scope] : [])]);
      this.tokens.set(mergeScopes(scopes).join(" "), await this.fetchToken(want));
      return true;
    }
    if (basicCh) {
      this.scheme = "basic";
      const c = await this.cred();
      // Credentials already sent and refused: trying them again would fail the same way.
      return c?.username !== undefined && !sentAuthorization;
    }
    return false;
  }

  private async token(scopes: string[]): Promise<string> {
    const key = scopes.join(" ");
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now() + 5_000) return cached.token;
    let p = this.inflight.get(key);
    if (!p) {
      p = this.fetchToken(scopes)
        .then((t) => {
          this.tokens.set(key, t);
          return t.token;
        })
        .finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  /**
   * fetchToken asks the realm for a token: GET with basic credentials (or none), or the OAuth2
   * refresh-token POST when the user holds an identity token.
   */
  private async fetchToken(scopes: string[]): Promise<CachedToken> {
    const realm = this.realm!;
    const c = await this.cred();
    const url = new URL(realm);
    let res: Dispatcher.ResponseData;
    const method = c?.identityToken ? "POST" : "GET";
    try {
      const { request, dispatcher } = await this.http();
      if (c?.identityToken) {
        const form = new URLSearchParams({
          grant_type: "refresh_token",
          refresh_token: c.identityToken,
          client_id: "ovm",
        });
        if (this.service) form.set("service", this.service);
        if (scopes.length) form.set("scope", scopes.join(" "));
        res = await request(url, {
          method,
          dispatcher,
          headers: { "content-type": "application/x-www-form-urlencoded", "user-agent": this.userAgent },
          body: form.toString(),
        });
      } else {
        if (this.service) url.searchParams.set("service", this.service);
        for (const s of scopes) url.searchParams.append("scope", s);
        const headers: Record<string, string> = { "user-agent": this.userAgent };
        if (c?.username !== undefined) headers.authorization = basic(c.username, c.password ?? "");
        res = await request(url, { method, dispatcher, headers });
      }
    } catch (e) {
      throw networkError(method, url, e);
    }
    const text = await res.body.text();
    if (res.statusCode !== 200) {
      const err = responseError(method, url, res.statusCode, text, `token for ${this.registry}`);
      if (res.statusCode === 401 || res.statusCode === 403) {
        throw new RegistryError(
          "UNAUTHORIZED",
          `${this.registry}: the token server ${redactUrl(realm)} refused ${c?.username !== undefined ? `the credentials of "${c.username}"` : "anonymous access"} (${res.statusCode}); run \`ovm login ${this.registry}\``,
          { method, url: redactUrl(url), status: res.statusCode, errors: err.errors },
        );
      }
      throw err;
    }
    let body: { token?: string; access_token?: string; expires_in?: number };
    try {
      body = JSON.parse(text);
    } catch {
      throw new RegistryError(
        "REGISTRY_ERROR",
        `${method} "${redactUrl(url)}": the token server answered something that is not JSON`,
      );
    }
    const token = body.access_token ?? body.token;
    if (!token)
      throw new RegistryError(
        "REGISTRY_ERROR",
        `${method} "${redactUrl(url)}": the token server sent no token`,
      );
    // The token spec's default lifetime is 60 s when expires_in is absent.
    const ttl = typeof body.expires_in === "number" && body.expires_in > 0 ? body.expires_in : 60;
    return { token, expiresAt: Date.now() + ttl * 1000 };
  }
}

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}
