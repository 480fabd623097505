import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { request } from "node:http";
import { join } from "node:path";
import { startRegistry, freePort, type RegistryServer } from "../registry-server.js";
import { Api, ContractChecker } from "./openapi-check.js";
import { answers, startDaemon, type DaemonProc } from "./harness.js";

// One real ovmd for the file (with a TCP listener), and a real registry for the pull path.
// Nothing here boots a guest: these are the answers given before any instance exists.
const checker = new ContractChecker();
let dir: string;
let d: DaemonProc;
let api: Api;
let registry: RegistryServer;
let tcpPort: number;
const TOKEN = "s3cret-token";

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-daemon-api-"));
  tcpPort = await freePort();
  [d, registry] = await Promise.all([
    startDaemon(join(dir, "a"), checker, ["--listen", `127.0.0.1:${tcpPort}`, "--token", TOKEN]),
    startRegistry(),
  ]);
  api = d.api;
});

after(async () => {
  await d?.stop();
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

const problems = (r: { body: { error: { details?: { problems?: { path: string }[] } } } }) =>
  (r.body.error.details?.problems ?? []).map((p) => p.path).sort();

test("GET /version names the daemon, the API and the VMM", async () => {
  const r = await api.get("/version");
  assert.equal(r.status, 200);
  assert.equal(r.body.name, "ovmd");
  assert.equal(r.body.api, "v0.1");
  assert.equal(r.body.runtime.name, "qemu");
  assert.match(r.body.runtime.version, /^\d+\.\d+/);
});

test("the socket is 0600 and lives under XDG_RUNTIME_DIR", async () => {
  const st = await stat(d.socket);
  assert.ok(st.isSocket());
  assert.equal(st.mode & 0o777, 0o600);
  assert.ok(d.socket.startsWith(join(d.dir, "run")));
});

test("--group makes the socket 0660 and owned by that group", async () => {
  const group = process.getuid?.() === 0 ? "daemon" : String(process.getgid?.());
  const g = await startDaemon(join(dir, "grp"), checker, ["--group", group]);
  try {
    const st = await stat(g.socket);
    assert.equal(st.mode & 0o777, 0o660);
    if (group === "daemon") assert.equal(st.gid, 1);
  } finally {
    await g.stop();
  }
});

test("bad request bodies are refused with 400 and every problem's JSON Pointer", async () => {
  let r = await api.post("/start", {});
  assert.equal(r.status, 400);
  assert.equal(r.body.error.code, "BAD_REQUEST");
  assert.deepEqual(problems(r), ["/manifest"]);

  r = await api.post("/start", {
    manifest: 7,
    overrides: { memory: 1024, cpus: 0, accel: "fast", name: "bad name!", bogus: true },
  });
  assert.equal(r.status, 400);
  assert.deepEqual(problems(r), [
    "/manifest",
    "/overrides/accel",
    "/overrides/bogus",
    "/overrides/cpus",
    "/overrides/memory",
    "/overrides/name",
  ]);

  r = await api.request("POST", "/start", undefined, { raw: "{not json" });
  assert.equal(r.status, 400);
  assert.deepEqual(problems(r), [""]);

  r = await api.request("POST", "/start", undefined);
  assert.equal(r.status, 400, "the body is required");

  r = await api.post("/stop", { instance_id: "x", timeout_ms: -1, force: "yes" });
  assert.equal(r.status, 400);
  assert.deepEqual(problems(r), ["/force", "/timeout_ms"]);

  r = await api.post("/inject", { instance_id: "x", content: { mmio: { offset: 0, encoding: "hex" } } });
  assert.equal(r.status, 400);
  assert.deepEqual(problems(r), ["/content/mmio/data", "/content/mmio/encoding"]);

  r = await api.post("/snapshot", { tag: "x:1" });
  assert.equal(r.status, 400);
  assert.deepEqual(problems(r), ["/instance_id"]);

  r = await api.get("/logs/x?tail=many&follow=maybe");
  assert.equal(r.status, 400);
  assert.deepEqual(problems(r), ["/query/follow", "/query/tail"]);

  r = await api.get("/instances?all=perhaps");
  assert.equal(r.status, 400);
});

test("an artifact that is nowhere is 404 ARTIFACT_NOT_FOUND; a malformed reference is 400 INVALID_REFERENCE", async () => {
  let r = await api.post("/start", { manifest: `${registry.host}/nope/vm:1.0` });
  assert.equal(r.status, 404);
  assert.equal(r.body.error.code, "ARTIFACT_NOT_FOUND");
  assert.match(r.body.error.message, /registry has no such artifact/);

  r = await api.post("/start", { manifest: `sha256:${"ab".repeat(32)}` });
  assert.equal(r.status, 404);
  assert.equal(r.body.error.code, "ARTIFACT_NOT_FOUND");

  r = await api.post("/start", { manifest: join(dir, "no-such-layout") });
  assert.equal(r.status, 404);
  assert.equal(r.body.error.code, "ARTIFACT_NOT_FOUND");

  r = await api.post("/start", { manifest: "Demo/VM::1" });
  assert.equal(r.status, 400);
  assert.equal(r.body.error.code, "INVALID_REFERENCE");
  assert.deepEqual((await api.get("/instances?all=1")).body.instances, [], "nothing was created");
});

test("a manifest that fails validation is 422 MANIFEST_INVALID with JSON Pointers", async () => {
  const file = join(dir, "manifest.json");
  await writeFile(
    file,
    JSON.stringify({
      schemaVersion: 1,
      mediaType: "application/vnd.ovms.manifest.v1+json",
      name: "demo/vm",
      version: "1.0",
      kernel: { ref: "sha256:nothex", args: "console=ttyS0" },
      diskLayers: [{ ref: `sha256:${"a".repeat(64)}`, format: "vhd", size: 1 }],
      surprise: true,
    }),
  );
  const r = await api.post("/start", { manifest: file });
  assert.equal(r.status, 422);
  assert.equal(r.body.error.code, "MANIFEST_INVALID");
  const paths = problems(r);
  for (const p of ["/kernel/ref", "/diskLayers/0/format", "/surprise"])
    assert.ok(paths.includes(p), `${p} in ${paths.join(", ")}`);

  // A folder that is not an OCI layout is not an artifact either.
  const r2 = await api.post("/start", { manifest: dir });
  assert.equal(r2.status, 422);
});

test("POST /snapshot of an unknown instance is 404 in the error shape", async () => {
  const r = await api.post("/snapshot", { instance_id: "web-1", tag: "127.0.0.1:5000/demo/vm:fast" });
  assert.equal(r.status, 404);
  assert.equal(r.body.error.code, "NOT_FOUND");
  assert.match(r.body.error.message, /web-1/);
});

test("an unknown instance is 404 NOT_FOUND everywhere", async () => {
  for (const r of [
    await api.get("/status/web-9"),
    await api.get("/logs/web-9"),
    await api.post("/stop", { instance_id: "web-9" }),
    await api.post("/inject", { instance_id: "web-9", content: { mmio: { data: "aGk=" } } }),
    await api.request("DELETE", "/instances/web-9"),
  ]) {
    assert.equal(r.status, 404);
    assert.equal(r.body.error.code, "NOT_FOUND");
  }
  const list = await api.get("/instances");
  assert.equal(list.status, 200);
  assert.deepEqual(list.body, { instances: [] });
});

test("a method a path does not take is 405 METHOD_NOT_ALLOWED, with an Allow header; an unknown path is 404", async () => {
  const raw = (method: string, path: string) =>
    new Promise<{ status: number; allow?: string; body: any }>((resolve, reject) => {
      const req = request({ socketPath: d.socket, method, path, headers: { host: "localhost" } }, (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c.toString()));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, allow: res.headers.allow, body: JSON.parse(text) }),
        );
      });
      req.on("error", reject);
      req.end();
    });
  const r = await raw("DELETE", "/version");
  assert.equal(r.status, 405);
  assert.equal(r.allow, "GET");
  assert.equal(r.body.error.code, "METHOD_NOT_ALLOWED");
  assert.match(r.body.error.message, /DELETE \/version: method not allowed \(allowed: GET\)/);
  const n = await raw("GET", "/nothing-here");
  assert.equal(n.status, 404);
  assert.equal(n.body.error.code, "NOT_FOUND");
});

test("the TCP listener answers only requests with the bearer token", async () => {
  const tcp = new Api({ host: "127.0.0.1", port: tcpPort }, checker);
  let r = await tcp.get("/version");
  assert.equal(r.status, 401);
  assert.equal(r.body.error.code, "UNAUTHORIZED");
  r = await tcp.request("GET", "/version", undefined, { headers: { authorization: "Bearer wrong" } });
  assert.equal(r.status, 401);
  r = await tcp.request("POST", "/start", {}, { headers: { authorization: `Bearer ${TOKEN}x` } });
  assert.equal(r.status, 401, "no route is reached without the token");
  const auth = { headers: { authorization: `Bearer ${TOKEN}` } };
  r = await tcp.request("GET", "/version", undefined, auth);
  assert.equal(r.status, 200);
  r = await tcp.request("POST", "/start", { manifest: "/etc/passwd" }, auth);
  assert.equal(r.status, 400, "a TCP client cannot make the daemon read a host path");
  assert.deepEqual(problems(r), ["/manifest"]);
  // The UNIX socket needs no token: its file mode is the access control.
  assert.equal((await api.get("/version")).status, 200);
});

test("--listen without a token is refused at start", async () => {
  await assert.rejects(
    startDaemon(join(dir, "notoken"), checker, ["--listen", "127.0.0.1:0"]),
    /--listen needs a token/,
  );
});

test("a second daemon never takes over a live socket; a stale one is replaced", async () => {
  const other = join(dir, "b");
  // Same socket as the running daemon, different store: refused.
  await assert.rejects(startDaemon(other, checker, ["--socket", d.socket]), /another daemon already answers/);
  assert.ok(await answers(d.socket), "the first daemon still answers");

  // A daemon killed with SIGKILL leaves its socket file; the next one removes it and listens.
  const c = await startDaemon(join(dir, "c"), checker);
  c.proc.kill("SIGKILL");
  await new Promise((r) => c.proc.once("exit", r));
  assert.ok((await stat(c.socket)).isSocket(), "the dead daemon's socket file is still there");
  const c2 = await startDaemon(join(dir, "c"), checker);
  assert.equal((await c2.api.get("/version")).status, 200);
  await c2.stop();
  await assert.rejects(stat(c2.socket), "SIGTERM removes the socket");
});
