import { resolve as resolvePath } from "node:path";
import { OvmsError } from "../core/errors.js";
import { formatSize } from "../core/size.js";
import type { Store } from "../store/store.js";
import type { Artifact } from "../artifact/artifact.js";
import type { PreparedArtifact } from "../artifact/prepare.js";
import type { PortRequest, StartOptions } from "../runtime/types.js";
import { parseExposedPort } from "../core/ports.js";
import type { InjectRequest, StartRequest } from "../api/types.generated.js";
import { isPathLike } from "../api/paths.js";
import type { Policy } from "../sign/policy.js";
import { badRequest } from "./contract.js";
import { fromPortRequest } from "./wire.js";
import type { Logger } from "./log.js";

// What the controller checks and translates in a request before the runtime sees it.

/**
 * admit applies the policy to an artifact about to start: judged by where it came from (the
 * registry repository its pull recorded, `file://PATH` for a path, this host otherwise), its
 * signatures read from the store. A refusal is POLICY_DENIED (403) naming the rule and why.
 */
export async function admit(
  policy: Policy,
  store: Store,
  log: Logger,
  asked: string,
  a: Artifact,
): Promise<void> {
  const { enforce, originOf } = await import("../sign/admission.js");
  const from = isPathLike(asked) ? { repository: `file://${resolvePath(asked)}` } : originOf(a.descriptor);
  try {
    const d = await enforce(
      policy,
      { reference: asked, descriptor: a.descriptor, ramSnapshot: !!a.ovms.ramSnapshot, from },
      store,
    );
    log.info("admitted", { reference: asked, digest: a.descriptor.digest, rule: d.rule, why: d.reason });
  } catch (e) {
    log.info("refused by policy", {
      reference: asked,
      digest: a.descriptor.digest,
      error: (e as Error).message,
    });
    throw e;
  }
}

/** decodeInjection decodes an inject's data; bad base64 is a 400 naming the member. */
export function decodeInjection(mmio: InjectRequest["content"]["mmio"]): Buffer {
  if ((mmio.encoding ?? "base64") !== "base64") return Buffer.from(mmio.data, "utf8");
  const s = mmio.data.replace(/\s+/g, "");
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) {
    throw badRequest("POST /inject", [{ path: "/content/mmio/data", message: "is not valid base64" }]);
  }
  return Buffer.from(s, "base64");
}

/**
 * refuseResized refuses, before the runtime is asked, a restore whose memory or vCPU override
 * differs from the snapshot (rfc §5.6), with sizes written as sizes. The runtime checks the
 * other items (machine, accel, network) itself.
 */
export function refuseResized(p: PreparedArtifact, o: NonNullable<StartRequest["overrides"]>): void {
  const snap = p.ramSnapshot!.metadata;
  const bad: string[] = [];
  if (o.memory !== undefined && o.memory !== snap.memoryBytes)
    bad.push(`memory: the snapshot has ${formatSize(snap.memoryBytes)}, ${formatSize(o.memory)} asked`);
  if (o.cpus !== undefined && o.cpus !== snap.vcpus)
    bad.push(`vcpus: the snapshot has ${snap.vcpus}, ${o.cpus} asked`);
  if (bad.length)
    throw new OvmsError(
      "MANIFEST_INVALID",
      `cannot restore ${p.reference}: ${bad.join("; ")} (a restore keeps the snapshot's memory and vCPUs)`,
    );
}

/** startOptions are the API's overrides in the runtime's words. */
export function startOptions(
  o: NonNullable<StartRequest["overrides"]>,
  prepared?: Pick<PreparedArtifact, "manifest" | "bootstrap">,
): StartOptions {
  const ports = [...(o.ports ?? []).map(fromPortRequest), ...(o.publish_all ? exposed(o, prepared) : [])];
  return {
    ...(o.name !== undefined ? { name: o.name } : {}),
    ...(o.memory !== undefined ? { memory: o.memory } : {}),
    ...(o.cpus !== undefined ? { cpus: o.cpus } : {}),
    ...(o.cmdline !== undefined ? { cmdline: o.cmdline } : {}),
    ...(o.accel !== undefined ? { accel: o.accel } : {}),
    ...(o.machine !== undefined ? { machine: o.machine } : {}),
    ...(o.network !== undefined ? { network: o.network } : {}),
    ...(o.ports !== undefined || ports.length ? { ports } : {}),
    ...(o.mac !== undefined ? { mac: o.mac } : {}),
    ...(o.boot_timeout_ms !== undefined ? { bootTimeoutMs: o.boot_timeout_ms } : {}),
    ...(o.args !== undefined ? { args: o.args } : {}),
    ...(o.env !== undefined ? { env: o.env } : {}),
    ...(o.stdin !== undefined ? { stdin: o.stdin } : {}),
  };
}

/**
 * exposed is what `publish_all` adds: each port the artifact declares (manifest
 * network.exposedPorts, a converted image's bootstrap exposedPorts) that `ports` does not
 * publish already, on a free host port of 127.0.0.1.
 */
function exposed(
  o: NonNullable<StartRequest["overrides"]>,
  prepared: Pick<PreparedArtifact, "manifest" | "bootstrap"> | undefined,
): PortRequest[] {
  const declared = [
    ...(prepared?.manifest.network?.exposedPorts ?? []),
    ...(prepared?.bootstrap?.exposedPorts ?? []),
  ];
  const taken = new Set((o.ports ?? []).map((p) => `${p.guest_port}/${p.protocol ?? "tcp"}`));
  const out: PortRequest[] = [];
  for (const spec of declared) {
    const p = parseExposedPort(spec);
    if (!p || taken.has(`${p.port}/${p.protocol}`)) continue;
    taken.add(`${p.port}/${p.protocol}`);
    out.push({ guestPort: p.port, protocol: p.protocol });
  }
  return out;
}
