import { connect, type Socket } from "node:net";
import { open, stat } from "node:fs/promises";
import { PassThrough, type Readable } from "node:stream";
import { RuntimeError } from "../runtime-error.js";

/** DEFAULT_TAIL_BYTES is how much of the console's past a terminal gets first: a screenful or so of history. */
export const DEFAULT_TAIL_BYTES = 64 << 10;

/**
 * hasSerialInput tells whether a QEMU command line gives the serial console an input (a
 * `socket` chardev with a `logfile`, argv.ts). Instances started by an ovmd before serial
 * input existed have a `file` chardev: output only.
 */
export function hasSerialInput(argv: string[]): boolean {
  return argv.some((a) => a.startsWith("socket,id=serial0,"));
}

/**
 * rawSerial streams the serial console file `path` as raw bytes (Buffers), for a terminal:
 * the last `tailBytes` of it first, then, while `ended` has not resolved, what the guest
 * writes next (polled every 50 ms), prompts and other partial lines included. Unlike the
 * log stream (serial-log.ts) nothing is split into lines or held back. It ends when the
 * instance ends (or at once without `ended`), and stops polling when destroyed.
 */
export async function rawSerial(
  path: string,
  opts: { tailBytes?: number; ended?: Promise<void> } = {},
): Promise<Readable> {
  const out = new PassThrough();
  const size = (await stat(path).catch(() => undefined))?.size ?? 0;
  let offset = Math.max(0, size - (opts.tailBytes ?? DEFAULT_TAIL_BYTES));
  // One read at a time (as in serial-log.ts): a slow read must not overlap the next poll.
  let reading: Promise<void> = Promise.resolve();
  const readMore = (): Promise<void> => {
    reading = reading.then(readOnce, readOnce);
    return reading;
  };
  const readOnce = async (): Promise<void> => {
    const st = await stat(path).catch(() => undefined);
    if (!st || st.size <= offset || out.destroyed) return;
    const fh = await open(path, "r");
    try {
      const buf = Buffer.alloc(Math.min(st.size - offset, 1 << 20));
      const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
      offset += bytesRead;
      if (bytesRead && !out.destroyed && !out.writableEnded) out.write(buf.subarray(0, bytesRead));
    } finally {
      await fh.close();
    }
  };
  await readMore().catch(() => undefined);
  if (!opts.ended) {
    out.end();
    return out;
  }
  let done = false;
  const poll = setInterval(() => void readMore().catch(() => undefined), 50);
  const finish = async () => {
    if (done) return;
    done = true;
    clearInterval(poll);
    await readMore().catch(() => undefined);
    if (!out.destroyed) out.end();
  };
  void opts.ended.then(finish);
  out.on("close", () => {
    done = true;
    clearInterval(poll);
  });
  return out;
}

/**
 * SerialInputs holds one connection per instance to its QEMU's serial socket, opened on the
 * first write and kept while QEMU lives (it closes with QEMU). QEMU serves one client at a
 * time, so every terminal of an instance types through this one connection. QEMU also sends
 * the guest's output down it; that is read and dropped (the logfile has it, and an unread
 * socket would stall the guest's serial port once its buffer is full).
 */
export class SerialInputs {
  private readonly conns = new Map<string, Promise<Socket>>();

  /** write sends `data` to the serial input of instance `id` (socket `path`); resolves with the count. */
  async write(id: string, path: string, data: Buffer): Promise<number> {
    let conn = this.conns.get(id);
    if (!conn) {
      conn = this.connect(id, path);
      this.conns.set(id, conn);
      conn.catch(() => this.conns.delete(id));
    }
    const sock = await conn;
    await new Promise<void>((resolve, reject) =>
      sock.write(data, (e) =>
        e
          ? reject(new RuntimeError("CONFLICT", `instance ${id}: the serial input closed: ${e.message}`))
          : resolve(),
      ),
    );
    return data.length;
  }

  private connect(id: string, path: string): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const sock = connect(path);
      sock.once("connect", () => {
        sock.off("error", onError);
        sock.on("error", () => sock.destroy());
        sock.on("close", () => this.conns.delete(id));
        sock.resume(); // drop the output: the serial log has it
        resolve(sock);
      });
      const onError = (e: NodeJS.ErrnoException) =>
        reject(
          new RuntimeError(
            "CONFLICT",
            `instance ${id}: its serial input does not answer (${e.code ?? e.message})`,
          ),
        );
      sock.once("error", onError);
    });
  }

  /** closeAll drops every connection (daemon shutdown); QEMU waits for the next client. */
  closeAll(): void {
    for (const c of this.conns.values()) void c.then((s) => s.destroy()).catch(() => undefined);
    this.conns.clear();
  }
}
