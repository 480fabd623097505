#!/usr/bin/env node
import { spawn } from "node:child_process";
import { closeSync, constants, openSync, writeSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { connect } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createHash } from "node:crypto";
import { VERSION } from "../version.js";

/**
 * containerd-shim-ovms-v2: the containerd runtime v2 shim of OVMS
 * (https://github.com/containerd/containerd/blob/v1.6.20/runtime/v2/README.md). containerd
 * runs `start` in the bundle folder; it starts the shim's server in the background and prints
 * the address of its ttrpc socket. containerd then calls the Task service there; each task is
 * an OVMS instance of the node's `ovmd` (OVMD_SOCKET or the default socket). `delete` cleans
 * up after a shim that died: the instance is removed and its rootfs unmounted.
 */

const USAGE = `usage: containerd-shim-ovms-v2 -namespace NS -id ID -address CONTAINERD_SOCKET [-publish-binary CONTAINERD] [-bundle DIR] start|delete

containerd runs this (runtime name io.containerd.ovms.v2); a person never needs to.
Example containerd config (config.toml, version 2):
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.ovms]
    runtime_type = "io.containerd.ovms.v2"
Example ctr run:
  ctr run --rm --runtime io.containerd.ovms.v2 --snapshotter native docker.io/library/busybox:latest demo echo hi
The shim talks to ovmd on $OVMD_SOCKET (default: the ovmd default socket). See docs/kubernetes.md.`;

interface Flags {
  namespace: string;
  id: string;
  address: string;
  publishBinary: string;
  bundle: string;
  socket: string;
  debug: boolean;
  action: string;
}

/** parseFlags reads Go-style flags (`-name value`, `--name value`, `-name=value`) and the action. */
function parseFlags(argv: string[]): Flags {
  const f: Flags = {
    namespace: "",
    id: "",
    address: "",
    publishBinary: "containerd",
    bundle: "",
    socket: "",
    debug: false,
    action: "",
  };
  const names: Record<string, keyof Flags> = {
    namespace: "namespace",
    id: "id",
    address: "address",
    "publish-binary": "publishBinary",
    bundle: "bundle",
    socket: "socket",
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("-")) {
      f.action = a;
      continue;
    }
    const [name, inline] = a.replace(/^--?/, "").split(/=(.*)/s, 2);
    if (name === "debug") f.debug = true;
    else if (name === "v" || name === "version") f.action = "version";
    else if (name === "h" || name === "help") f.action = "help";
    else if (names[name]) (f as any)[names[name]] = inline ?? argv[++i] ?? "";
    else throw new Error(`unknown flag -${name}\n${USAGE}`);
  }
  return f;
}

/** socketPath is where the shim of one task listens: beside containerd's socket, named by a hash (a UNIX socket path is short). */
function socketPath(f: Flags): string {
  const base = f.address ? join(dirname(f.address.replace(/^unix:\/\//, "")), "s") : "/run/ovms/s";
  const h = createHash("sha256").update(`${f.address}|${f.namespace}|${f.id}`).digest("hex");
  return join(base, `ovms-${h.slice(0, 32)}.sock`);
}

async function main(): Promise<number> {
  const f = parseFlags(process.argv.slice(2));
  if (f.action === "version") {
    process.stdout.write(`containerd-shim-ovms-v2 ${VERSION} (runtime v2, ttrpc Task service)\n`);
    return 0;
  }
  if (f.action === "help" || !f.action) {
    process.stdout.write(USAGE + "\n");
    return f.action ? 0 : 2;
  }
  if (!f.namespace) throw new Error("shim namespace cannot be empty (-namespace)");
  if (!f.id) throw new Error("task id cannot be empty (-id)");
  const bundle = f.bundle || process.cwd();
  if (f.action === "start") return start(f);
  if (f.action === "delete") return deleteAfterDeath(f, bundle);
  if (f.action === "serve") return serve(f, bundle);
  throw new Error(`unknown action ${f.action}\n${USAGE}`);
}

/** start runs the server in the background and prints its address once it accepts connections. */
async function start(f: Flags): Promise<number> {
  const sock = socketPath(f);
  const self = fileURLToPath(import.meta.url);
  const args = [
    self,
    "-namespace",
    f.namespace,
    "-id",
    f.id,
    "-address",
    f.address,
    "-publish-binary",
    f.publishBinary,
    "-socket",
    sock,
  ];
  if (f.debug) args.push("-debug");
  const child = spawn(process.execPath, [...args, "serve"], {
    detached: true,
    stdio: "ignore",
    cwd: process.cwd(),
  });
  child.unref();
  const deadline = Date.now() + 30_000;
  while (!(await accepts(sock))) {
    if (child.exitCode !== null)
      throw new Error(`the shim server exited with ${child.exitCode} before listening on ${sock}`);
    if (Date.now() > deadline) throw new Error(`the shim server did not listen on ${sock} within 30 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
  process.stdout.write(`unix://${sock}`);
  return 0;
}

function accepts(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** serve is the shim's server: the Task service on the socket, logs to the bundle's `log` FIFO. */
async function serve(f: Flags, bundle: string): Promise<number> {
  // Loaded here, not at the top: `start` (which containerd waits for) then loads nothing it does not use.
  const { OvmdClient } = await import("../client/client.js");
  const { Publisher } = await import("./publisher.js");
  const { TASK_SERVICE, taskService } = await import("./task-service.js");
  const { TtrpcServer } = await import("./ttrpc-server.js");
  let logFd: number | undefined;
  try {
    logFd = openSync(join(bundle, "log"), constants.O_WRONLY | constants.O_NONBLOCK);
  } catch {
    // containerd made no log FIFO (or is gone): the shim logs nowhere.
  }
  const log = (line: string) => {
    if (logFd === undefined) return;
    try {
      writeSync(
        logFd,
        `time="${new Date().toISOString()}" level=info msg=${JSON.stringify(line)} runtime=io.containerd.ovms.v2\n`,
      );
    } catch {
      // a full or closed log pipe must never stop the shim
    }
  };
  const client = new OvmdClient();
  const publisher = new Publisher(f.publishBinary, f.address, f.namespace, log);
  const stop = () => {
    setTimeout(async () => {
      await server.close().catch(() => undefined);
      await publisher.flush();
      await rm(f.socket, { force: true });
      if (logFd !== undefined) closeSync(logFd);
      process.exit(0);
    }, 50);
  };
  const server = new TtrpcServer(
    { [TASK_SERVICE]: taskService({ client, publisher, log }, { shutdown: stop }) },
    log,
  );
  await mkdir(dirname(f.socket), { recursive: true, mode: 0o711 });
  await rm(f.socket, { force: true });
  await server.listen(f.socket);
  log(`serving ${TASK_SERVICE} on ${f.socket}, ovmd at ${client.where}`);
  process.on("SIGTERM", stop);
  return new Promise<number>(() => {});
}

/**
 * deleteAfterDeath is `delete`: containerd's cleanup of a task whose shim is gone. The VM is
 * removed (never left orphaned), the rootfs unmounted, and a DeleteResponse written to stdout.
 */
async function deleteAfterDeath(f: Flags, bundle: string): Promise<number> {
  const { DaemonError, OvmdClient } = await import("../client/client.js");
  const { loadRecord, removeLayout, unmountAll } = await import("./bundle.js");
  const { encode, timestamp } = await import("./protos.js");
  const rec = await loadRecord(bundle);
  if (rec.instanceId) {
    await new OvmdClient().remove(rec.instanceId, { force: true }).catch((e) => {
      // Already removed (the shim's own Delete got there first) is the normal case.
      if (!(e instanceof DaemonError && e.code === "NOT_FOUND"))
        process.stderr.write(`removing instance ${rec.instanceId}: ${(e as Error).message}\n`);
    });
  }
  await unmountAll(rec.mounted);
  await removeLayout(rec.layout);
  await rm(socketPath(f), { force: true });
  process.stdout.write(
    encode("containerd.task.v2.DeleteResponse", {
      pid: 0,
      exit_status: 137,
      exited_at: timestamp(new Date()),
    }),
  );
  return 0;
}

main().then(
  (code) => {
    if (code !== 0) process.exit(code);
    // start and delete end here; serve never resolves.
  },
  (e) => {
    process.stderr.write(`containerd-shim-ovms-v2: ${(e as Error).message}\n`);
    process.exit(1);
  },
);
