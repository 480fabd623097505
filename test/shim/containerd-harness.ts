import { spawn, execFile, type ChildProcess } from "node:child_process";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ROOT } from "../helpers.js";
import { baseLayer, writeImageLayout, type ImageConfigFields } from "../convert/image-fixture.js";
import { exec } from "../helpers.js";

/** SHIM is the shim's entry point as installed (package.json bin.containerd-shim-ovms-v2). */
export const SHIM = join(ROOT, "dist/src/shim/containerd-shim-ovms-v2.js");

/** Containerd is one real containerd (Debian's 1.6) on a private root, state folder and socket. */
export interface Containerd {
  proc: ChildProcess;
  address: string;
  dir: string;
  /** ctr runs `ctr --address … [-n namespace] ARGS` and returns its exit status and output. */
  /** ctr runs one ctr command; `input` is its stdin (then closed), else its stdin stays open. */
  ctr(args: string[], opts?: { namespace?: string; timeoutMs?: number; input?: string }): Promise<CtrResult>;
  output(): string;
  stop(): Promise<void>;
}

/** CtrResult is one ctr command's exit status and output. */
export interface CtrResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * startContainerd runs containerd under `dir` with a config that registers the `ovms` runtime
 * (io.containerd.ovms.v2, the shim found on PATH through a wrapper in `dir/bin`), the CRI
 * plugin on when `cri` is set (native snapshotter, the `ovms` handler, `sandboxImage` as the
 * pause image), and `env` (OVMD_SOCKET) passed down to the shims. It never touches the
 * system's containerd: root, state and sockets are all under `dir`.
 */
export async function startContainerd(
  dir: string,
  env: Record<string, string>,
  opts: { cri?: boolean; sandboxImage?: string } = {},
): Promise<Containerd> {
  await mkdir(join(dir, "bin"), { recursive: true });
  const wrapper = join(dir, "bin", "containerd-shim-ovms-v2");
  await writeFile(wrapper, `#!/bin/sh\nexec ${process.execPath} ${SHIM} "$@"\n`);
  await chmod(wrapper, 0o755);
  const address = join(dir, "c.sock");
  const cri = `[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${opts.sandboxImage ?? "ovms.test/pause:1"}"
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.ovms]
      runtime_type = "io.containerd.ovms.v2"
      pod_annotations = ["ovms.*"]
      container_annotations = ["ovms.*"]
`;
  const config = `version = 2
root = "${join(dir, "root")}"
state = "${join(dir, "state")}"
${opts.cri ? "" : 'disabled_plugins = ["io.containerd.grpc.v1.cri"]'}
[grpc]
  address = "${address}"
[ttrpc]
  address = "${address}.ttrpc"
[debug]
  level = "info"
${opts.cri ? cri : ""}`;
  await writeFile(join(dir, "config.toml"), config);
  let out = "";
  const proc = spawn("containerd", ["--config", join(dir, "config.toml")], {
    env: { ...process.env, ...env, PATH: `${join(dir, "bin")}:${process.env.PATH}` },
    stdio: ["ignore", "pipe", "pipe"],
  });
  proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  const ctr = (args: string[], o: { namespace?: string; timeoutMs?: number; input?: string } = {}) =>
    new Promise<CtrResult>((resolve) => {
      const child = execFile(
        "ctr",
        ["--address", address, ...(o.namespace ? ["-n", o.namespace] : []), ...args],
        { timeout: o.timeoutMs ?? 600_000, maxBuffer: 16 << 20 },
        (err, stdout, stderr) =>
          resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }),
      );
      if (o.input !== undefined) child.stdin!.end(o.input);
    });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`containerd exited ${proc.exitCode}:\n${out}`);
    if ((await ctr(["version"], { timeoutMs: 5_000 })).code === 0) break;
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`containerd did not answer on ${address} in 30 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    proc,
    address,
    dir,
    ctr,
    output: () => out,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
      await exited;
    },
  };
}

/**
 * writeImageTar builds a busybox container image (the convert tests' base layer, less the
 * xattrs the native snapshotter cannot set without CAP_SYS_ADMIN over security.*) as an OCI
 * layout tar that `ctr image import` takes, and returns its path.
 */
export async function writeImageTar(dir: string, config: ImageConfigFields): Promise<string> {
  const layout = join(dir, "image-layout");
  await writeImageLayout(layout, "1.0", [baseLayer().filter((e) => !e.xattrs)], config);
  const tar = join(dir, "image.tar");
  await exec("tar", ["-cf", tar, "-C", layout, "."]);
  return tar;
}

/** shimProcesses lists the shim processes still alive that serve containerd at `address`. */
export async function shimProcesses(address: string): Promise<string[]> {
  const ps = await exec("ps", ["-eo", "pid=,args="]);
  return ps.split("\n").filter((l) => l.includes("containerd-shim-ovms-v2") && l.includes(address));
}
