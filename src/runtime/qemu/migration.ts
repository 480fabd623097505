import { createWriteStream } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { RuntimeError } from "../runtime-error.js";
import type { InstanceState } from "../types.js";
import type { QmpClient } from "./qmp-client.js";
import { splitRamStream } from "./ram-stream.js";
import { trace } from "./trace.js";

/**
 * Migration moves device state in and out of QEMU over `unix:` sockets: out of a paused
 * instance for a snapshot (QEMU connects to a socket we listen on: under `-sandbox spawn=deny`
 * QEMU 7.2 cannot run the helper `exec:` needs), into a QEMU waiting at `-incoming defer` for a
 * restore. A cold-booted guest's memory never travels: it is shared (`x-ignore-shared`) with the
 * memory file; a restored clone's travels once, out of it, when it is snapshotted (ram-stream.ts).
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
   * For a restored clone (`clone`), whose RAM is a private mapping the stream carries, the
   * stream goes to a file and its RAM pages to `clone.memoryFile` (splitRamStream).
   */
  async capture(
    qmp: QmpClient,
    shmDir: string,
    grant: (paths: string[]) => Promise<void>,
    clone?: { memoryBytes: number; memoryFile: string },
  ): Promise<Buffer> {
    const sock = join(shmDir, "migrate.sock");
    const streamFile = join(shmDir, "migrate.stream");
    await qmp.execute("stop");
    await qmp.execute("migrate-set-capabilities", {
      capabilities: [{ capability: "x-ignore-shared", state: true }],
    });
    // The guest is paused: no point in QEMU's default 128 MiB/s cap on a clone's RAM.
    if (clone) await qmp.execute("migrate-set-parameters", { "max-bandwidth": 64 * 1024 ** 3 });
    const chunks: Buffer[] = [];
    await rm(sock, { force: true });
    const file = clone ? createWriteStream(streamFile, { mode: 0o600 }) : undefined;
    const server = createServer((c) => (file ? c.pipe(file) : c.on("data", (d: Buffer) => chunks.push(d))));
    const received = new Promise<void>((resolve) =>
      server.on("connection", (c) =>
        file ? file.on("close", () => resolve()) : c.on("close", () => resolve()),
      ),
    );
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    try {
      await grant([sock]);
      const done = qmp.waitEvent("MIGRATION", 120_000, (e) =>
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
      if (!clone) return Buffer.concat(chunks);
      trace("capture: clone stream received");
      const split = await splitRamStream(streamFile, clone.memoryBytes, clone.memoryFile);
      trace(`capture: ${split.dataPages} data pages of ${split.pages} split out`);
      return split.deviceState;
    } finally {
      server.close();
      await rm(sock, { force: true });
      await rm(streamFile, { force: true });
    }
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
 * is not running or paused with a monitor, that has an ivshmem device, or that is being
 * snapshotted already. A restored clone can be snapshotted: capture reads its RAM from the stream.
 */
export function checkSnapshottable<L extends { qmp?: unknown; snapshotting?: boolean }>(
  rec: { instance_id: string; state: InstanceState; devices: { name: string }[] },
  live: L | undefined,
  qemuVersion: string,
): asserts live is L & { qmp: NonNullable<L["qmp"]> } {
  if ((rec.state !== "running" && rec.state !== "paused") || !live?.qmp) {
    throw new RuntimeError(
      "CONFLICT",
      `instance ${rec.instance_id} is ${rec.state}: only a running or paused instance can be snapshotted`,
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
