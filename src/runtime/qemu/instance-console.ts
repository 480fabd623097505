import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { RuntimeError } from "../runtime-error.js";
import type { InstanceRecords } from "./records.js";
import { mergeRecords, serialLog } from "./serial-log.js";
import { SerialInputs, hasSerialInput, rawSerial } from "./serial-console.js";
import type { Supervisor } from "./supervisor.js";

/**
 * InstanceConsole is an instance's serial console as the runtime offers it: the log lines
 * (`logs`), the raw bytes for a terminal (`output`) and typing into the guest (`input`, one
 * connection per instance to QEMU's serial socket, which serves one client at a time).
 */
export class InstanceConsole {
  private readonly inputs = new SerialInputs();
  /** The connections to OVMS-Init's control ports (control-channel.ts), one per instance as for the console. */
  private readonly controls = new SerialInputs();

  constructor(
    private readonly records: InstanceRecords,
    private readonly procs: Supervisor,
  ) {}

  /**
   * logs streams the console as lines; with `follow` until the instance's QEMU has ended. A
   * container's stderr (stderr.log, rfc §6.7) comes in the same stream, its records marked
   * `stderr`; `tail` then counts the lines of each.
   */
  async logs(ref: string, opts: { follow?: boolean; tail?: number } = {}): Promise<Readable> {
    const id = this.records.find(ref).instance_id;
    const ended = this.procs.get(id)?.exited;
    const serial = await serialLog(this.serialFile(id), { ...opts, ended });
    const stderr = join(this.records.dir(id), "stderr.log");
    if (!existsSync(stderr)) return serial;
    return mergeRecords([serial, await serialLog(stderr, { ...opts, ended, stream: "stderr" })]);
  }

  /** output streams the console's raw bytes (the last `tailBytes`, then live ones with `follow`). */
  async output(ref: string, opts: { tailBytes?: number; follow?: boolean } = {}): Promise<Readable> {
    const id = this.records.find(ref).instance_id;
    const ended = opts.follow ? this.procs.get(id)?.exited : undefined;
    return rawSerial(this.serialFile(id), {
      ...(opts.tailBytes !== undefined ? { tailBytes: opts.tailBytes } : {}),
      ended,
    });
  }

  /** input types `data` into the guest's serial port; refused unless its QEMU runs with serial input. */
  async input(ref: string, data: Buffer): Promise<number> {
    const rec = this.records.find(ref);
    if (!["running", "stalled", "paused"].includes(rec.state) || !this.procs.get(rec.instance_id))
      throw new RuntimeError("CONFLICT", `instance ${rec.instance_id} is ${rec.state}, not running`);
    if (!hasSerialInput(rec.argv))
      throw new RuntimeError(
        "CONFLICT",
        `instance ${rec.instance_id} has no serial input (started by an earlier ovmd with an output-only console)`,
      );
    return this.inputs.write(rec.instance_id, join(rec.shm_dir, "serial.sock"), data);
  }

  /** control writes a command line to the control socket `path` of instance `id`. */
  control(id: string, path: string, data: Buffer): Promise<number> {
    return this.controls.write(id, path, data);
  }

  /** close drops every serial input connection. */
  close(): void {
    this.inputs.closeAll();
    this.controls.closeAll();
  }

  private serialFile(id: string): string {
    return join(this.records.dir(id), "serial.log");
  }
}
