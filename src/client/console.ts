import type { IncomingMessage } from "node:http";
import WebSocket from "ws";
import { OvmsError } from "../core/errors.js";
import type { ErrorBody } from "../api/types.generated.js";
import { DAEMON_UNAVAILABLE, DaemonError } from "./client.js";

/** CONSOLE_SUBPROTOCOL is the WebSocket subprotocol of `GET /console/{instance_id}` (RFC §6.3). */
export const CONSOLE_SUBPROTOCOL = "ovms.console.v1";

/** ConsoleTarget says where the daemon is: its UNIX socket, or a TCP listener's URL with its token. */
export type ConsoleTarget = { socketPath: string } | { url: string; token: string };

/**
 * openConsole opens the serial console of instance `id` as a WebSocket (`GET
 * /console/{id}`, RFC §6.3): binary messages are the console's raw bytes (the last `tail`
 * bytes first, to `onMessage`), and what is sent is typed into the guest. Resolves once it is
 * open, with `closed` (the close code and reason); a refusal
 * before the upgrade throws the daemon's error (DaemonError: NOT_FOUND, CONFLICT, …), a
 * daemon that does not answer DAEMON_UNAVAILABLE. Over TCP the token travels as the
 * `ovms.bearer.` subprotocol, never in the URL.
 */
export function openConsole(
  target: ConsoleTarget,
  id: string,
  opts: { tail?: number; onMessage?: (data: Buffer) => void } = {},
): Promise<{ ws: WebSocket; closed: Promise<{ code: number; reason: string }> }> {
  const path = `/console/${encodeURIComponent(id)}${opts.tail !== undefined ? `?tail=${opts.tail}` : ""}`;
  const where = "socketPath" in target ? target.socketPath : target.url;
  const url =
    "socketPath" in target
      ? `ws+unix://${target.socketPath}:${path}`
      : `${target.url.replace(/^http/, "ws")}${path}`;
  const protocols = [CONSOLE_SUBPROTOCOL];
  if ("token" in target) protocols.push(`ovms.bearer.${Buffer.from(target.token).toString("base64url")}`);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    // Listened to before `open`: the tail of an ended instance and its close can arrive with
    // the upgrade answer and be emitted before a caller awaiting this promise runs again.
    if (opts.onMessage) ws.on("message", (data: Buffer) => opts.onMessage!(data));
    const closed = new Promise<{ code: number; reason: string }>((r) =>
      ws.once("close", (code: number, reason: Buffer) => r({ code, reason: reason.toString() })),
    );
    ws.once("open", () => resolve({ ws, closed }));
    ws.once("unexpected-response", (_req, res: IncomingMessage) => {
      const parts: Buffer[] = [];
      res.on("data", (c: Buffer) => parts.push(c));
      res.on("end", () => {
        const text = Buffer.concat(parts).toString();
        try {
          const body = JSON.parse(text) as ErrorBody;
          if (body?.error?.code) return reject(new DaemonError(res.statusCode ?? 500, body.error));
        } catch {
          // not the contract's error shape
        }
        reject(
          new OvmsError(
            "DAEMON_PROTOCOL",
            `GET ${path}: HTTP ${res.statusCode} from ${where}: ${text.slice(0, 200)}`,
          ),
        );
      });
      ws.terminate();
    });
    ws.once("error", (e: NodeJS.ErrnoException) => {
      if (e.code === "ENOENT" || e.code === "ECONNREFUSED" || e.code === "EACCES")
        return reject(
          new OvmsError(DAEMON_UNAVAILABLE, `no ovmd answers on ${where} (${e.code})`, { cause: e }),
        );
      reject(new OvmsError("DAEMON_PROTOCOL", `GET ${path} on ${where}: ${e.message}`, { cause: e }));
    });
  });
}
