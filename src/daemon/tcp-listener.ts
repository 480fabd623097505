import type { Server } from "node:http";
import { OvmsError } from "../core/errors.js";

/** HostPort is a parsed `HOST:PORT` flag value (`--listen`, `--http`). */
export interface HostPort {
  host: string;
  port: number;
}

/**
 * parseHostPort reads `HOST:PORT` (`[v6]:PORT`; an empty host is 127.0.0.1, so a listener is
 * on loopback unless told otherwise); a bad value is a USAGE error naming `flag`.
 */
export function parseHostPort(s: string, flag: string): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(s);
  if (!m) throw new OvmsError("USAGE", `${flag} ${s}: expected HOST:PORT (e.g. 127.0.0.1:7070)`);
  const port = Number(m[3]);
  if (port > 65535) throw new OvmsError("USAGE", `${flag} ${s}: port out of range`);
  return { host: m[1] ?? (m[2] || "127.0.0.1"), port };
}

/** listenTcp binds a TCP listener and answers its address as `host:port` (`[v6]:port`). */
export async function listenTcp(server: Server, at: HostPort, flag: string): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e) => reject(new OvmsError("USAGE", `${flag}: ${e.message}`, { cause: e })));
    server.listen(at.port, at.host, () => resolve());
  });
  const a = server.address() as { address: string; port: number };
  return `${a.address.includes(":") ? `[${a.address}]` : a.address}:${a.port}`;
}
