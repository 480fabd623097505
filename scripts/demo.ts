/**
 * The demo (`npm run demo`): the main job of OVMS on the embedded default artifact, with the
 * real `ovm` CLI: build the demo VM → validate and inspect → push to a local registry →
 * pull into a fresh store → run it (the guest proves it booted from the layered disk) →
 * snapshot it → push/pull the snapshot → restore it (the guest's counter goes on) → stop;
 * then the container path: a busybox image built here is pushed to the registry, converted
 * into a VM (`ovm convert`) and run like `docker run` (its output, its exit status, a command
 * override); and a timing summary. Everything runs in a temp folder that is removed at the end.
 */
import { execFile, execFileSync, spawn } from "node:child_process";
import { chmod, mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startRegistry, type RegistryServer } from "../test/registry-server.js";
import { baseLayer, topLayer, writeImageLayout } from "../test/convert/image-fixture.js";
import { DEMO_CMDLINE } from "./demo-guest.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const OVM = join(ROOT, "dist/src/cli/ovm.js");
// The demo VM's parts, built once by scripts/demo-assets.sh, which prints their folder last.
const ASSETS = execFileSync("bash", [join(ROOT, "scripts/demo-assets.sh")], { encoding: "utf8" })
  .trim()
  .split("\n")
  .pop()!;
const CMDLINE = DEMO_CMDLINE;

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const timings: [string, number][] = [];

/** ovm runs one CLI command as a user would, echoing it, and returns its stdout (`status`: any exit is fine). */
function ovm(
  args: string[],
  env: Record<string, string>,
  opts: { show?: boolean; status?: (code: number | null) => void } = {},
): Promise<string> {
  const shown = `ovm ${args.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(" ")}`;
  process.stdout.write(`\n$ ${bold(shown)}\n`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [OVM, ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (opts.show !== false) process.stdout.write(d);
    });
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
      if (opts.show !== false) process.stderr.write(d);
    });
    child.on("exit", (code) => {
      opts.status?.(code);
      if (code === 0 || opts.status) resolve(out);
      else reject(new Error(`${shown} exited ${code}: ${err.trim()}`));
    });
  });
}

/** exec runs a host tool and resolves with its stdout. */
function exec(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, (e, out, err) =>
      e ? reject(new Error(`${cmd}: ${err || e.message}`)) : resolve(out),
    ),
  );
}

async function step<T>(title: string, fn: () => Promise<T>): Promise<T> {
  process.stdout.write(`\n${bold(`== ${title}`)}\n`);
  const t0 = performance.now();
  const r = await fn();
  timings.push([title, performance.now() - t0]);
  return r;
}

/** waitLog follows an instance's serial log until a line matches, and returns the lines seen. */
async function waitLog(
  id: string,
  re: RegExp,
  env: Record<string, string>,
  timeoutMs = 120_000,
): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const lines = (await ovm(["logs", id], env, { show: false })).split("\n");
    if (lines.some((l) => re.test(l))) return lines;
    if (Date.now() > deadline) throw new Error(`guest ${id} printed no line matching ${re}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** showState fetches the guest's /cgi-bin/state through the host port its instance got, and prints it. */
async function showState(id: string, env: Record<string, string>): Promise<void> {
  const info = JSON.parse(await ovm(["--json", "status", id], env, { show: false }));
  const p = info.network.ports[0];
  const url = `http://${p.host_ip}:${p.host_port}/cgi-bin/state`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const r = await fetch(url);
      process.stdout.write(`\n$ ${bold(`curl ${url}`)}\n${await r.text()}`);
      return;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`${url}: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "ovms-demo-"));
  await chmod(dir, 0o755); // QEMU drops to `nobody` when the daemon runs as root
  const runtimeDir = join(dir, "run");
  const builder = { OVM_STORE: join(dir, "build-store"), XDG_RUNTIME_DIR: runtimeDir };
  const user = { OVM_STORE: join(dir, "pulled-store"), XDG_RUNTIME_DIR: runtimeDir };
  let registry: RegistryServer | undefined;
  try {
    await step(
      "build the demo VM artifact (Debian cloud kernel, busybox initrd, ext4 base + qcow2 diff)",
      () =>
        ovm(
          [
            "build",
            "-t",
            "demo/vm:1.0",
            "--kernel",
            join(ASSETS, "vmlinuz"),
            "--initrd",
            join(ASSETS, "initrd.img"),
            "--disk",
            join(ASSETS, "base.qcow2"),
            "--disk",
            `${join(ASSETS, "diff.qcow2")}:qcow2`,
            "--cmdline",
            CMDLINE,
            "--memory",
            "192M",
            "--cpus",
            "1",
          ],
          builder,
        ),
    );
    await step("validate the example manifests", async () => {
      const files = (await readdir(join(ROOT, "examples")))
        .filter((f) => f.endsWith(".json"))
        .map((f) => join(ROOT, "examples", f));
      return ovm(["validate", ...files], builder);
    });
    await step("inspect it", () => ovm(["inspect", "demo/vm:1.0"], builder));

    registry = await startRegistry();
    const ref = `${registry.host}/demo/vm:1.0`;
    process.stdout.write(`\nlocal registry (docker-registry ${"2.8"}) on ${registry.host}\n`);
    await step("push it to the registry", async () => {
      await ovm(["tag", "demo/vm:1.0", ref], builder);
      return ovm(["push", ref], builder);
    });
    await step("pull it into a fresh store", () => ovm(["pull", ref], user));
    await step("inspect the pulled copy", () => ovm(["ls"], user));

    // httpd: the guest counts, and serves its state over HTTP on a published port (-p 80: a free host port).
    const id = await step(
      "run it with guest port 80 published (ovm starts ovmd in the background)",
      async () =>
        (
          await ovm(["run", "-d", "--name", "demo", "--cmdline", "ovms.mode=httpd", "-p", "80", ref], user)
        ).trim(),
    );
    const lines = await step("the guest boots from the layered disk", () =>
      waitLog(id, /^OVMS-COUNTER: 3$/, user),
    );
    process.stdout.write(
      lines
        .filter((l) => /^OVMS-/.test(l))
        .slice(0, 8)
        .map((l) => `  guest| ${l}`)
        .join("\n") + "\n",
    );
    if (!lines.includes("OVMS-LAYER: hello from the diff layer"))
      throw new Error("the guest did not see the diff layer");
    await ovm(["status", id], user);
    await step("the guest answers HTTP on its published port", () => showState(id, user));

    const snapRef = `${registry.host}/demo/vm:fast`;
    await step("snapshot the running VM (RAM + disk) as a new artifact", () =>
      ovm(["snapshot", id, "-t", snapRef], user),
    );
    await step("push the snapshot", () => ovm(["push", snapRef], user));
    await step("stop the original", () => ovm(["stop", id], user));

    const restored = await step("restore the snapshot (a copy-on-write clone, no boot)", async () =>
      (await ovm(["run", "-d", "--name", "demo-restored", "-p", "80", snapRef], user)).trim(),
    );
    const after = await step("the restored guest goes on counting where it was", () =>
      waitLog(restored, /^OVMS-COUNTER: \d+$/, user),
    );
    const first = after.find((l) => /^OVMS-COUNTER:/.test(l));
    process.stdout.write(
      `  guest| ${first}  (the original had counted past 3 when it was snapshotted; a cold boot starts at 0)\n`,
    );
    const status = JSON.parse(await ovm(["--json", "status", restored], user, { show: false }));
    process.stdout.write(`  restore: ${status.metrics.start_ms} ms from the start request to running\n`);
    await step(
      "the restored clone answers on a port of its own, its hit count going on from the original's",
      () => showState(restored, user),
    );
    await ovm(["stop", restored], user);
    await ovm(["ps", "-a"], user);

    // The container path: an OCI image (busybox in two layers, the second whiting out a file
    // of the first) pushed to the registry, converted to a VM and run like `docker run`.
    const image = `${registry.host}/demo/app:1.0`;
    await step(
      "build a container image (busybox, two layers, a whiteout) and push it with skopeo",
      async () => {
        const layout = join(dir, "app-image");
        await writeImageLayout(layout, "1.0", [baseLayer(), topLayer()], {
          Env: ["PATH=/bin", "GREETING=hello from a container image"],
          Cmd: [
            "sh",
            "-c",
            'echo "$GREETING, running as $(id -un) in $(pwd)"; test -e /etc/removed || echo "/etc/removed is whited out"; exit 3',
          ],
          WorkingDir: "/home/app",
          User: "app",
          ExposedPorts: { "8080/tcp": {} },
        });
        await exec("skopeo", [
          "copy",
          "-q",
          "--dest-tls-verify=false",
          `oci:${layout}:1.0`,
          `docker://${image}`,
        ]);
        process.stdout.write(`  pushed ${image}\n`);
      },
    );
    await step("convert the image into a VM (ext4 root, generic kernel, OVMS-Init)", () =>
      ovm(["convert", image, "-t", "demo/app:vm"], user),
    );
    await step("inspect it: entrypoint, cmd, env, user, exposed ports", () =>
      ovm(["inspect", "demo/app:vm"], user),
    );
    let code: number | null = null;
    await step("run it like docker run: the program's output, and its exit status as ovm's", () =>
      ovm(["run", "--rm", "demo/app:vm"], user, { status: (c) => (code = c) }),
    );
    process.stdout.write(`  ovm run exited with status ${code} (the program's exit 3)\n`);
    if (code !== 3) throw new Error(`ovm run exited ${code}, want the program's 3`);
    await step("override the command and the environment", () =>
      ovm(
        [
          "run",
          "--rm",
          "-e",
          "NAME=demo",
          "demo/app:vm",
          "--",
          "sh",
          "-c",
          "echo hello $NAME from $(hostname)",
        ],
        user,
      ),
    );
  } finally {
    await registry?.stop().catch(() => undefined);
    // The daemon `ovm run` started serves only this demo's temp store: stop it (SIGTERM).
    const pid = Number(await readFile(join(user.OVM_STORE, ".ovms", "ovmd.pid"), "utf8").catch(() => "0"));
    if (pid > 0) {
      try {
        process.kill(pid, "SIGTERM");
        for (let i = 0; i < 50 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
      } catch {
        // already gone
      }
    }
    await rm(dir, { recursive: true, force: true });
  }
  process.stdout.write(`\n${bold("== timing summary")}\n`);
  for (const [title, ms] of timings)
    process.stdout.write(`${(ms / 1000).toFixed(2).padStart(7)} s  ${title}\n`);
  process.stdout.write("\nNext: `ovm --help`, the spec in rfc/ovms-v0.1.md, benchmarks in bench/.\n");
}

main().catch((e: Error) => {
  process.stderr.write(`demo failed: ${e.message}\n`);
  process.exit(1);
});
