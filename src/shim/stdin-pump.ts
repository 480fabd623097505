import { constants, createReadStream, type ReadStream } from "node:fs";
import { open } from "node:fs/promises";

/** How the pump hands bytes to the program: one POST /stdin (close: its stdin ends after `data`). */
export type SendStdin = (data: Buffer, close: boolean) => Promise<unknown>;

/**
 * StdinPump copies containerd's stdin FIFO to a container's program (POST /stdin) until the
 * writer closes it, or CloseIO, then closes the program's stdin: it reads end-of-file.
 * Reading does not wait for the sends, which go one after the other (a cold guest holds the
 * first until it is up).
 */
export class StdinPump {
  private stream?: ReadStream;
  private closed = false;
  private queue: Promise<unknown> = Promise.resolve();
  private lastReadAt = 0;

  constructor(
    private readonly fifo: string,
    private readonly send: SendStdin,
    /** told of a failed send, and of a failed read unless the pump was closed meanwhile */
    private readonly report: (message: string) => void,
  ) {}

  /** run reads the FIFO until it ends, then closes the program's stdin. */
  async run(): Promise<void> {
    try {
      this.stream = createReadStream(this.fifo, { highWaterMark: 64 << 10 });
      for await (const chunk of this.stream) {
        this.lastReadAt = Date.now();
        this.enqueue(chunk as Buffer, false);
      }
    } catch (e) {
      if (!this.closed) this.report((e as Error).message);
    } finally {
      if (!this.closed) {
        this.closed = true;
        this.enqueue(Buffer.alloc(0), true);
      }
    }
  }

  /**
   * close is CloseIO with stdin: the program's stdin ends after what was written. ctr asks for
   * it before it closes its end of the FIFO, so the pump first reads what is there (until the
   * FIFO ends or stays quiet a moment, at most 5 s), then stdin is closed behind it.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    await unblockOpen(this.fifo);
    const deadline = Date.now() + 5000;
    while (!this.closed && Date.now() < deadline && Date.now() - this.lastReadAt < 300)
      await new Promise((r) => setTimeout(r, 50));
    if (this.closed) return;
    this.closed = true;
    this.stream?.destroy();
    this.enqueue(Buffer.alloc(0), true);
  }

  /** stop ends the pump without closing the program's stdin (the program has ended). */
  async stop(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await unblockOpen(this.fifo);
    this.stream?.destroy();
  }

  /** enqueue queues one send behind the ones before it. */
  private enqueue(data: Buffer, close: boolean): void {
    this.queue = this.queue.then(() => this.send(data, close)).catch((e: Error) => this.report(e.message));
  }
}

/** unblockOpen ends an open of `fifo` that waits for a writer: a writer that comes and goes at once. */
async function unblockOpen(fifo: string): Promise<void> {
  const w = await open(fifo, constants.O_WRONLY | constants.O_NONBLOCK).catch(() => undefined);
  await w?.close();
}
