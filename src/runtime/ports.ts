import { createSocket } from "node:dgram";
import { createServer } from "node:net";
import { DEFAULT_HOST_IP, formatPort, isIPv4 } from "../core/ports.js";
import { RuntimeError } from "./runtime-error.js";
import type { PortRequest, Protocol, PublishedPort } from "./types.js";

/**
 * Probe binds a host address and port the way the VMM will, then lets go; it resolves with
 * the port it got (the free one the kernel picked when asked for port 0) or rejects with the
 * system error (EADDRINUSE, EACCES, EADDRNOTAVAIL).
 */
export type Probe = (protocol: Protocol, hostIp: string, hostPort: number) => Promise<number>;

/** Holder is an instance that publishes ports, named for messages. */
export interface Holder {
  id: string;
  name: string;
  ports: PublishedPort[];
}

/** Claim is ports set aside for one start until the instance holds them (or the start failed). */
export interface Claim {
  ports: PublishedPort[];
  /** release forgets the claim: call it once the instance's record holds the ports, or on failure. */
  release(): void;
}

/**
 * bindProbe is the real Probe: a TCP listener or a UDP socket on the address, closed at once.
 * `exclusive` keeps Node from sharing a handle with cluster workers; Node's SO_REUSEADDR
 * matches what QEMU's SLIRP sets, so a port in TIME_WAIT counts as free for both.
 */
export const bindProbe: Probe = (protocol, hostIp, hostPort) =>
  new Promise((resolve, reject) => {
    if (protocol === "tcp") {
      const srv = createServer();
      srv.once("error", reject);
      srv.listen({ host: hostIp, port: hostPort, exclusive: true }, () => {
        const got = (srv.address() as { port: number }).port;
        srv.close(() => resolve(got));
      });
    } else {
      const sock = createSocket("udp4");
      sock.once("error", (e) => {
        sock.close();
        reject(e);
      });
      sock.bind({ address: hostIp, port: hostPort, exclusive: true }, () => {
        const got = sock.address().port;
        sock.close(() => resolve(got));
      });
    }
  });

/** overlaps tells whether two bindings would clash: same protocol and port, and an address in common. */
function overlaps(a: PublishedPort, b: PortRequest & { hostIp: string }): boolean {
  return (
    a.protocol === (b.protocol ?? "tcp") &&
    a.hostPort === b.hostPort &&
    (a.hostIp === b.hostIp || a.hostIp === "0.0.0.0" || b.hostIp === "0.0.0.0")
  );
}

/**
 * PortBook decides which host ports a starting instance may publish (rfc §6.6). A port is
 * refused with CONFLICT when an instance of this runtime publishes it (checked and set aside
 * synchronously, so two starts in flight can never both get it) or when another program has
 * it (found by binding it, `probe`, before the VMM starts). Between the probe and the VMM's
 * own bind another program may still take the port: the VMM then fails to bind, and the
 * runtime refuses the start the same way (see forwardFailure in qemu/network.ts).
 */
export class PortBook {
  private readonly inFlight = new Set<PublishedPort[]>();

  constructor(private readonly probe: Probe = bindProbe) {}

  /**
   * claim checks `requests` against the ports `holders` publish and those of other starts in
   * flight, then binds each to be sure the host can give it, and sets them aside. Requests
   * without a host port get a free one from the kernel.
   */
  async claim(requests: PortRequest[], holders: Iterable<Holder>): Promise<Claim> {
    const hs = [...holders];
    const wanted = requests.map((r) => ({
      ...r,
      protocol: r.protocol ?? "tcp",
      hostIp: r.hostIp ?? DEFAULT_HOST_IP,
    }));
    wanted.forEach((w, i) => {
      if (!isIPv4(w.hostIp))
        throw new RuntimeError(
          "INVALID_ARGUMENT",
          `ports[${i}]: host address "${w.hostIp}" is not an IPv4 address`,
        );
      if (w.hostPort === undefined) return;
      const twin = wanted.findIndex(
        (o, j) => j < i && o.hostPort !== undefined && overlaps({ ...o, hostPort: o.hostPort }, w),
      );
      if (twin >= 0)
        throw new RuntimeError(
          "INVALID_ARGUMENT",
          `ports[${i}]: host port ${w.hostIp}:${w.hostPort}/${w.protocol} is already asked for by ports[${twin}]`,
        );
      for (const h of hs)
        for (const p of h.ports)
          if (overlaps(p, w))
            throw new RuntimeError(
              "CONFLICT",
              `host port ${w.hostIp}:${w.hostPort}/${w.protocol} is already published by instance ${h.name} (${h.id}) as ${formatPort(p)}`,
              { details: { port: `${w.hostIp}:${w.hostPort}/${w.protocol}`, instance_id: h.id } },
            );
      for (const set of this.inFlight)
        for (const p of set)
          if (overlaps(p, w))
            throw new RuntimeError(
              "CONFLICT",
              `host port ${w.hostIp}:${w.hostPort}/${w.protocol} is being published by another instance that is starting`,
              { details: { port: `${w.hostIp}:${w.hostPort}/${w.protocol}` } },
            );
    });
    // Set aside before the first await: a start in flight sees these at once.
    const held: PublishedPort[] = wanted.filter((w) => w.hostPort !== undefined) as PublishedPort[];
    this.inFlight.add(held);
    const release = () => void this.inFlight.delete(held);
    try {
      const out: PublishedPort[] = [];
      for (const w of wanted) {
        const got = await this.probe(w.protocol, w.hostIp, w.hostPort ?? 0).catch(
          (e: NodeJS.ErrnoException) => {
            throw probeError(e, w);
          },
        );
        const p = { protocol: w.protocol, hostIp: w.hostIp, hostPort: got, guestPort: w.guestPort };
        // A port the kernel picked is set aside too, before the next probe could pick it again.
        if (w.hostPort === undefined) held.push(p);
        out.push(p);
      }
      return { ports: out, release };
    } catch (e) {
      release();
      throw e;
    }
  }
}

/** probeError says in words why a host port cannot be published. */
function probeError(
  e: NodeJS.ErrnoException,
  w: PortRequest & { hostIp: string; protocol: Protocol },
): RuntimeError {
  const port = `${w.hostIp}:${w.hostPort ?? 0}/${w.protocol}`;
  const details = { details: { port } };
  switch (e.code) {
    case "EADDRINUSE":
      return new RuntimeError(
        "CONFLICT",
        `host port ${port} is already in use by another program: publish another host port, or leave it out to get a free one`,
        details,
      );
    case "EACCES":
      return new RuntimeError(
        "INVALID_ARGUMENT",
        `host port ${port}: binding a port below 1024 needs root (or CAP_NET_BIND_SERVICE); publish a port of 1024 or above`,
        details,
      );
    case "EADDRNOTAVAIL":
      return new RuntimeError(
        "INVALID_ARGUMENT",
        `host port ${port}: ${w.hostIp} is not an address of this host (use 127.0.0.1, 0.0.0.0 or one of its interfaces)`,
        details,
      );
    default:
      return new RuntimeError(
        "INVALID_ARGUMENT",
        `host port ${port} cannot be published: ${e.message}`,
        details,
      );
  }
}
