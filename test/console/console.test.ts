import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import WebSocket from "ws";
import { Store } from "../../src/store/store.js";
import { spawn } from "node:child_process";
import { OVM, ROOT, buildDemo, ovm } from "../helpers.js";
import { ContractChecker, Api } from "../daemon/openapi-check.js";
import { startDaemon, waitFor, type DaemonProc } from "../daemon/harness.js";

// The web console (issue 12) in a real browser: Debian's Chromium driven by playwright-core,
// against a real ovmd started with --http and a token, booting the real demo guest
// (ovms.mode=console: a counter and a shell on the serial console) under QEMU. One daemon and
// one browser serve every test of the file; the tests run in order and share the instances.
// Screenshots of each page go to the test's folder (kept, and named in the output);
// OVMS_UPDATE_SCREENSHOTS=1 also writes the README's docs/img/console.png.

const TOKEN = "console-test-token";
const CHROMIUM = "/usr/bin/chromium";
const checker = new ContractChecker();
let dir: string;
let shots: string;
let d: DaemonProc;
let url: string;
let http: Api;
let ctx: BrowserContext;
let page: Page;
/** Where each instance of the flow lives, by name. */
const ids: Record<string, string> = {};

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-console-"));
  shots = join(dir, "screenshots");
  await mkdir(shots);
  // A signing key and a policy that trusts it, so the store page has a verified signature to show.
  const env = { OVM_KEY_PASSWORD: "console test" };
  const keys = join(dir, "keys");
  await mkdir(keys);
  let r = await ovm(["key", "generate", "-o", join(keys, "release")], env);
  assert.equal(r.code, 0, r.stderr);
  const policy = join(dir, "policy.json");
  await writeFile(
    policy,
    JSON.stringify({
      version: 1,
      keys: { release: { path: "keys/release.pub" } },
      default: { action: "accept" },
      ramSnapshots: "accept",
    }),
  );
  const store = join(dir, "d", "store");
  await buildDemo(await Store.open(store), "demo/vm:1.0", false);
  // The same guest with an ivshmem device (q35), for the instance page's inject form.
  await buildDemo(await Store.open(store), "demo/vm:shm", true);
  r = await ovm(["sign", "demo/vm:1.0", "--key", join(keys, "release.key")], { ...env, OVM_STORE: store });
  assert.equal(r.code, 0, r.stderr);
  d = await startDaemon(join(dir, "d"), checker, [
    "--http",
    "127.0.0.1:0",
    "--token",
    TOKEN,
    "--policy",
    policy,
  ]);
  const m = await waitFor(
    "the web console's address in the log",
    async () => /web console url=(http:\/\/[^ ]+\/)/.exec(d.output()) ?? undefined,
  );
  url = m[1];
  const { hostname, port } = new URL(url);
  http = new Api({ host: hostname, port: Number(port) }, checker);

  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run scripts/setup.sh (it installs chromium)`);
  ctx = await chromium.launchPersistentContext(join(dir, "profile"), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1280, height: 900 },
  });
  page = ctx.pages()[0] ?? (await ctx.newPage());
  page.setDefaultTimeout(60_000);
});

after(async () => {
  await ctx?.close().catch(() => undefined);
  for (const id of Object.values(ids))
    await d?.api.request("DELETE", `/instances/${id}?force=1`).catch(() => undefined);
  await d?.stop();
  // The screenshots are the test's artifacts: kept (about 1 MiB); the store, keys and daemon state go.
  for (const name of await readdir(dir).catch(() => [] as string[]))
    if (name !== "screenshots") await rm(join(dir, name), { recursive: true, force: true });
  console.log(`screenshots kept in ${shots}`);
});

/** shot saves a screenshot of the page as a test artifact (and, for the README's, into docs/img when asked). */
async function shot(name: string, readme = false): Promise<void> {
  const file = join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
  if (readme && process.env.OVMS_UPDATE_SCREENSHOTS === "1") {
    await mkdir(join(ROOT, "docs/img"), { recursive: true });
    await copyFile(file, join(ROOT, "docs/img/console.png"));
  }
}

/** nav follows a link of the console's navigation bar. */
function nav(name: string): Promise<void> {
  return page.getByRole("navigation", { name: "Pages" }).getByRole("link", { name, exact: true }).click();
}

/** terminalText is what the xterm.js terminal shows now (its DOM rows). */
function terminalText(): Promise<string> {
  return page.locator("#terminal .xterm-rows").innerText();
}

/** waitTerminal waits until the terminal shows a match of `re` and answers it. */
async function waitTerminal(re: RegExp, what: string, timeoutMs = 120_000): Promise<RegExpExecArray> {
  return waitFor(
    `${what} in the terminal`,
    async () => re.exec(await terminalText()) ?? undefined,
    timeoutMs,
  );
}

/** typeInTerminal types a line into the focused terminal, as a person at the keyboard would. */
async function typeInTerminal(text: string): Promise<void> {
  await page.locator("#terminal").click();
  await page.keyboard.type(text, { delay: 20 });
  await page.keyboard.press("Enter");
}

/**
 * unlabelled lists the page's controls a screen reader could not name: form fields without a
 * label (or aria-label), buttons and links without text. xterm.js's own hidden helper
 * textarea is left to xterm (it labels it itself).
 */
async function unlabelled(): Promise<string[]> {
  return page.evaluate(`[...document.querySelectorAll("input, select, textarea, button, a[href]")]
    .filter((el) => !el.closest(".xterm") && el.getClientRects().length > 0)
    .filter((el) => {
      if (el.getAttribute("aria-label")) return false;
      if (el.matches("input, select, textarea")) return !(el.labels && el.labels.length > 0);
      return !el.textContent.trim();
    })
    .map((el) => el.outerHTML.slice(0, 120))`) as Promise<string[]>;
}

/** assertAccessible checks the page for unnamed controls and a horizontal scroll bar (narrow windows). */
async function assertAccessible(what: string): Promise<void> {
  assert.deepEqual(await unlabelled(), [], `${what}: controls without an accessible name`);
  const overflow = await page.evaluate(`document.documentElement.scrollWidth - window.innerWidth`);
  assert.ok(Number(overflow) <= 1, `${what}: ${overflow} px wider than the window`);
}

/** counters are the OVMS-COUNTER numbers of an instance's serial log (through the API). */
async function counters(id: string): Promise<{ numbers: number[]; lines: string[] }> {
  const r = await d.api.get<{ line: string }[]>(`/logs/${id}`);
  const lines = r.body.map((x) => x.line);
  const numbers = lines.flatMap((l) => {
    const m = /OVMS-COUNTER: (\d+)/.exec(l);
    return m ? [Number(m[1])] : [];
  });
  return { numbers, lines };
}

test("without the token the API and the console WebSocket are refused; a wrong token is refused at the login form", async () => {
  // The page itself loads without a token (it holds no secret) and asks for one.
  await page.goto(url);
  await page.getByLabel("Token").waitFor();
  await assertAccessible("the login page");
  // Keyboard first: the token field has the focus, and the skip link comes first in tab order.
  assert.equal(await page.evaluate(`document.activeElement.id`), "token");
  await shot("login");
  // The page comes with a same-origin-only policy and cannot be framed; no file outside the build.
  const index = await fetch(url);
  assert.equal(index.status, 200);
  assert.match(
    index.headers.get("content-security-policy") ?? "",
    /default-src 'self'.*frame-ancestors 'none'/,
  );
  assert.equal(index.headers.get("x-frame-options"), "DENY");
  assert.equal((await fetch(`${url}ui/..%2F..%2Fpackage.json`)).status, 404);
  assert.equal(
    (await fetch(`${url}ui/app.js`)).headers.get("content-type"),
    "text/javascript; charset=utf-8",
  );
  const status = await page.evaluate(`fetch("/instances").then((r) => r.status)`);
  assert.equal(status, 401);
  let r = await http.get("/artifacts");
  assert.equal(r.status, 401);
  assert.equal(r.body.error.code, "UNAUTHORIZED");
  r = await http.request("GET", "/artifacts", undefined, { headers: { authorization: "Bearer wrong" } });
  assert.equal(r.status, 401);
  // A WebSocket without the bearer subprotocol, and one with a wrong token, never opens.
  for (const protocols of [
    ["ovms.console.v1"],
    ["ovms.console.v1", `ovms.bearer.${Buffer.from("nope").toString("base64url")}`],
  ]) {
    const refused = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(`${url.replace("http", "ws")}console/anything`, protocols);
      ws.on("open", () => reject(new Error("the console WebSocket opened without a valid token")));
      ws.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      ws.on("error", () => undefined);
    });
    assert.equal(refused, 401);
  }
  // The login form refuses a wrong token and says so.
  await page.getByLabel("Token").fill("not-the-token");
  await page.keyboard.press("Enter");
  await page.getByRole("alert").filter({ hasText: "refused" }).waitFor();
  assert.equal(await page.evaluate(`sessionStorage.getItem("ovms.token")`), null);
});

test("the store page lists the artifact with its layers and its verified signature; Run boots it and the terminal shows its console", async () => {
  // Keyboard only: the token field has the focus, Enter logs in.
  await page.getByLabel("Token").fill(TOKEN);
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Instances" }).waitFor();
  assert.equal(await page.evaluate(`sessionStorage.getItem("ovms.token")`), TOKEN);

  const list = await http.request("GET", "/artifacts", undefined, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  assert.equal(list.status, 200);
  const demo = list.body.artifacts.find(
    (a: { reference: string }) => a.reference === "docker.io/demo/vm:1.0",
  );
  assert.deepEqual(
    demo.layers.map((l: { role: string }) => l.role),
    ["kernel", "initrd", "disk", "disk"],
  );
  assert.equal(demo.signature.status, "verified");
  assert.equal(demo.signature.keys[0].name, "release");

  await nav("Store");
  const card = page.locator('article[data-reference="demo/vm:1.0"]');
  await card.waitFor();
  assert.match(await card.locator(".sig").innerText(), /^signed \(release sha256:/);
  await card.getByText("4 layers").click();
  await assertAccessible("the store page");
  await shot("store");

  // Keyboard only: Enter in the form's last field runs it, like the Run button.
  await card.getByLabel("Instance name").fill("web-1");
  await card.getByLabel("Extra kernel arguments").fill("ovms.mode=console");
  assert.equal(await card.getByRole("button", { name: "Run demo/vm:1.0" }).isEnabled(), true);
  await card.getByLabel("Extra kernel arguments").press("Enter");
  await page.waitForURL(/#\/instance\//);
  ids["web-1"] = decodeURIComponent(page.url().split("#/instance/")[1]);
  // The guest boots: its console lines appear in the terminal, live.
  await waitTerminal(/OVMS-COUNTER: \d+/, "the guest's counter");
  await page.locator('h1[data-state="running"]').waitFor();
});

test("a line typed into the terminal reaches the guest's serial input and the guest's shell answers", async () => {
  await waitTerminal(/ovms# /, "the guest shell's prompt");
  await typeInTerminal("echo typed-$((6*7))");
  // The tty echoes what was typed; only the shell evaluates it to 42.
  await waitTerminal(/^typed-42\s*$/m, "the shell's answer");
  // The same through the "send a line" form (the terminal's accessible twin).
  await page.getByLabel("Send a line").fill("echo sent-$((5*5))");
  await page.keyboard.press("Enter");
  await waitTerminal(/^sent-25\s*$/m, "the answer to the sent line");
  await assertAccessible("the instance page");
  await shot("instance", true);
});

test("the API types into the serial input too; GET /console without an upgrade and an unknown artifact are refused", async () => {
  const id = ids["web-1"];
  const typed = await d.api.post(`/console/${id}`, { data: "echo api-$((2+3))\r" });
  assert.equal(typed.status, 200);
  assert.equal(typed.body.bytes, 18);
  const b64 = await d.api.post(`/console/web-1`, {
    data: Buffer.from("echo b64-$((3*3))\r").toString("base64"),
    encoding: "base64",
  });
  assert.equal(b64.status, 200);
  await waitTerminal(/^api-5\s*$/m, "the answer to the API's line");
  await waitTerminal(/^b64-9\s*$/m, "the answer to the base64 line");
  // The log stream (what ovm logs reads) has the same answers: the serial log is one file.
  const lines = (await counters(id)).lines;
  assert.ok(
    lines.some((l) => /^api-5\s*$/.test(l)),
    lines.slice(-5).join("\n"),
  );

  const bad = await d.api.post(`/console/${id}`, { data: "!!!", encoding: "base64" });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.details.problems[0].path, "/data");
  const plain = await d.api.get(`/console/${id}`);
  assert.equal(plain.status, 400);
  assert.match(plain.body.error.message, /WebSocket/);
  const missing = await d.api.get(`/artifacts/${encodeURIComponent("demo/vm:nope")}`);
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error.code, "ARTIFACT_NOT_FOUND");
  const one = await d.api.get(`/artifacts/${encodeURIComponent("demo/vm:1.0")}`);
  assert.equal(one.status, 200);
  assert.equal(one.body.reference, "docker.io/demo/vm:1.0");
});

test("ovm attach: a line piped in reaches the guest's shell and its answer comes out; an unknown instance is refused", async () => {
  const child = spawn(process.execPath, [OVM, "attach", "web-1", "--tail", "0"], {
    env: { ...process.env, ...d.env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  try {
    // Typed only once attached: the answer must come from this line, not from the terminal's history.
    await new Promise((r) => setTimeout(r, 500));
    child.stdin.write("echo cli-$((4*4))\r");
    await waitFor(
      "the answer on ovm attach's stdout",
      async () => /^cli-16\s*$/m.exec(out) ?? undefined,
      60_000,
    );
  } finally {
    child.kill("SIGTERM");
    await exited;
  }
  const r = await ovm(["attach", "no-such-vm"], d.env);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /no-such-vm/);
});

test("snapshot as…, then Restore from the store page: the clone counts on from the snapshot and answers too", async () => {
  const before = (await counters(ids["web-1"])).numbers;
  assert.ok(before.length > 0);
  await page.getByLabel("Reference").fill("demo/vm:console-snap");
  await page.getByRole("button", { name: "Take snapshot" }).click();
  await page
    .getByRole("status")
    .filter({ hasText: "Snapshot stored as docker.io/demo/vm:console-snap" })
    .waitFor();
  assert.match(
    await page.getByRole("status").filter({ hasText: "Snapshot stored as" }).innerText(),
    /guest paused [\d.]+ ms, (background|live|copy)\)/,
    "the console says how long the guest was paused, and how",
  );

  await nav("Store");
  const card = page.locator('article[data-reference="demo/vm:console-snap"]');
  await card.waitFor();
  assert.match(await card.innerText(), /RAM snapshot/);
  assert.match(await card.locator(".sig").innerText(), /^unsigned$/);
  await card.getByLabel("Instance name").fill("web-2");
  await card.getByRole("button", { name: "Restore demo/vm:console-snap" }).click();
  await page.waitForURL(/#\/instance\//);
  ids["web-2"] = decodeURIComponent(page.url().split("#/instance/")[1]);
  assert.notEqual(ids["web-2"], ids["web-1"]);
  const m = await waitTerminal(/OVMS-COUNTER: (\d+)/, "the clone's counter");
  // A restore continues where the snapshot was taken: no boot, and the count goes on.
  assert.ok(
    Number(m[1]) >= before[before.length - 1],
    `the clone counted from ${m[1]}, the original was at ${before.at(-1)}`,
  );
  const clone = await counters(ids["web-2"]);
  assert.ok(
    !clone.lines.some((l) => /OVMS-READY|OVMS-INIT/.test(l)),
    "the clone booted instead of restoring",
  );
  assert.ok(clone.numbers[0] >= before[before.length - 1]);
  await typeInTerminal("echo clone-$((8*8))");
  await waitTerminal(/^clone-64\s*$/m, "the clone shell's answer");
  await shot("instance-restored");
});

test("the instances page shows both, live; the benchmark page draws the results; a narrow window still works", async () => {
  await nav("Instances");
  for (const name of ["web-1", "web-2"])
    await page.locator(`#instances tr[data-name="${name}"] .state-running`).waitFor();
  const row = await page.locator('#instances tr[data-name="web-2"]').innerText();
  assert.match(row, /demo\/vm:console-snap/);
  assert.match(row, /tcg|kvm/);
  await assertAccessible("the instances page");
  await shot("instances");

  await nav("Benchmarks");
  await page.locator('figure[data-kind="restore"] canvas').waitFor();
  const kinds = await page
    .locator("figure.chart")
    .evaluateAll((fs) => fs.map((f) => f.getAttribute("data-kind")));
  assert.ok(kinds.includes("restore") && kinds.includes("pull"), `charts drawn: ${kinds.join(", ")}`);
  assert.match(
    (await page.locator('figure[data-kind="restore"] canvas').getAttribute("aria-label")) ?? "",
    /warm pool/,
  );
  await assertAccessible("the benchmark page");
  await shot("bench");

  // A phone-sized window: no page scrolls sideways, and the terminal fits itself to the width.
  await page.setViewportSize({ width: 390, height: 844 });
  await nav("Store");
  await page.locator('article[data-reference="demo/vm:1.0"]').waitFor();
  await assertAccessible("the store page at 390 px");
  await shot("store-narrow");
  await nav("Instances");
  await page.locator('#instances tr[data-name="web-1"]').waitFor();
  await assertAccessible("the instances page at 390 px");
  await page.locator('#instances tr[data-name="web-1"] a').click();
  await page.locator('h1[data-state="running"]').waitFor();
  await waitTerminal(/OVMS-COUNTER: \d+/, "the counter in a narrow terminal");
  await assertAccessible("the instance page at 390 px");
  const termWidth = await page
    .locator("#terminal .xterm-screen")
    .evaluate((e) => e.getBoundingClientRect().width);
  assert.ok(termWidth <= 390, `the terminal is ${termWidth} px wide in a 390 px window`);
  await shot("instance-narrow");
  await page.setViewportSize({ width: 1280, height: 900 });
});

test("inject into an ivshmem device from the instance page: text, then a file; the guest reads it; Stop and Remove", async () => {
  await nav("Store");
  const card = page.locator('article[data-reference="demo/vm:shm"]');
  await card.getByLabel("Instance name").fill("web-3");
  await card.getByLabel("Extra kernel arguments").fill("ovms.mode=ivshmem");
  await card.getByRole("button", { name: "Run demo/vm:shm" }).click();
  await page.waitForURL(/#\/instance\//);
  ids["web-3"] = decodeURIComponent(page.url().split("#/instance/")[1]);
  await waitTerminal(/OVMS-IVSHMEM: ready/, "the guest's ivshmem loop", 180_000);
  await page.locator('h1[data-state="running"]').waitFor();
  // The demo's protocol: the text at offset 4, then its length (32-bit little-endian) at 0.
  const text = "hello from the browser";
  const form = page.getByRole("form", { name: "Inject into an ivshmem device" });
  assert.equal(await form.getByLabel("Device").inputValue(), "shm0");
  await form.getByLabel("Text (or choose a file)").fill(text);
  await form.getByLabel("Offset (bytes)").fill("4");
  await form.getByRole("button", { name: "Inject" }).click();
  await page
    .getByRole("status")
    .filter({ hasText: `Injected ${text.length} bytes into shm0` })
    .waitFor();
  const count = Buffer.alloc(4);
  count.writeUInt32LE(text.length);
  await form.getByLabel("Text (or choose a file)").fill("");
  await form
    .getByLabel("File", { exact: true })
    .setInputFiles({ name: "count.bin", mimeType: "application/octet-stream", buffer: count });
  await form.getByLabel("Offset (bytes)").fill("0");
  await form.getByRole("button", { name: "Inject" }).click();
  await page.getByRole("status").filter({ hasText: "Injected 4 bytes into shm0" }).waitFor();
  await waitTerminal(new RegExp(`OVMS-INJECT: ${text}`), "the guest reading the injected text");
  await assertAccessible("the instance page with an ivshmem device");
  await shot("instance-inject");

  await page.getByRole("button", { name: "Stop" }).click();
  await page.locator('h1[data-state="exited"]').waitFor({ timeout: 90_000 });
  await page.getByRole("button", { name: "Remove" }).click();
  await page.waitForURL(/#\/instances$/);
  const gone = await d.api.get(`/status/${ids["web-3"]}`);
  assert.equal(gone.status, 404);
  delete ids["web-3"];
});

test("Stop on each instance page stops it; typing into a stopped instance is refused with CONFLICT", async () => {
  for (const name of ["web-2", "web-1"]) {
    await page.goto(`${url}#/instance/${ids[name]}`);
    await page.locator('h1[data-state="running"]').waitFor();
    await page.getByRole("button", { name: "Stop" }).click();
    await page.locator('h1[data-state="exited"]').waitFor({ timeout: 90_000 });
    await page.getByText("The instance has ended.").waitFor();
  }
  const r = await d.api.post(`/console/${ids["web-1"]}`, { data: "echo too late\r" });
  assert.equal(r.status, 409);
  assert.equal(r.body.error.code, "CONFLICT");
  // Attaching to an ended instance shows the end of its console and returns at once, status 0.
  const a = await ovm(["attach", "web-1"], d.env);
  assert.equal(a.code, 0, a.stderr);
  assert.match(a.stdout, /cli-16/);
  await shot("instance-stopped");
});
