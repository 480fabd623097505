import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { RuntimeError } from "../runtime-error.js";
import { TERMINAL_STATES, type Instance, type KillAction, type StopOptions } from "../types.js";
import type { InstanceRecord, InstanceRecords } from "./records.js";
import type { Supervisor } from "./supervisor.js";

/**
 * The runtime's half of OVMS-Init's control channel (rfc §6.7): commands written, one per
 * line, into the second serial port's socket, which OVMS-Init's control reader
 * (scripts/ovms-init/control) carries out in the guest; and what a signal means for an
 * instance, with or without that channel.
 */

/** SIGKILL and SIGTERM are the two signals every instance takes: the VM is stopped (at once, or gracefully). */
export const SIGKILL = 9;
export const SIGTERM = 15;

/** MAX_SIGNAL is the highest Linux signal number (SIGRTMAX). */
export const MAX_SIGNAL = 64;

/**
 * signalCommand is the control line that has OVMS-Init send `signal` to the program:
 * `signal <n>\n`. INVALID_ARGUMENT unless `signal` is a signal number (1-64).
 */
export function signalCommand(signal: number): Buffer {
  if (!Number.isInteger(signal) || signal < 1 || signal > MAX_SIGNAL)
    throw new RuntimeError("INVALID_ARGUMENT", `signal ${signal} is not a signal number (1-${MAX_SIGNAL})`);
  return Buffer.from(`signal ${signal}\n`);
}

/** STDIN_CHUNK is the most bytes one `stdin` line carries: its base64 stays well under a TTY line (4095). */
export const STDIN_CHUNK = 2048;

/**
 * stdinCommands are the control lines that write `data` to the program's stdin: `stdin <base64>`
 * per STDIN_CHUNK bytes, then `stdin-close` when `close` (the program reads end-of-file).
 */
export function stdinCommands(data: Buffer, close: boolean): Buffer {
  const lines: string[] = [];
  for (let at = 0; at < data.length; at += STDIN_CHUNK)
    lines.push(`stdin ${data.subarray(at, at + STDIN_CHUNK).toString("base64")}\n`);
  if (close) lines.push("stdin-close\n");
  return Buffer.from(lines.join(""));
}

/** READY_LINE is what OVMS-Init writes on the control port once its control reader listens. */
const READY_LINE = "OVMS-READY";

/**
 * hasControlInput tells whether a QEMU command line gives OVMS-Init's control port an input
 * (a `socket` chardev, argv.ts). Containers started by an ovmd before the channel took input
 * have a `file` chardev: their program can be stopped, not signalled.
 */
export function hasControlInput(argv: string[]): boolean {
  return argv.some((a) => a.startsWith("socket,id=control0,"));
}

/** SignalDeps are what signalInstance needs of the runtime. */
export interface SignalDeps {
  records: InstanceRecords;
  procs: Supervisor;
  /** send writes `data` to the control socket `path` of instance `id`. */
  send(id: string, path: string, data: Buffer): Promise<number>;
  stop(id: string, opts: StopOptions): Promise<Instance>;
}

/**
 * writeStdin sends `data` (then end-of-file, with `close`) to the stdin of a container's
 * program started with `stdin`. Bytes written before OVMS-Init listens could be lost (the
 * serial port drops what came before it was opened), so a cold-booted guest is waited for
 * until it reports ready on the control port; a restored one is long up.
 */
export async function writeStdin(
  deps: SignalDeps,
  ref: string,
  data: Buffer,
  close: boolean,
): Promise<number> {
  const rec = deps.records.find(ref);
  const id = rec.instance_id;
  const live = () => !TERMINAL_STATES.has(rec.state) && !!deps.procs.get(id);
  if (!live())
    throw new RuntimeError("CONFLICT", `instance ${id} is ${rec.state}, not running: no stdin to write`);
  if (!rec.stdin || !hasControlInput(rec.argv))
    throw new RuntimeError(
      "CONFLICT",
      `instance ${id} was not started with stdin: its program reads /dev/null (start it with overrides.stdin)`,
    );
  const log = join(deps.records.dir(id), "control.log");
  while (!rec.restored_from && !(await readFile(log, "utf8").catch(() => "")).includes(READY_LINE)) {
    if (!live())
      throw new RuntimeError("CONFLICT", `instance ${id} ended before its program could read stdin`);
    await new Promise((r) => setTimeout(r, 50));
  }
  await deps.send(id, join(rec.shm_dir, "control.sock"), stdinCommands(data, close));
  return data.length;
}

/**
 * signalInstance delivers `signal` to an instance: SIGKILL stops the VM at once (whatever it
 * runs); any other signal goes to a container's program through the control channel; an
 * instance without one (not a container, or started before the channel took input) takes
 * SIGTERM as a graceful stop (the ACPI power button, which OVMS-Init turns into the image's
 * stop signal) and refuses others with NOT_IMPLEMENTED. CONFLICT when it runs no more.
 */
export async function signalInstance(
  deps: SignalDeps,
  ref: string,
  signal: number,
): Promise<{ rec: InstanceRecord; action: KillAction }> {
  const data = signalCommand(signal);
  const rec = deps.records.find(ref);
  const id = rec.instance_id;
  if (TERMINAL_STATES.has(rec.state) || !deps.procs.get(id))
    throw new RuntimeError("CONFLICT", `instance ${id} is ${rec.state}, not running: no process to signal`);
  if (signal === SIGKILL) {
    const info = await deps.stop(id, { force: true });
    return { rec, action: TERMINAL_STATES.has(info.state) ? "exited" : "stopping" };
  }
  if (rec.container && hasControlInput(rec.argv)) {
    await deps.send(id, join(rec.shm_dir, "control.sock"), data);
    return { rec, action: "signalled" };
  }
  if (signal === SIGTERM) {
    // Not awaited: a guest may take its time to power off. The state is `stopping` already.
    void deps.stop(id, {}).catch(() => undefined);
    return { rec, action: "stopping" };
  }
  throw new RuntimeError(
    "NOT_IMPLEMENTED",
    rec.container
      ? `instance ${id} was started without input on its control channel (an earlier ovmd): only SIGKILL (9) and SIGTERM (15) reach it, as stop --force and stop`
      : `instance ${id} is not a container (no OVMS-Init in the guest to deliver signal ${signal}): only SIGKILL (9) and SIGTERM (15) reach it, as stop --force and stop`,
  );
}
