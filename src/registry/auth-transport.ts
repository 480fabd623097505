import { mergeScopes, parseChallenges, type Authorizer } from "./auth.js";
import { RegistryError, responseError } from "./registry-error.js";
import {
  isReplayable,
  readText,
  type Transport,
  type TransportRequest,
  type TransportResponse,
} from "./transport.js";

/**
 * AuthTransport authenticates the requests of one registry with its Authorizer: it sends the
 * Authorization the registry is known to want, and on a 401 learns the challenge (basic, or a
 * bearer token for the request's scopes) and sends the request once more. Credentials go only
 * to the registry's own origin, never to where a redirect leads. A 401 it cannot get past is
 * an error that says what to do about it (log in, or which scope the credentials lack).
 */
export class AuthTransport implements Transport {
  constructor(
    private readonly inner: Transport,
    private readonly auth: Authorizer,
    /** isRegistryOrigin tells whether a URL is the registry's own (the one credentials are for). */
    private readonly isRegistryOrigin: (url: URL) => boolean,
  ) {}

  /**
   * authorization is the Authorization header a request would be sent with, if any: for the
   * fast path, which sends its GET around the stack (a 401 makes it hand over to `send`).
   */
  async authorization(req: Pick<TransportRequest, "url" | "scopes">): Promise<string | undefined> {
    return this.isRegistryOrigin(req.url) ? this.auth.header(req.scopes) : undefined;
  }

  async send(req: TransportRequest): Promise<TransportResponse> {
    const own = this.isRegistryOrigin(req.url);
    let authorization = own ? await this.auth.header(req.scopes) : undefined;
    let res = await this.inner.send(withAuthorization(req, authorization));
    if (res.statusCode !== 401 || req.ok.includes(401)) return res;
    let challenge = res.headers["www-authenticate"];
    if (own && isReplayable(req)) {
      await res.body.dump();
      if (!(await this.auth.challenged(challenge, req.scopes, !!authorization)))
        throw await this.unauthorized(req, res, "", authorization, challenge);
      authorization = await this.auth.header(req.scopes);
      res = await this.inner.send(withAuthorization(req, authorization));
      if (res.statusCode !== 401) return res;
      challenge = res.headers["www-authenticate"];
    }
    const text = req.method === "HEAD" ? "" : await readText(res);
    throw await this.unauthorized(req, res, text, authorization, challenge);
  }

  /** unauthorized is the error of a 401, with a note on what to do about it. */
  private async unauthorized(
    req: TransportRequest,
    res: TransportResponse,
    text: string,
    authorization: string | undefined,
    challenge: string | string[] | undefined,
  ): Promise<RegistryError> {
    const bearer = parseChallenges(challenge).find((c) => c.scheme === "bearer");
    let note: string;
    if (!authorization || (await this.auth.anonymous()))
      note = `no credentials for ${this.auth.registry}: run \`ovm login ${this.auth.registry}\``;
    else if (bearer?.params.error === "insufficient_scope")
      note = `the credentials do not grant ${mergeScopes([bearer.params.scope ?? req.scopes.join(" ")]).join(" ")}`;
    else note = "the credentials were rejected";
    return responseError(req.method, res.url, 401, text, req.context, note);
  }
}

function withAuthorization(req: TransportRequest, authorization: string | undefined): TransportRequest {
  if (!authorization) return req;
  return { ...req, headers: { ...(req.headers ?? {}), authorization } };
}
