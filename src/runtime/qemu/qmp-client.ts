import { EventEmitter } from "node:events";
import { connect, type Socket } from "node:net";
import { OvmsError } from "../../core/errors.js";

/** QmpError is a failed QMP exchange: QEMU's error class and description, or a timeout/close. */
export class QmpError extends OvmsError {}

/** QmpEvent is an asynchronous event QEMU sent (https://www.qemu.org/docs/master/interop/qmp-spec.html). */
export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  command: string;
}

/**
 * QmpClient speaks the QEMU Machine Protocol over a UNIX socket: greeting, capability
 * negotiation, commands matched to replies by `id`, and events. Every command has a timeout;
 * when the socket closes, every pending command fails with QMP_CLOSED.
 */
export class QmpClient extends EventEmitter {
  private buf = "";
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closed = false;
  /** greeting is QEMU's version as announced on connect. */
  greeting?: { version: { qemu: { major: number; minor: number; micro: number } } };

  private constructor(private readonly socket: Socket) {
    super();
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.onData(chunk));
    socket.on("close", () => this.onClose());
    socket.on("error", () => this.onClose());
  }

  /** connect opens `path`, reads the greeting and leaves negotiation mode. */
  static async connect(path: string, timeoutMs = 5000): Promise<QmpClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new QmpError("QMP_TIMEOUT", `QMP ${path}: no connection after ${timeoutMs} ms`));
      }, timeoutMs);
      s.once("connect", () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once("error", (e) => {
        clearTimeout(timer);
        reject(new QmpError("QMP_CONNECT", `QMP ${path}: ${e.message}`, { cause: e }));
      });
    });
    const c = new QmpClient(socket);
    try {
      c.greeting = (await c.waitFor("greeting", timeoutMs)) as QmpClient["greeting"];
      await c.execute("qmp_capabilities", undefined, timeoutMs);
    } catch (e) {
      c.close();
      throw e;
    }
    return c;
  }

  /** execute runs one QMP command and resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<T> {
    if (this.closed) return Promise.reject(new QmpError("QMP_CLOSED", `QMP ${command}: connection closed`));
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpError("QMP_TIMEOUT", `QMP ${command}: no reply after ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer, command });
      this.socket.write(
        JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + "\n",
      );
    });
  }

  /** waitEvent resolves with the next event named `name` (optionally matching `pred`). */
  waitEvent(
    name: string,
    timeoutMs = 10_000,
    pred: (e: QmpEvent) => boolean = () => true,
  ): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const onEvent = (e: QmpEvent) => {
        if (e.event !== name || !pred(e)) return;
        cleanup();
        resolve(e);
      };
      const onClose = () => {
        cleanup();
        reject(new QmpError("QMP_CLOSED", `QMP: closed while waiting for ${name}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new QmpError("QMP_TIMEOUT", `QMP: no ${name} event after ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.off("event", onEvent);
        this.off("close", onClose);
      };
      this.on("event", onEvent);
      this.on("close", onClose);
    });
  }

  /** isClosed tells whether the connection has gone (QEMU exited or closed it). */
  get isClosed(): boolean {
    return this.closed;
  }

  close(): void {
    this.socket.destroy();
    this.onClose();
  }

  private waitFor(kind: "greeting", timeoutMs: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new QmpError("QMP_TIMEOUT", `QMP: no greeting after ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.once(kind, (v) => {
        clearTimeout(timer);
        resolve(v);
      });
      this.once("close", () => {
        clearTimeout(timer);
        reject(new QmpError("QMP_CLOSED", "QMP: closed before the greeting"));
      });
    });
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    for (let nl = this.buf.indexOf("\n"); nl >= 0; nl = this.buf.indexOf("\n")) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ("QMP" in msg) this.emit("greeting", msg.QMP);
      else if ("event" in msg) this.emit("event", msg as unknown as QmpEvent);
      else if ("id" in msg) {
        const p = this.pending.get(String(msg.id));
        if (!p) continue;
        this.pending.delete(String(msg.id));
        clearTimeout(p.timer);
        if ("error" in msg) {
          const err = msg.error as { class?: string; desc?: string };
          p.reject(
            new QmpError("QMP_ERROR", `QMP ${p.command}: ${err.class ?? "Error"}: ${err.desc ?? "failed"}`, {
              details: { class: err.class },
            }),
          );
        } else p.resolve(msg.return);
      }
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new QmpError("QMP_CLOSED", `QMP ${p.command}: connection closed (QEMU exited?)`));
      this.pending.delete(id);
    }
    this.emit("close");
  }
}
