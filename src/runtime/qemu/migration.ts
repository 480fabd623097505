import { readFile, rm } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { RuntimeError } from "../runtime-error.js";
import type { InstanceState } from "../types.js";
import type { QmpClient } from "./qmp-client.js";
import { trace } from "./trace.js";

/**
 * Migration moves device state in and out of QEMU over `unix:` sockets: out of a paused
 * instance for a snapshot (QEMU connects to a socket we listen on: under `-sandbox spawn=deny`
 * QEMU 7.2 cannot run the helper `exec:` needs), into a QEMU waiting at `-incoming defer` for a
 * restore. Guest memory never travels: it is shared (`x-ignore-shared`) with the memory file.
 * It keeps each snapshot's device state (tens of KB) once read, for the next restores.
 */
export class Migration {
  private readonly deviceStates = new Map<string, Buffer>();

  /** prepareIncoming readies a QEMU started with `-incoming defer` for a restore. */
  async prepareIncoming(qmp: QmpClient): Promise<void> {
    await qmp.execute("migrate-set-capabilities", {
      capabilities: [
        { capability: "x-ignore-shared", state: true },
        { capability: "events", state: true },
      ],
    });
  }

  /**
   * restore feeds the device state to a QEMU waiting at `-incoming defer` through a `unix:`
   * socket in `shmDir` it listens on, waits for the incoming migration to complete, and resumes.
   */
  async restore(qmp: QmpClient, shmDir: string, deviceStateFile: string): Promise<void> {
    trace("restore: begin");
    const sock = join(shmDir, "incoming.sock");
    const state = await this.deviceState(deviceStateFile);
    const done = qmp.waitEvent(
      "MIGRATION",
      30_000,
      (e) => e.data?.status === "completed" || e.data?.status === "failed",
    );
    await qmp.execute("migrate-incoming", { uri: `unix:${sock}` });
    trace("restore: migrate-incoming returned");
    await new Promise<void>((resolve, reject) => {
      const c = connect(sock);
      c.once("error", reject);
      c.end(state, () => resolve());
    });
    trace("restore: state sent");
    const ev = await done;
    trace("restore: migration completed");
    if (ev.data?.status !== "completed")
      throw new RuntimeError("RESTORE_FAILED", `incoming migration ${String(ev.data?.status)}`);
    await qmp.execute("cont");
    trace("restore: cont returned");
  }

  /**
   * capture pauses the guest and saves its device state through a socket in `shmDir` that
   * `grant` lets the QEMU user reach. The guest stays paused: the caller resumes or stops it.
   */
  async capture(qmp: QmpClient, shmDir: string, grant: (paths: string[]) => Promise<void>): Promise<Buffer> {
    const sock = join(shmDir, "migrate.sock");
    await qmp.execute("stop");
    await qmp.execute("migrate-set-capabilities", {
      capabilities: [{ capability: "x-ignore-shared", state: true }],
    });
    const chunks: Buffer[] = [];
    await rm(sock, { force: true });
    const server = createServer((c) => c.on("data", (d: Buffer) => chunks.push(d)));
    const received = new Promise<void>((resolve) =>
      server.on("connection", (c) => c.on("close", () => resolve())),
    );
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    try {
      await grant([sock]);
      const done = qmp.waitEvent("MIGRATION", 60_000, (e) =>
        ["completed", "failed", "cancelled"].includes(String(e.data?.status)),
      );
      await qmp.execute("migrate-set-capabilities", {
        capabilities: [{ capability: "events", state: true }],
      });
      await qmp.execute("migrate", { uri: `unix:${sock}` });
      const ev = await done;
      if (ev.data?.status !== "completed") {
        const q = await qmp
          .execute<{ "error-desc"?: string }>("query-migrate")
          .catch(() => ({}) as { "error-desc"?: string });
        throw new RuntimeError(
          "SNAPSHOT_FAILED",
          `saving device state failed (${String(ev.data?.status)}): ${q["error-desc"] ?? "no detail from QEMU"}`,
        );
      }
      await received;
    } finally {
      server.close();
      await rm(sock, { force: true });
    }
    return Buffer.concat(chunks);
  }

  /** deviceState reads a snapshot's device state once and keeps it for later restores. */
  private async deviceState(path: string): Promise<Buffer> {
    let b = this.deviceStates.get(path);
    if (!b) {
      b = await readFile(path);
      this.deviceStates.set(path, b);
    }
    return b;
  }
}

/**
 * checkSnapshottable refuses, with CONFLICT, a snapshot v0.1 cannot take: of an instance that
 * is not running or paused with a monitor, that was itself restored, that has an ivshmem
 * device, or that is being snapshotted already.
 */
export function checkSnapshottable<L extends { qmp?: unknown; snapshotting?: boolean }>(
  rec: { instance_id: string; state: InstanceState; restored_from?: string; devices: { name: string }[] },
  live: L | undefined,
  qemuVersion: string,
): asserts live is L & { qmp: NonNullable<L["qmp"]> } {
  if ((rec.state !== "running" && rec.state !== "paused") || !live?.qmp) {
    throw new RuntimeError(
      "CONFLICT",
      `instance ${rec.instance_id} is ${rec.state}: only a running or paused instance can be snapshotted`,
    );
  }
  if (rec.restored_from) {
    throw new RuntimeError(
      "CONFLICT",
      `instance ${rec.instance_id} was restored from a snapshot: its memory is a private copy, v0.1 snapshots cold-booted instances only`,
    );
  }
  if (rec.devices.length) {
    // QEMU 7.2 checks the guest-physical address of every shared RAM block it skips; an
    // ivshmem BAR is not mapped yet when the incoming side loads RAM, so the restore would
    // fail ("Mismatched GPAs"). Refuse up front rather than produce a snapshot that cannot load.
    throw new RuntimeError(
      "CONFLICT",
      `instance ${rec.instance_id} has ivshmem device ${rec.devices[0].name}: QEMU ${qemuVersion} cannot restore a shared-memory PCI BAR skipped by x-ignore-shared; v0.1 snapshots instances without ivshmem devices`,
    );
  }
  if (live.snapshotting)
    throw new RuntimeError("CONFLICT", `instance ${rec.instance_id} is already being snapshotted`);
}
