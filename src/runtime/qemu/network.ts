import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { run } from "../../artifact/exec.js";
import type { PreparedArtifact } from "../../artifact/prepare.js";
import { checkMac, formatPort } from "../../core/ports.js";
import { RuntimeError } from "../runtime-error.js";
import type { Machine, PortRequest, PublishedPort, StartOptions } from "../types.js";
import { QEMU_BINARY } from "./accel.js";
import type { QmpClient } from "./qmp-client.js";

/**
 * An instance's network on QEMU (rfc §6.6): one virtio-net NIC on QEMU's user-mode network
 * (SLIRP: a private network per QEMU process, no root, no bridge), host ports forwarded to
 * the guest with `hostfwd`, outbound access cut with `restrict=on` in mode `restricted`.
 */

/** NETDEV_ID is the id of an instance's one user-mode netdev (`hostfwd_add` names it). */
export const NETDEV_ID = "net0";

/** NetworkDraft is the network of a planned instance: its NIC and the ports it asks for. */
export interface NetworkDraft {
  mode: "user" | "restricted";
  mac: string;
  ports: PortRequest[];
  /** The ports as bound for this instance, once the runtime has claimed them. */
  published?: PublishedPort[];
}

/** QemuNetwork is what the command line needs: the NIC and the forwards set up at start-up. */
export interface QemuNetwork {
  mode: "user" | "restricted";
  mac: string;
  /** Set up when QEMU starts; a warm-pool process starts with none and gets them over QMP. */
  forwards: PublishedPort[];
}

/**
 * newMac is a fresh MAC address in QEMU's locally administered range 52:54:00:xx:xx:xx: each
 * cold-booted instance gets its own.
 */
export function newMac(): string {
  return ["52", "54", "00", ...[...randomBytes(3)].map((b) => b.toString(16).padStart(2, "0"))].join(":");
}

/**
 * draftNetwork decides an instance's network from the overrides and the artifact, refusing
 * contradictions (INVALID_ARGUMENT) before anything is created; undefined means no NIC. A
 * cold boot gets a NIC when it publishes ports, asks for one, or its manifest declares
 * `network`; a restore has one exactly when its snapshot had one, with the snapshot's MAC
 * (the guest keeps its MAC in memory, and the device state must match: see
 * networkMismatches for what is refused).
 */
export function draftNetwork(a: PreparedArtifact, opts: StartOptions): NetworkDraft | undefined {
  const ports = opts.ports ?? [];
  ports.forEach((p, i) => {
    for (const [k, v] of [
      ["guestPort", p.guestPort],
      ["hostPort", p.hostPort],
    ] as const)
      if (v !== undefined && !(Number.isInteger(v) && v >= 1 && v <= 65535))
        throw new RuntimeError("INVALID_ARGUMENT", `ports[${i}].${k}: ${v} is not a port (1-65535)`);
  });
  const snap = a.ramSnapshot?.metadata;
  if (snap) {
    if (!snap.network) return undefined;
    return { mode: opts.network === "restricted" ? "restricted" : "user", mac: snap.network.mac, ports };
  }
  const declared = a.manifest.network;
  const mode = opts.network ?? (ports.length || declared ? "user" : "none");
  if (mode === "none") {
    if (ports.length)
      throw new RuntimeError(
        "INVALID_ARGUMENT",
        "published ports need a network, and network none gives the instance no NIC (use user or restricted)",
      );
    if (declared?.required)
      throw new RuntimeError(
        "INVALID_ARGUMENT",
        `${a.reference} needs a network interface (network.required in its manifest), so it cannot run with network none; restricted gives it a NIC without outbound access`,
      );
    if (opts.mac) throw new RuntimeError("INVALID_ARGUMENT", "mac: network none gives the instance no NIC");
    return undefined;
  }
  return { mode, mac: opts.mac ? checkMac(opts.mac) : newMac(), ports };
}

/**
 * networkMismatches names each network override that contradicts the snapshot being restored
 * (rfc §5.6): a snapshot with a NIC holds its device state, so it can only be restored with
 * one, with the same MAC; a snapshot without one cannot publish ports.
 */
export function networkMismatches(
  snap: { network?: { mac: string } },
  opts: Pick<StartOptions, "network" | "ports" | "mac">,
): string[] {
  const bad: string[] = [];
  if (!snap.network) {
    if (opts.network && opts.network !== "none")
      bad.push(`network: the snapshot has no NIC, asked ${opts.network}`);
    if (opts.ports?.length)
      bad.push(
        "ports: the snapshot has no NIC to publish ports to (snapshot an instance started with a network)",
      );
    if (opts.mac) bad.push("mac: the snapshot has no NIC");
  } else {
    if (opts.network === "none")
      bad.push(
        `network: the snapshot's device state holds a NIC (${snap.network.mac}), asked none (restricted cuts outbound access instead)`,
      );
    if (opts.mac && opts.mac.toLowerCase() !== snap.network.mac)
      bad.push(
        `mac: snapshot ${snap.network.mac}, asked ${opts.mac} (a restored guest keeps its MAC in memory)`,
      );
  }
  return bad;
}

/** hostfwdRule is a published port as QEMU's `hostfwd` writes it: `tcp:127.0.0.1:8080-:80`. */
export function hostfwdRule(p: PublishedPort): string {
  return `${p.protocol}:${p.hostIp}:${p.hostPort}-:${p.guestPort}`;
}

/**
 * netdevArgv is the NIC on the command line: a user-mode netdev with its forwards (and
 * restrict=on without outbound access), and virtio-net on the machine's bus. q35 gets no
 * option ROM (romfile=): the guest boots its kernel directly and never network-boots.
 */
export function netdevArgv(n: QemuNetwork, machine: Machine): string[] {
  const netdev = [`user,id=${NETDEV_ID}`];
  if (n.mode === "restricted") netdev.push("restrict=on");
  for (const p of n.forwards) netdev.push(`hostfwd=${hostfwdRule(p)}`);
  const nic =
    machine === "microvm"
      ? `virtio-net-device,netdev=${NETDEV_ID},mac=${n.mac}`
      : `virtio-net-pci,netdev=${NETDEV_ID},mac=${n.mac},romfile=`;
  return ["-netdev", netdev.join(","), "-device", nic];
}

/**
 * forwardFailure finds, in QEMU's output, the forward it could not set up at start-up (its
 * host port was taken after the runtime's probe): the rule, or undefined.
 */
export function forwardFailure(text: string): string | undefined {
  return /Could not set up host forwarding rule '([^']+)'/.exec(text)?.[1];
}

/**
 * lostPortError is the CONFLICT a start ends with when QEMU could not bind a published port
 * that was free when the runtime probed it: another program took it in between.
 */
export function lostPortError(rule: string): RuntimeError {
  return new RuntimeError(
    "CONFLICT",
    `host port ${rule.replace(/^(tcp|udp):(.*)-:\d+$/, "$2/$1")} was taken by another program while the instance was starting; nothing was started: try again, or publish another host port`,
    { details: { port: rule } },
  );
}

/**
 * publish adds forwards to a running QEMU (HMP `hostfwd_add` through QMP): how a warm-pool
 * process gets the ports of the instance it becomes. HMP reports failure as text, not as a
 * QMP error; on the first failure the forwards added so far are removed and CONFLICT thrown.
 */
export async function publish(qmp: QmpClient, ports: PublishedPort[]): Promise<void> {
  const hmp = (line: string) => qmp.execute<string>("human-monitor-command", { "command-line": line });
  for (let i = 0; i < ports.length; i++) {
    const out = (await hmp(`hostfwd_add ${NETDEV_ID} ${hostfwdRule(ports[i])}`)).trim();
    if (out === "") continue;
    for (const p of ports.slice(0, i))
      await hmp(`hostfwd_remove ${NETDEV_ID} ${p.protocol}:${p.hostIp}:${p.hostPort}`).catch(() => "");
    throw new RuntimeError(
      "CONFLICT",
      `host port ${formatPort(ports[i])}: QEMU could not bind it (${out}); another program may have taken it`,
      { details: { port: hostfwdRule(ports[i]) } },
    );
  }
}

/**
 * publishesLowPorts tells whether a NIC's forwards, set up when QEMU starts, include a host
 * port only a process with CAP_NET_BIND_SERVICE may bind (the confined QEMU then keeps it).
 */
export function publishesLowPorts(n: QemuNetwork | undefined): boolean {
  if (!n?.forwards.length) return false;
  const low = unprivilegedPortStart();
  return n.forwards.some((p) => p.hostPort < low);
}

/** unprivilegedPortStart is the lowest port a process without CAP_NET_BIND_SERVICE may bind. */
function unprivilegedPortStart(): number {
  try {
    return Number(readFileSync("/proc/sys/net/ipv4/ip_unprivileged_port_start", "utf8").trim());
  } catch {
    return 1024;
  }
}

/**
 * poolServes tells whether a warm-pool process (started paused, with the snapshot's NIC and no
 * forwards) can become the planned instance: same NIC and mode (SLIRP options are fixed at
 * start-up), and forwards it can still bind over QMP. A pooled QEMU runs as the QEMU user
 * without capabilities, so ports below ip_unprivileged_port_start need a fresh QEMU, which
 * binds them from its command line (before `-runas` drops root, or confined with
 * CAP_NET_BIND_SERVICE kept for it).
 */
export function poolServes(
  pooled: { mode: string; mac?: string } | undefined,
  wanted: NetworkDraft | undefined,
  runAs: string | undefined,
): boolean {
  if (!pooled || !wanted) return !pooled && !wanted;
  if (pooled.mode !== wanted.mode || pooled.mac !== wanted.mac) return false;
  if (!runAs) return true;
  const low = unprivilegedPortStart();
  return (wanted.published ?? []).every((p) => p.hostPort >= low);
}

/**
 * portHolders are the instances whose ports are taken: every live one that publishes some
 * (an ended instance's QEMU has let its ports go).
 */
export function* portHolders(
  recs: Iterable<{ instance_id: string; name: string; state: string; network?: { ports: PublishedPort[] } }>,
): Generator<{ id: string; name: string; ports: PublishedPort[] }> {
  for (const r of recs)
    if (r.network?.ports.length && r.state !== "exited" && r.state !== "failed")
      yield { id: r.instance_id, name: r.name, ports: r.network.ports };
}

/**
 * publishPooled gives a warm-pool process, started without forwards, the published ports of
 * the instance it becomes (recorded on it), before its guest runs; when QEMU cannot bind one,
 * the process is discarded and the start refused (publish's CONFLICT).
 */
export async function publishPooled<
  T extends { rec: { network?: { ports: PublishedPort[] } }; live: { qmp?: QmpClient } },
>(pooled: T, ports: PublishedPort[] | undefined, discard: () => Promise<void>): Promise<T> {
  if (!ports?.length) return pooled;
  try {
    await publish(pooled.live.qmp!, ports);
  } catch (e) {
    await discard();
    throw e;
  }
  pooled.rec.network!.ports = ports;
  return pooled;
}

let userNetdev: Promise<boolean> | undefined;

/**
 * hasUserNetworking tells, once per process, whether this QEMU has user-mode networking
 * (`-netdev help` lists `user`): since 7.2 QEMU no longer bundles SLIRP, and a build without
 * libslirp has none.
 */
export function hasUserNetworking(): Promise<boolean> {
  userNetdev ??= run(QEMU_BINARY, ["-netdev", "help"]).then(
    (out) => /^user$/m.test(out),
    () => false,
  );
  return userNetdev;
}

/** requireUserNetworking refuses, with NOT_IMPLEMENTED, a NIC this QEMU cannot give. */
export async function requireUserNetworking(): Promise<void> {
  if (!(await hasUserNetworking()))
    throw new RuntimeError(
      "NOT_IMPLEMENTED",
      `${QEMU_BINARY} has no user-mode networking (-netdev user; QEMU 7.2 and later have it only when built with libslirp): run with network none, or install a QEMU built with libslirp (Debian: qemu-system-x86)`,
    );
}
