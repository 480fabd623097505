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

  /**
   * prepareIncoming readies a QEMU started with `-incoming defer` for a restore. A snapshot of
   * an instance with ivshmem devices was taken without `x-ignore-shared` (see capture): both
   * sides must agree.
   */
  async prepareIncoming(qmp: QmpClient, snap: { devices: unknown[] }): Promise<void> {
    await qmp.execute("migrate-set-capabilities", {
      capabilities: [
        { capability: "x-ignore-shared", state: !snap.devices.length },
        { capability: "events", state: true },
      ],
    });
  }

  /**
   * restore feeds the device state to a QEMU waiting at `-incoming defer` (load) and resumes.
   */
  async restore(qmp: QmpClient, shmDir: string, deviceStateFile: string): Promise<void> {
    await this.load(qmp, shmDir, deviceStateFile);
    await qmp.execute("cont");
    trace("restore: cont returned");
  }

  /**
   * load feeds the device state to a QEMU waiting at `-incoming defer` through a `unix:`
   * socket in `shmDir` it listens on and waits for the incoming migration to complete; the
   * guest stays paused (the warm pool keeps clones so, and a start is then only a `cont`).
   */
  async load(qmp: QmpClient, shmDir: string, deviceStateFile: string): Promise<void> {
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
  }

  /**
   * capture pauses the guest and saves its device state through a socket in `shmDir` that
   * `grant` lets the QEMU user reach. The guest stays paused: the caller resumes or stops it.
   * With `split` the stream carries the guest RAM — a restored clone's RAM is a private mapping
   * `x-ignore-shared` does not skip, and an instance with ivshmem devices is captured without
   * `x-ignore-shared` (`split.ignoreShared` false: QEMU 7.2 refuses to restore a skipped
   * ivshmem BAR, "Mismatched GPAs") — so the stream goes to a file and the RAM pages to
   * `split.memoryFile` (splitRamStream); a device region's pages stay in the device state.
   * That split is left to the caller (`splitCaptured`), which can resume the guest first: the
   * stream file is already a private copy of the guest's memory. With `clone.live` the guest is
   * not stopped first: QEMU sends its RAM while it runs and stops it for the rest (LiveCapture).
   * With `clone.background` the caller stops the guest in `beforeMigrate` (called once all is
   * set up, right before the migration starts, so that none of it adds to the pause); QEMU saves
   * the device state, resumes the guest and sends its RAM as of that moment while it runs
   * (background.ts).
   */
  async capture(
    qmp: QmpClient,
    shmDir: string,
    grant: (paths: string[]) => Promise<void>,
    clone?: {
      ignoreShared: boolean;
      live?: LiveCapture;
      background?: boolean;
      beforeMigrate?: () => Promise<void>;
    },
  ): Promise<{ deviceState: Buffer } | CapturedStream> {
    const sock = join(shmDir, "migrate.sock");
    const streamFile = join(shmDir, "migrate.stream");
    let kept = false;
    const live = clone?.live;
    const background = clone?.background === true;
    if (!live && !background) await qmp.execute("stop");
    await qmp.execute("migrate-set-capabilities", {
      capabilities: [
        { capability: "x-ignore-shared", state: clone?.ignoreShared ?? true },
        // Off again for every other capture: it is a setting of the QEMU, not of one migration.
        { capability: "background-snapshot", state: background },
      ],
    });
    // No point in QEMU's default 128 MiB/s cap on RAM that goes to a file; a live capture stops
    // the guest for the last pages and the device state once they fit in `downtimeMs`.
    if (clone)
      await qmp.execute("migrate-set-parameters", {
        "max-bandwidth": 64 * 1024 ** 3,
        ...(live ? { "downtime-limit": live.downtimeMs } : {}),
      });
    let forcedStop = false;
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
      await clone?.beforeMigrate?.();
      await qmp.execute("migrate", { uri: `unix:${sock}` });
      trace("capture: migrating");
      // A guest that dirties its memory faster than it can be sent never converges: once the
      // first pass over its RAM is done (however long that takes), it has `convergeMs` more,
      // then it is stopped and the migration ends as a paused one would.
      let firstPassAt: number | undefined;
      const timer = live
        ? setInterval(() => {
            void qmp
              .execute<{ ram?: { "dirty-sync-count"?: number } }>("query-migrate")
              .then((q) => {
                if ((q.ram?.["dirty-sync-count"] ?? 0) >= 2) firstPassAt ??= Date.now();
                if (forcedStop || firstPassAt === undefined || Date.now() - firstPassAt < live.convergeMs)
                  return;
                forcedStop = true;
                trace("capture: precopy did not converge, stopping the guest");
                return qmp.execute("stop");
              })
              .catch(() => undefined);
          }, 250)
        : undefined;
      const ev = await done.finally(() => clearInterval(timer));
      trace("capture: migration completed");
      if (ev.data?.status !== "completed") {
        const q = await qmp
          .execute<{ "error-desc"?: string }>("query-migrate")
          .catch(() => ({}) as { "error-desc"?: string });
        throw new RuntimeError(
          "SNAPSHOT_FAILED",
          `saving device state failed (${String(ev.data?.status)}): ${q["error-desc"] ?? "no detail from QEMU"}`,
        );
      }
      // QEMU reports `completed` before it leaves `finish-migrate`, where `cont` is refused
      // ("Migration is not finalized yet"): wait for the run state that follows.
      for (let i = 0; i < 5000; i++) {
        const st = await qmp.execute<{ status: string }>("query-status");
        if (st.status !== "finish-migrate") break;
        await new Promise((r) => setTimeout(r, 1));
      }
      if (!clone) {
        await received;
        return { deviceState: Buffer.concat(chunks) };
      }
      // QEMU has sent it all: the guest may resume while the last bytes reach the file.
      kept = true;
      return forcedStop ? { streamFile, received, forcedStop } : { streamFile, received };
    } finally {
      server.close();
      await rm(sock, { force: true });
      if (!kept) await rm(streamFile, { force: true });
    }
  }

  /**
   * splitCaptured takes the guest RAM out of a stream `capture` kept (splitRamStream): its pages
   * go to `memoryFile`, the device state is returned; the stream file is removed.
   */
  async splitCaptured(
    { streamFile, received }: CapturedStream,
    clone: { memoryBytes: number; memoryFile: string; ignoreShared: boolean; restoreIgnoreShared?: boolean },
  ): Promise<Buffer> {
    try {
      await received;
      trace("capture: stream received");
      const split = await splitRamStream(
        streamFile,
        clone.memoryBytes,
        clone.memoryFile,
        clone.ignoreShared,
        clone.restoreIgnoreShared,
      );
      trace(`capture: ${split.dataPages} data pages of ${split.pages} split out`);
      return split.deviceState;
    } finally {
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

/** CapturedStream is a migration stream `capture` kept in a file, complete once `received` resolves. */
export interface CapturedStream {
  streamFile: string;
  received: Promise<void>;
  /** A live capture that did not converge: the guest was stopped for the rest. */
  forcedStop?: boolean;
}

/**
 * LiveCapture asks `capture` for a live (precopy) migration: the guest runs while its RAM is
 * sent and is stopped by QEMU for the last dirty pages and the device state, at most about
 * `downtimeMs` by QEMU's estimate; it is stopped by force `convergeMs` after the first pass.
 */
export interface LiveCapture {
  downtimeMs: number;
  convergeMs: number;
}

/**
 * checkSnapshottable refuses, with CONFLICT, a snapshot that cannot be taken: of an instance
 * that is not running or paused with a monitor, or that is being snapshotted already. Restored
 * clones and instances with ivshmem devices can be: capture reads their RAM from the stream.
 */
export function checkSnapshottable<L extends { qmp?: unknown; snapshotting?: boolean }>(
  rec: { instance_id: string; state: InstanceState },
  live: L | undefined,
): asserts live is L & { qmp: NonNullable<L["qmp"]> } {
  if ((rec.state !== "running" && rec.state !== "paused") || !live?.qmp) {
    throw new RuntimeError(
      "CONFLICT",
      `instance ${rec.instance_id} is ${rec.state}: only a running or paused instance can be snapshotted`,
    );
  }
  if (live.snapshotting)
    throw new RuntimeError("CONFLICT", `instance ${rec.instance_id} is already being snapshotted`);
}
