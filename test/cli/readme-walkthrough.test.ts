import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OVM, ROOT, demoAssets, ovm } from "../helpers.js";
import { freePort, startRegistry, type RegistryServer } from "../registry-server.js";
import { daemonStateDir } from "../../src/store/paths.js";
import { waitFor } from "../daemon/harness.js";

// The README's walkthrough (section "The `ovm` command"), run command by command so that it
// cannot drift (issue 14, item 8): its fenced `sh` blocks, in a temporary store, against the
// daemon `ovm run` starts for that store and a real registry. Substituted: the registry host
// (127.0.0.1:5000), the host ports of -p (free ones), the demo VM's files for the names the
// README uses. Skipped: lines marked `(illustrative)` and blocks fenced `sh illustrative`.

/** Step is one command line of the walkthrough, as the README writes it. */
interface Step {
  line: string;
  /** lineNo is where it starts in README.md (1-based), for messages. */
  lineNo: number;
}

/** walkthrough reads the runnable steps of the README's "The `ovm` command" section. */
function walkthrough(readme: string): Step[] {
  const lines = readme.split("\n");
  const start = lines.findIndex((l) => l.startsWith("## The `ovm` command"));
  const end = lines.findIndex((l, i) => i > start && l.startsWith("## "));
  assert.ok(start >= 0 && end > start, "README has a section '## The `ovm` command'");
  const steps: Step[] = [];
  let inBlock: "run" | "skip" | undefined;
  for (let i = start; i < end; i++) {
    const l = lines[i];
    if (!inBlock) {
      const m = /^```(\S*)(.*)$/.exec(l);
      if (m) inBlock = m[1] === "sh" && !/\billustrative\b/.test(m[2]) ? "run" : "skip";
      continue;
    }
    if (l.startsWith("```")) {
      inBlock = undefined;
      continue;
    }
    if (inBlock === "skip" || !l.trim()) continue;
    // A backslash continues the command on the next line.
    let line = l;
    const lineNo = i + 1;
    while (line.endsWith("\\") && i + 1 < end) line = `${line.slice(0, -1)} ${lines[++i].trim()}`;
    if (/#.*\(illustrative\)\s*$/.test(line)) continue;
    steps.push({ line, lineNo });
  }
  return steps;
}

let dir: string;
let cwd: string;
let reg: RegistryServer;
let env: Record<string, string>;
const ports: Record<string, number> = {};

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-readme-"));
  await chmod(dir, 0o755); // as root, QEMU runs as nobody and must reach what it maps
  cwd = join(dir, "work");
  const bin = join(dir, "bin");
  const run = join(dir, "run");
  await mkdir(cwd);
  await mkdir(bin);
  await mkdir(run, { mode: 0o700 });
  reg = await startRegistry();
  // `ovm` on PATH is this checkout's CLI.
  await writeFile(join(bin, "ovm"), `#!/bin/sh\nexec "${process.execPath}" "${OVM}" "$@"\n`, { mode: 0o755 });
  const a = demoAssets();
  // Copies, not symbolic links: `ovm build` packs a disk given as a link as the link itself.
  for (const [name, path] of [
    ["vmlinuz", a.kernel],
    ["initrd.img", a.initrd],
    ["base.qcow2", a.base],
    ["diff.qcow2", a.diff],
  ])
    await copyFile(path, join(cwd, name));
  await symlink(join(ROOT, "examples"), join(cwd, "examples"));
  // The files the README's commands name without showing them.
  await writeFile(
    join(cwd, "ovm.yaml"),
    [
      "name: example/vm",
      'version: "plain"',
      "kernel: { path: vmlinuz, args: console=ttyS0 }",
      "initrd: { path: initrd.img }",
      "disks: [{ path: base.qcow2 }, { path: diff.qcow2, format: qcow2 }]",
      "resources: { memory: 256M, vcpus: 1 }",
      "",
    ].join("\n"),
  );
  await writeFile(join(cwd, "message.bin"), "hello from the README\n");
  await writeFile(
    join(cwd, "policy.json"),
    JSON.stringify({
      version: 1,
      keys: { release: { path: join(cwd, "release.pub") } },
      scopes: [{ match: `${reg.host}/**`, action: "requireSigned", keys: ["release"] }],
      default: { action: "reject" },
    }),
  );
  for (const p of ["8080", "8081"]) ports[p] = await freePort();
  env = {
    PATH: `${bin}:${process.env.PATH}`,
    OVM_STORE: join(dir, "store"),
    XDG_RUNTIME_DIR: run,
    OVMD_SOCKET: "",
    // The reader's passphrase for `ovm key generate` and `ovm sign` (else asked on a terminal).
    OVM_KEY_PASSWORD: "walkthrough",
  };
});

after(async () => {
  const ids =
    (await ovm(["ps", "-aq"], env).catch(() => undefined))?.stdout.split("\n").filter(Boolean) ?? [];
  if (ids.length) await ovm(["rm", "-f", ...ids], env).catch(() => undefined);
  const pid = Number(
    (await readFile(join(daemonStateDir(env.OVM_STORE), "ovmd.pid"), "utf8").catch(() => "")).trim(),
  );
  if (pid) {
    process.kill(pid, "SIGTERM");
    await waitFor("ovmd to exit", async () => (alive(pid) ? undefined : true), 15_000).catch(() =>
      process.kill(pid, "SIGKILL"),
    );
  }
  await reg?.stop();
  await rm(dir, { recursive: true, force: true });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** substitute puts the test's registry and free ports where the README names its own. */
function substitute(line: string): string {
  return line
    .replaceAll("127.0.0.1:5000", reg.host)
    .replace(/-p (8080|8081):/g, (_m, p: string) => `-p ${ports[p]}:`);
}

/** sh runs one walkthrough line in the walkthrough's folder, as a shell would. */
function sh(line: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn("sh", ["-c", line], { cwd, env: { ...process.env, ...env } });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    p.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    p.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** booted waits until an instance's console has spoken (a snapshot of a guest still in its firmware is not what the README means). */
async function booted(name: string): Promise<void> {
  await waitFor(
    `${name} to boot`,
    async () => {
      const r = await ovm(["--json", "status", name], env);
      if (r.code !== 0) return undefined;
      const s = JSON.parse(r.stdout) as { state: string };
      if (s.state === "failed" || s.state === "exited") throw new Error(`${name} ${s.state}: ${r.stdout}`);
      if (s.state !== "running") return undefined;
      const logs = await ovm(["logs", name], env);
      return logs.stdout.trim().length > 0 ? true : undefined;
    },
    180_000,
  );
}

test("the README's walkthrough parses into the steps it shows, illustrative ones left out", async () => {
  const steps = walkthrough(await readFile(join(ROOT, "README.md"), "utf8"));
  const text = steps.map((s) => s.line);
  assert.ok(
    text.some(
      (l) => l.startsWith("ovm build -t example/vm:1.0 --kernel vmlinuz") && l.includes("--memory 256M"),
    ),
  );
  assert.ok(text.some((l) => l.startsWith("ovm snapshot ")));
  assert.ok(text.some((l) => l.startsWith("skopeo copy ")));
  assert.ok(!text.some((l) => l.startsWith("ovm serve")), "illustrative");
  assert.ok(!text.some((l) => l.startsWith("ovm convert")), "a block fenced `sh illustrative`");
  assert.ok(!text.some((l) => l.startsWith("npm ")), "the quickstart is another section");
});

test("the README's walkthrough runs, command by command", async () => {
  const steps = walkthrough(await readFile(join(ROOT, "README.md"), "utf8"));
  for (const step of steps) {
    const line = substitute(step.line);
    // A snapshot is of a guest that runs (the README's reader types it later than a script does).
    const snap = /^ovm snapshot (\S+)/.exec(line);
    if (snap) await booted(snap[1]);
    const r = await sh(line);
    assert.equal(
      r.code,
      0,
      `README.md:${step.lineNo}: ${line}\nexit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`,
    );
  }
  // What the walkthrough left: the artifacts it made and nothing running.
  const ls = await ovm(["ls", "-q"], env);
  for (const ref of ["example/vm:1.0", "example/vm:plain", "example/vm:fast"])
    assert.match(ls.stdout, new RegExp(`^(docker\\.io/)?${ref.replace(/[.:/]/g, "\\$&")}$`, "m"));
  assert.doesNotMatch(ls.stdout, /example\/vm:old/, "rmi untagged it");
  assert.equal((await ovm(["ps", "-aq"], env)).stdout, "", "ovm rm $(ovm ps -aq) removed every instance");
});

// Issue 14 item 8: the README's walkthrough above snapshots `web`, a guest with an IVSHMEM
// device; this one also injects into it first and restores a clone of it.
test("a guest with an IVSHMEM device (the README's `web`) snapshots and restores", async () => {
  const r = await sh(
    `ovm run -d --name shm --network user example/vm:1.0 && ovm inject shm --file message.bin`,
  );
  assert.equal(r.code, 0, r.stderr);
  await booted("shm");
  const snap = await sh("ovm snapshot shm -t example/vm:shm-fast");
  assert.equal(snap.code, 0, snap.stderr);
  const clone = await sh("ovm run -d --name shm-clone example/vm:shm-fast");
  assert.equal(clone.code, 0, clone.stderr);
  await ovm(["rm", "-f", "shm", "shm-clone"], env);
});
