import { join } from "node:path";
import type { Readable } from "node:stream";
import { RuntimeError } from "../runtime-error.js";
import type { InstanceRecords } from "./records.js";
import { serialLog } from "./serial-log.js";
import { SerialInputs, hasSerialInput, rawSerial } from "./serial-console.js";
import type { Supervisor } from "./supervisor.js";

/**
 * InstanceConsole is an instance's serial console as the runtime offers it: the log lines
 * (`logs`), the raw bytes for a terminal (`output`) and typing into the guest (`input`, one
 * connection per instance to QEMU's serial socket, which serves one client at a time).
 */
export class InstanceConsole {
  private readonly inputs = new SerialInputs();

  constructor(
    private readonly records: InstanceRecords,
    private readonly procs: Supervisor,
  ) {}

  /** logs streams the console as lines; with `follow` until the instance's QEMU has ended. */
  async logs(ref: string, opts: { follow?: boolean; tail?: number } = {}): Promise<Readable> {
    const id = this.records.find(ref).instance_id;
    return serialLog(this.serialFile(id), { ...opts, ended: this.procs.get(id)?.exited });
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

  /** close drops every serial input connection. */
  close(): void {
    this.inputs.closeAll();
  }

  private serialFile(id: string): string {
    return join(this.records.dir(id), "serial.log");
  }
}
