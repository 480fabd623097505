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
