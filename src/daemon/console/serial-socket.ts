import type { IncomingMessage } from "node:http";
import type { Duplex, Readable } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import { OvmsError } from "../../core/errors.js";
import type { Runtime } from "../../runtime/types.js";
import type { Contract } from "../contract.js";
import { toApiError } from "../errors.js";
import type { Logger } from "../log.js";
import { checkToken } from "./auth.js";

/** CONSOLE_PROTOCOL is the WebSocket subprotocol of `GET /console/{instance_id}` (see the OpenAPI document). */
export const CONSOLE_PROTOCOL = "ovms.console.v1";

/** MAX_INPUT bounds one message of typed input, like the `data` of POST /console. */
const MAX_INPUT = 64 << 10;

/** HIGH_WATER pauses the console's output while this much is still queued for a slow client. */
const HIGH_WATER = 1 << 20;

/**
 * consoleUpgrade handles the WebSocket upgrade of `GET /console/{instance_id}` on one
 * listener: it checks the path against the contract, the bearer token (header or the
 * `ovms.bearer.<base64url>` subprotocol) when the listener has one, the parameters and the
 * instance, before upgrading; any refusal is the contract's JSON error on the raw socket. Once
 * open, raw console output goes out as binary messages and every message that comes in is
 * typed into the serial input; the socket closes with 1000 "ended" when the instance ends.
 */
export function consoleUpgrade(opts: { contract: Contract; runtime: Runtime; log: Logger; token?: string }) {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_INPUT,
    handleProtocols: (offered) => (offered.has(CONSOLE_PROTOCOL) ? CONSOLE_PROTOCOL : false),
  });
  const { contract, runtime, log } = opts;

  return async (req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> => {
    const url = new URL(req.url ?? "/", "http://localhost");
    socket.on("error", () => socket.destroy());
    let output: Readable | undefined;
    try {
      checkToken(req, opts.token, true);
      const m = contract.match("GET", url.pathname);
      if (!("op" in m) || m.op.operationId !== "attachConsole")
        throw new OvmsError(
          "NOT_FOUND",
          `GET ${url.pathname}: no WebSocket endpoint here (try /console/{instance_id})`,
        );
      const parsed = contract.parse(m.op, m.params, url.searchParams, undefined, false);
      const offered = String(req.headers["sec-websocket-protocol"] ?? "").split(",");
      if (!offered.some((p) => p.trim() === CONSOLE_PROTOCOL))
        throw new OvmsError(
          "BAD_REQUEST",
          `GET ${url.pathname}: ask for the WebSocket subprotocol ${CONSOLE_PROTOCOL}`,
        );
      if (!runtime.consoleOutput || !runtime.consoleInput)
        throw new OvmsError("NOT_IMPLEMENTED", `runtime ${runtime.name} has no serial console to attach to`);
      const id = (await runtime.status(parsed.params.instance_id)).id;
      const tail = parsed.query.tail as number | undefined;
      output = await runtime.consoleOutput(id, {
        follow: true,
        ...(tail !== undefined ? { tailBytes: tail } : {}),
      });
      const out = output;
      wss.handleUpgrade(req, socket, head, (ws) => attach(ws, id, out));
    } catch (e) {
      output?.destroy();
      refuse(socket, e);
      log.debug("console refused", { path: url.pathname, error: (e as Error).message });
    }
  };

  function attach(ws: WebSocket, id: string, output: Readable): void {
    log.info("console attached", { id });
    output.on("data", (chunk: Buffer) => {
      ws.send(chunk, { binary: true });
      if (ws.bufferedAmount > HIGH_WATER) {
        output.pause();
        const wait = setInterval(() => {
          if (ws.bufferedAmount < HIGH_WATER / 4 || ws.readyState !== ws.OPEN) {
            clearInterval(wait);
            output.resume();
          }
        }, 20);
      }
    });
    output.once("end", () => ws.close(1000, "ended"));
    output.once("error", (e) => ws.close(1011, reason(e.message)));
    // Typed input goes out in the order it came, one write at a time.
    let typing: Promise<unknown> = Promise.resolve();
    ws.on("message", (data: Buffer | ArrayBuffer | Buffer[]) => {
      const bytes = Buffer.isBuffer(data)
        ? data
        : Array.isArray(data)
          ? Buffer.concat(data)
          : Buffer.from(data);
      typing = typing.then(() =>
        runtime.consoleInput!(id, bytes).catch((e: Error) => ws.close(4409, reason(e.message))),
      );
    });
    ws.on("close", () => {
      output.destroy();
      log.info("console detached", { id });
    });
  }
}

/** reason fits a close reason into the 123 bytes a WebSocket close frame allows. */
function reason(s: string): string {
  const b = Buffer.from(s);
  return b.length <= 123
    ? s
    : b
        .subarray(0, 120)
        .toString("utf8")
        .replace(/\uFFFD$/, "") + "…";
}

/** refuse answers an upgrade that will not happen with the contract's JSON error, then closes. */
function refuse(socket: Duplex, e: unknown): void {
  const { status, body } = toApiError(e);
  const text = JSON.stringify(body) + "\n";
  if (!socket.writable) return void socket.destroy();
  socket.end(
    `HTTP/1.1 ${status} ${status === 401 ? "Unauthorized" : "Error"}\r\n` +
      "content-type: application/json\r\n" +
      `content-length: ${Buffer.byteLength(text)}\r\n` +
      "connection: close\r\n\r\n" +
      text,
  );
}
