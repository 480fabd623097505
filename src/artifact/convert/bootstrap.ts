import { constants } from "node:os";
import { readFile } from "node:fs/promises";
import { validateBootstrap, type BootstrapConfig } from "../../core/bootstrap.js";
import { OvmsError } from "../../core/errors.js";
import { MediaType } from "../../core/media-types.js";
import type { ImageConfig } from "./image.js";

/**
 * bootstrapFromImage makes the bootstrap config (schemas/bootstrap.v1.json) of an image from
 * its OCI config: entrypoint, cmd, env, working folder and stop signal as they are; exposed
 * ports as sorted `PORT/PROTO`; the user resolved to numbers against the image's own
 * /etc/passwd and /etc/group (as a container runtime does when it starts the image), which
 * `readText` reads from the merged root. Members are written in one fixed order, so the same
 * image always gives the same bytes.
 */
export async function bootstrapFromImage(
  image: ImageConfig,
  readText: (path: string) => Promise<string | undefined>,
): Promise<BootstrapConfig> {
  const c = image.config ?? {};
  const b: BootstrapConfig = { schemaVersion: 1, mediaType: MediaType.Bootstrap };
  if (c.Entrypoint?.length) b.entrypoint = [...c.Entrypoint];
  if (c.Cmd?.length) b.cmd = [...c.Cmd];
  if (c.Env?.length) b.env = [...c.Env];
  if (c.WorkingDir) b.workdir = c.WorkingDir.startsWith("/") ? c.WorkingDir : `/${c.WorkingDir}`;
  if (c.User) b.user = await resolveUser(c.User, readText);
  const ports = Object.keys(c.ExposedPorts ?? {}).map((p) =>
    p.includes("/") ? p.toLowerCase() : `${p}/tcp`,
  );
  if (ports.length) b.exposedPorts = [...new Set(ports)].sort(comparePorts);
  if (c.StopSignal) b.stopSignal = signalName(c.StopSignal);
  return validateBootstrap(b, "the image's config as a bootstrap config");
}

/**
 * resolveUser reads an image's User (`name`, `uid`, `name:group`, `uid:gid`, …): names are
 * looked up in the image's /etc/passwd and /etc/group; a user given by number alone takes its
 * passwd group, or group 0 when it has no entry (as docker does). A name the image does not
 * know is IMAGE_UNSUPPORTED.
 */
async function resolveUser(
  spec: string,
  readText: (path: string) => Promise<string | undefined>,
): Promise<{ uid: number; gid: number; name: string }> {
  const [u, g] = spec.split(":", 2);
  const passwd = table(await readText("etc/passwd"));
  const group = table(await readText("etc/group"));
  const num = (s: string) => (/^\d+$/.test(s) ? Number(s) : undefined);
  let uid = num(u);
  let gid: number | undefined;
  const entry =
    uid === undefined ? passwd.find((f) => f[0] === u) : passwd.find((f) => num(f[2] ?? "") === uid);
  if (uid === undefined) {
    if (!entry)
      throw new OvmsError("IMAGE_UNSUPPORTED", `the image's user "${spec}": no user ${u} in its /etc/passwd`);
    uid = num(entry[2] ?? "");
  }
  if (g !== undefined && g !== "") {
    gid = num(g) ?? num(group.find((f) => f[0] === g)?.[2] ?? "");
    if (gid === undefined)
      throw new OvmsError("IMAGE_UNSUPPORTED", `the image's user "${spec}": no group ${g} in its /etc/group`);
  } else gid = num(entry?.[3] ?? "") ?? 0;
  if (uid === undefined)
    throw new OvmsError("IMAGE_UNSUPPORTED", `the image's user "${spec}": its /etc/passwd entry has no uid`);
  return { uid, gid, name: spec };
}

/** table splits a passwd/group file into fields. */
function table(text: string | undefined): string[][] {
  return (text ?? "")
    .split("\n")
    .filter((l) => l && !l.startsWith("#"))
    .map((l) => l.split(":"));
}

/** signalName turns `SIGTERM`, `TERM` or `15` into `SIGTERM`; an unknown one is IMAGE_UNSUPPORTED. */
export function signalName(s: string): string {
  const sigs = constants.signals as Record<string, number>;
  const name = /^\d+$/.test(s)
    ? Object.keys(sigs).find((k) => sigs[k] === Number(s))
    : `SIG${s.toUpperCase().replace(/^SIG/, "")}`;
  if (!name || !(name in sigs))
    throw new OvmsError("IMAGE_UNSUPPORTED", `the image's stop signal "${s}" is not a signal`);
  return name;
}

function comparePorts(a: string, b: string): number {
  const [pa, qa] = a.split("/");
  const [pb, qb] = b.split("/");
  return Number(pa) - Number(pb) || (qa < qb ? -1 : qa > qb ? 1 : 0);
}

/**
 * readBootstrap reads and checks a containerMode artifact's bootstrap config from the store
 * blob at `path` (already verified against its digest by the caller).
 */
export async function readBootstrap(path: string, what: string): Promise<BootstrapConfig> {
  let doc: unknown;
  try {
    doc = JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    throw new OvmsError(
      "ARTIFACT_INVALID",
      `${what}: the bootstrap config is not JSON: ${(e as Error).message}`,
    );
  }
  return validateBootstrap(doc, `${what}: bootstrap config`);
}
