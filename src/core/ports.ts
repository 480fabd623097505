import { OvmsError } from "./errors.js";

/**
 * Published ports and MAC addresses as people write them (rfc §6.6): pure parsing and
 * formatting shared by the CLI (`ovm run -p`), the runtime and the manifest checks.
 */

/** Protocol is the transport protocol of a published or exposed port. */
export type Protocol = "tcp" | "udp";

/** PortRequest is a host port to publish to a guest port; unset fields take the runtime's defaults. */
export interface PortRequest {
  /** Default tcp. */
  protocol?: Protocol;
  /** IPv4 address of the host to listen on; default DEFAULT_HOST_IP. */
  hostIp?: string;
  /** Default: a free port the runtime picks. */
  hostPort?: number;
  guestPort: number;
}

/** PublishedPort is a host port forwarded to a guest port, as the runtime set it up. */
export interface PublishedPort {
  protocol: Protocol;
  hostIp: string;
  hostPort: number;
  guestPort: number;
}

/**
 * DEFAULT_HOST_IP is where a published port listens unless told otherwise: this host only.
 * Publishing on every interface (0.0.0.0) is asked for explicitly, never by default.
 */
export const DEFAULT_HOST_IP = "127.0.0.1";

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** isIPv4 tells whether `s` is a dotted-quad IPv4 address. */
export function isIPv4(s: string): boolean {
  return IPV4.test(s);
}

/** MAC_RE is a MAC address as the API and QEMU take it: six colon-separated hex pairs. */
export const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

/**
 * checkMac refuses a MAC address a NIC cannot have: not six hex pairs, or a multicast
 * address (low bit of the first octet set). It returns it in lowercase.
 */
export function checkMac(mac: string, what = "mac"): string {
  if (!MAC_RE.test(mac))
    throw new OvmsError("INVALID_ARGUMENT", `${what} "${mac}": write six hex pairs, e.g. 52:54:00:12:34:56`);
  if (parseInt(mac.slice(0, 2), 16) & 1)
    throw new OvmsError(
      "INVALID_ARGUMENT",
      `${what} "${mac}" is a multicast address; a NIC needs a unicast one`,
    );
  return mac.toLowerCase();
}

function port(text: string, what: string, spec: string): number {
  const n = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= 65535))
    throw new OvmsError("USAGE", `-p ${spec}: ${what} "${text}" is not a port (1-65535)`);
  return n;
}

/**
 * parsePortSpec reads `ovm run -p` as docker writes it: `[HOST_IP:]HOST_PORT:GUEST_PORT[/PROTO]`,
 * `HOST_IP::GUEST_PORT[/PROTO]` or `GUEST_PORT[/PROTO]` (the last two publish on a free host
 * port). PROTO is tcp (default) or udp. Ranges are not supported.
 */
export function parsePortSpec(spec: string): PortRequest {
  const m = /^(.*?)(?:\/([a-z]+))?$/i.exec(spec.trim())!;
  const protocol = (m[2] ?? "tcp").toLowerCase();
  if (protocol !== "tcp" && protocol !== "udp")
    throw new OvmsError("USAGE", `-p ${spec}: protocol "${m[2]}" is not tcp or udp`);
  const parts = m[1].split(":");
  if (parts.length > 3 || parts.some((p, i) => p === "" && !(parts.length === 3 && i === 1)))
    throw new OvmsError(
      "USAGE",
      `-p ${spec}: write [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|udp], HOST_IP::GUEST_PORT or GUEST_PORT`,
    );
  if (parts.some((p) => p.includes("-")))
    throw new OvmsError(
      "USAGE",
      `-p ${spec}: port ranges are not supported; publish each port with its own -p`,
    );
  const out: PortRequest = { protocol, guestPort: port(parts[parts.length - 1], "guest port", spec) };
  if (parts.length >= 2 && parts[parts.length - 2] !== "")
    out.hostPort = port(parts[parts.length - 2], "host port", spec);
  if (parts.length === 3) {
    if (!isIPv4(parts[0]))
      throw new OvmsError("USAGE", `-p ${spec}: host address "${parts[0]}" is not an IPv4 address`);
    out.hostIp = parts[0];
  }
  return out;
}

/** EXPOSED_PORT_RE is an exposed port as OCI image configs key them: `80/tcp`, `53/udp`, `8080`. */
export const EXPOSED_PORT_RE = /^([1-9]\d{0,4})(\/(tcp|udp))?$/;

/** parseExposedPort reads an exposed port (`80/tcp`, `8080` meaning tcp), or undefined when it is not one. */
export function parseExposedPort(s: string): { port: number; protocol: Protocol } | undefined {
  const m = EXPOSED_PORT_RE.exec(s);
  if (!m || Number(m[1]) > 65535) return undefined;
  return { port: Number(m[1]), protocol: (m[3] as Protocol | undefined) ?? "tcp" };
}

/** formatPort writes a published port for people, as docker does: `127.0.0.1:8080->80/tcp`. */
export function formatPort(p: PublishedPort): string {
  return `${p.hostIp}:${p.hostPort}->${p.guestPort}/${p.protocol}`;
}
