import { execFile, execFileSync, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** ROOT is the repository root (tests run from dist/test/…). */
export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const OVM = join(ROOT, "dist/src/cli/ovm.js");

/** tempDir makes a fresh folder for one test and removes it when the test ends. */
export async function tempDir(
  t: { after: (fn: () => Promise<void>) => void },
  prefix = "ovms-test-",
): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** RunResult is what a finished `ovm` process printed and returned. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** ovm runs the CLI as a user would, with `env` added to the environment. */
export function ovm(args: string[], env: Record<string, string> = {}, input?: string): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [OVM, ...args],
      { env: { ...process.env, ...env }, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        const code = err
          ? typeof (err as { code?: unknown }).code === "number"
            ? (err as { code: number }).code
            : 1
          : 0;
        resolve({ code, stdout, stderr });
      },
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** ovmJson runs the CLI with --json and parses stdout; it fails the test on a non-zero exit. */
export async function ovmJson<T = any>(args: string[], env: Record<string, string> = {}): Promise<T> {
  const r = await ovm(["--json", ...args], env);
  if (r.code !== 0) throw new Error(`ovm ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** DemoAssets are the real parts of the demo VM built by scripts/demo-assets.sh. */
export interface DemoAssets {
  dir: string;
  kernel: string;
  initrd: string;
  base: string;
  diff: string;
}

let assets: DemoAssets | undefined;

/** demoAssets builds (once, cached in .cache/) and returns the demo VM's parts. */
export function demoAssets(): DemoAssets {
  if (!assets) {
    const out = execFileSync("bash", [join(ROOT, "scripts/demo-assets.sh")], { encoding: "utf8" })
      .trim()
      .split("\n");
    const dir = out[out.length - 1];
    assets = {
      dir,
      kernel: join(dir, "vmlinuz"),
      initrd: join(dir, "initrd.img"),
      base: join(dir, "base.qcow2"),
      diff: join(dir, "diff.qcow2"),
    };
  }
  return assets;
}

/** exec runs a host tool and returns its stdout, failing on a non-zero exit. */
export function exec(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 64 << 20, ...opts }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(" ")}: ${stderr || err.message}`)) : resolve(stdout),
    );
  });
}

export { spawn };

export { DEMO_CMDLINE } from "../scripts/demo-guest.js";
import { DEMO_CMDLINE } from "../scripts/demo-guest.js";

/**
 * buildDemo builds the demo artifact (real kernel, busybox initrd, ext4 base + qcow2 diff,
 * one ivshmem device) into `store` as `tag` and returns the build result.
 */
export async function buildDemo(
  store: import("../src/store/store.js").Store,
  tag = "demo/vm:1.0",
  withDevice = true,
) {
  const { build } = await import("../src/artifact/build.js");
  const a = demoAssets();
  return build(
    store,
    {
      name: "demo/vm",
      version: tag.split(":").pop()!,
      kernel: { path: a.kernel, args: DEMO_CMDLINE },
      initrd: { path: a.initrd },
      disks: [{ path: a.base }, { path: a.diff }],
      ...(withDevice ? { devices: [{ type: "ivshmem" as const, name: "shm0", size: 1 << 20 }] } : {}),
      resources: { memory: 192 << 20, vcpus: 1 },
    },
    tag,
  );
}
