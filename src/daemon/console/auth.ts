import { timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { OvmsError } from "../../core/errors.js";

/** BEARER_PROTOCOL_PREFIX starts the WebSocket subprotocol that carries a bearer token (`ovms.bearer.<base64url>`). */
export const BEARER_PROTOCOL_PREFIX = "ovms.bearer.";

/**
 * checkToken refuses (UNAUTHORIZED) a request on a listener with a token unless it carries
 * `Authorization: Bearer <token>` or, for a WebSocket upgrade (`subprotocol`), the token as
 * the subprotocol `ovms.bearer.<token as base64url>`: browsers cannot set headers on a
 * WebSocket, and a URL would put the token in logs. Compared in constant time (RFC §6.1).
 */
export function checkToken(req: IncomingMessage, token: string | undefined, subprotocol = false): void {
  if (token === undefined) return;
  const want = Buffer.from(token);
  const candidates: Buffer[] = [];
  const auth = req.headers.authorization;
  if (auth?.startsWith("Bearer ")) candidates.push(Buffer.from(auth.slice(7)));
  if (subprotocol) {
    for (const p of String(req.headers["sec-websocket-protocol"] ?? "").split(",")) {
      const t = p.trim();
      if (t.startsWith(BEARER_PROTOCOL_PREFIX))
        candidates.push(Buffer.from(t.slice(BEARER_PROTOCOL_PREFIX.length), "base64url"));
    }
  }
  if (candidates.some((c) => c.length === want.length && timingSafeEqual(c, want))) return;
  throw new OvmsError(
    "UNAUTHORIZED",
    subprotocol
      ? `a bearer token is required on this listener (Authorization: Bearer <token>, or the WebSocket subprotocol ${BEARER_PROTOCOL_PREFIX}<base64url token>)`
      : "a bearer token is required on this listener (Authorization: Bearer <token>)",
  );
}
