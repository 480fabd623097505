import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../registry-server.js";
import { Api, ContractChecker } from "./openapi-check.js";
import { startDaemon, type DaemonProc } from "./harness.js";

// Requests a daemon must refuse, sent to a real ovmd: oversized bodies (declared and
// chunked), malformed JSON, the wrong token on TCP, and a caller who may not open the socket.
const checker = new ContractChecker();
let dir: string;
let d: DaemonProc;
let tcpPort: number;
const TOKEN = "t0ken-for-hostile-tests";

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-daemon-hostile-"));
  tcpPort = await freePort();
  d = await startDaemon(join(dir, "a"), checker, ["--listen", `127.0.0.1:${tcpPort}`, "--token", TOKEN]);
});

after(async () => {
  await d?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** raw sends one request on the daemon's socket with the body written as given. */
function raw(
  headers: Record<string, string | number>,
  body: (w: (b: Buffer) => boolean) => void,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath: d.socket,
        method: "POST",
        path: "/start",
        headers: { host: "localhost", "content-type": "application/json", ...headers },
      },
      (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on("error", reject);
    body((b) => req.write(b));
    req.end();
  });
}

test("an oversized body is refused with 400 before it is read (declared length) or as soon as it grows too large (chunked); the daemon lives on", async () => {
  let r = await raw({ "content-length": 64 << 20 }, () => undefined).catch((e: Error) => ({
    status: -1,
    text: e.message,
  }));
  assert.equal(r.status, 400, r.text);
  assert.match(JSON.parse(r.text).error.message, /larger than the limit of 16777216 bytes/);

  const chunk = Buffer.alloc(1 << 20, 0x20);
  r = await raw({ "transfer-encoding": "chunked" }, (w) => {
    for (let i = 0; i < 20; i++) w(chunk);
  }).catch((e: Error) => ({ status: -1, text: e.message }));
  // The answer may race the client's writes: a 400, or the connection closed under the writer.
  assert.ok(r.status === 400 || /EPIPE|ECONNRESET|socket hang up/.test(r.text), `${r.status} ${r.text}`);
  if (r.status === 400) assert.equal(JSON.parse(r.text).error.code, "BAD_REQUEST");
  assert.equal((await d.api.get("/version")).status, 200, "the daemon still answers");
});

test("malformed JSON bodies get a 400 that names the problem", async () => {
  for (const body of ["{not json", '{"manifest": "x",}', "\u0000\u0001", '{"manifest": 1e999999}']) {
    const r = await d.api.request("POST", "/start", undefined, { raw: body });
    assert.equal(r.status, 400, body);
    assert.equal(r.body.error.code, "BAD_REQUEST");
    assert.ok(r.body.error.details.problems.length > 0, body);
    assert.ok(r.body.error.details.problems[0].message.length > 5, body);
  }
});

test("TCP: no token, a wrong token, a token of the right length, a second Authorization scheme — all 401 before any route", async () => {
  const tcp = new Api({ host: "127.0.0.1", port: tcpPort }, checker);
  for (const authorization of [
    undefined,
    "Bearer nope",
    `Bearer ${TOKEN.replace(/.$/, "X")}`,
    `Basic ${Buffer.from(`x:${TOKEN}`).toString("base64")}`,
    `bearer ${TOKEN}`,
  ]) {
    const r = await tcp.request(
      "POST",
      "/start",
      { manifest: "x" },
      authorization ? { headers: { authorization } } : {},
    );
    assert.equal(r.status, 401, String(authorization));
    assert.equal(r.body.error.code, "UNAUTHORIZED");
  }
  assert.equal(
    (await tcp.request("GET", "/version", undefined, { headers: { authorization: `Bearer ${TOKEN}` } }))
      .status,
    200,
  );
});

test(
  "the socket is 0600 in a 0700 folder: another user cannot connect",
  { skip: process.getuid?.() !== 0 && "needs root to act as another user" },
  async () => {
    assert.equal((await stat(d.socket)).mode & 0o777, 0o600);
    assert.equal((await stat(join(d.socket, ".."))).mode & 0o777, 0o700);
    // As `nobody`, a plain connect to the socket is refused by the kernel (EACCES).
    const script = `const s=require("net").connect(${JSON.stringify(d.socket)});s.on("connect",()=>{console.log("CONNECTED");process.exit(0)});s.on("error",e=>{console.log(e.code);process.exit(0)})`;
    const r = spawnSync(process.execPath, ["-e", script], {
      uid: 65534,
      gid: 65534,
      encoding: "utf8",
      timeout: 20_000,
    });
    assert.equal(r.stdout.trim(), "EACCES", r.stderr);
  },
);
