import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { Readable } from "node:stream";
import { Agent, request, type Dispatcher } from "undici";
import { isOvmsError } from "../../src/core/errors.js";
import { Authorizer, type Credential } from "../../src/registry/auth.js";
import { AuthTransport } from "../../src/registry/auth-transport.js";
import { FakeTransport, answer, get } from "./fake-transport.js";

const REG = "r.example:5000";
const own = (url: URL) => url.host === REG;
const basicOf = (u: string, p: string) => `Basic ${Buffer.from(`${u}:${p}`).toString("base64")}`;

/** registry answers 401 with `challenge` unless the request carries `accept` as its Authorization. */
function registry(challenge: string, accept?: string): FakeTransport {
  return new FakeTransport((req) =>
    req.headers?.authorization === accept && accept
      ? answer(req.url, 200)
      : answer(
          req.url,
          401,
          { "www-authenticate": challenge },
          JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }),
        ),
  );
}

/** authorizer makes the Authorizer of REG; only bearer tokens need a real dispatcher. */
function authorizer(cred?: Credential, dispatcher: Dispatcher = {} as Dispatcher): Authorizer {
  return new Authorizer(
    REG,
    async () => cred,
    async () => ({ request, dispatcher }),
    "ovm/test",
  );
}

test("basic: a 401 with a challenge is answered once with the credentials, and they are sent from then on", async () => {
  const inner = registry('Basic realm="r"', basicOf("alice", "pw"));
  const t = new AuthTransport(inner, authorizer({ username: "alice", password: "pw" }), own);
  assert.equal((await t.send(get(`http://${REG}/v2/`))).statusCode, 200);
  assert.deepEqual(
    inner.requests.map((r) => r.headers?.authorization),
    [undefined, basicOf("alice", "pw")],
  );
  await t.send(get(`http://${REG}/v2/a/tags/list`));
  assert.equal(inner.requests.length, 3, "no second challenge");
  assert.equal(inner.requests[2].headers?.authorization, basicOf("alice", "pw"));
  assert.equal(
    await t.authorization({ url: new URL(`http://${REG}/v2/x`), scopes: [] }),
    basicOf("alice", "pw"),
  );
  assert.equal(await t.authorization({ url: new URL("http://cdn.example/x"), scopes: [] }), undefined);
});

test("a 401 that persists is retried once only, and the error says what to do", async () => {
  const wrong = registry('Basic realm="r"');
  const t = new AuthTransport(wrong, authorizer({ username: "alice", password: "bad" }), own);
  await assert.rejects(t.send(get(`http://${REG}/v2/`, { context: "login" })), (e) => {
    assert.ok(isOvmsError(e, "UNAUTHORIZED"));
    assert.match(
      (e as Error).message,
      /^login: GET ".*": 401 UNAUTHORIZED: authentication required \(the credentials were rejected\)$/,
    );
    return true;
  });
  assert.equal(wrong.requests.length, 2);

  const anonymous = registry('Basic realm="r"');
  await assert.rejects(
    new AuthTransport(anonymous, authorizer(undefined), own).send(get(`http://${REG}/v2/`)),
    /no credentials for r\.example:5000: run `ovm login r\.example:5000`/,
  );
  assert.equal(anonymous.requests.length, 1, "nothing to try again with");
});

test("credentials never go to another origin; a streamed body is not sent twice", async () => {
  const inner = registry('Basic realm="r"', basicOf("alice", "pw"));
  const t = new AuthTransport(inner, authorizer({ username: "alice", password: "pw" }), own);
  await t.send(get(`http://${REG}/v2/`));
  await assert.rejects(t.send(get("http://cdn.example/blob")), (e) => isOvmsError(e, "UNAUTHORIZED"));
  assert.equal(inner.requests[2].headers?.authorization, undefined);
  assert.equal(inner.requests.length, 3, "no challenge dance with a stranger");

  const fresh = registry('Basic realm="r"', basicOf("alice", "pw"));
  const upload = get(`http://${REG}/v2/a/blobs/uploads/x`, {
    method: "PATCH",
    body: Readable.from([Buffer.from("x")]),
    ok: [202],
  });
  await assert.rejects(
    new AuthTransport(fresh, authorizer({ username: "alice", password: "pw" }), own).send(upload),
    (e) => isOvmsError(e, "UNAUTHORIZED"),
  );
  assert.equal(fresh.requests.length, 1);
});

test("bearer: the challenge's realm gives a token for the request's scopes, sent on the retry", async (t) => {
  const asked: string[] = [];
  const server = createServer((req, res) => {
    const u = new URL(req.url ?? "/", "http://x");
    asked.push(
      `${u.searchParams.get("service")} ${u.searchParams.getAll("scope").join(" ")} ${req.headers.authorization ?? "-"}`,
    );
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ token: "tok-1", expires_in: 300 }));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const realm = `http://127.0.0.1:${(server.address() as { port: number }).port}/token`;
  const dispatcher = new Agent();
  t.after(() => dispatcher.close());
  const inner = registry(`Bearer realm="${realm}",service="reg",scope="repository:a:pull"`, "Bearer tok-1");
  const auth = new AuthTransport(inner, authorizer({ username: "bob", password: "pw" }, dispatcher), own);
  const res = await auth.send(get(`http://${REG}/v2/a/manifests/1`, { scopes: ["repository:a:pull,push"] }));
  assert.equal(res.statusCode, 200);
  assert.deepEqual(asked, [`reg repository:a:pull,push ${basicOf("bob", "pw")}`]);
  assert.deepEqual(
    inner.requests.map((r) => r.headers?.authorization),
    [undefined, "Bearer tok-1"],
  );
  // The token is cached for those scopes: the next request carries it from the start.
  await auth.send(get(`http://${REG}/v2/a/blobs/x`, { scopes: ["repository:a:pull,push"] }));
  assert.equal(asked.length, 1);
  assert.equal(inner.requests[2].headers?.authorization, "Bearer tok-1");
});
