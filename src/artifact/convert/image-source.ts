import { existsSync, statSync } from "node:fs";
import { resolve as resolvePath } from "node:path";
import type { Readable } from "node:stream";
import { OvmsError } from "../../core/errors.js";
import { MediaType } from "../../core/media-types.js";
import type { Descriptor } from "../../core/oci.js";
import { formatReference, parseReference, type Reference } from "../../core/reference.js";
import { RegistryClient } from "../../registry/client.js";
import { MAX_MANIFEST } from "../../registry/manifest-bytes.js";
import { LayoutSource } from "../layout-source.js";

/**
 * ConvertSource is what `ovm convert SOURCE` names: a container image in a registry, a
 * container image in an OCI image layout (`oci:DIR[:TAG]`, as skopeo writes it), or a
 * runtime-spec `config.json` with a `vm` section (recognised by its content).
 */
export type ConvertSource =
  | { kind: "registry"; reference: Reference; display: string }
  | { kind: "layout"; dir: string; tag?: string; display: string }
  | { kind: "vm-config"; path: string; display: string };

/** parseSource reads SOURCE: `oci:DIR[:TAG]`, `docker://REF`, a file path, or a plain reference. */
export function parseSource(source: string): ConvertSource {
  if (source.startsWith("oci:")) {
    const rest = source.slice(4);
    if (!rest) throw new OvmsError("USAGE", `${source}: name the layout folder, oci:DIR[:TAG]`);
    // DIR may itself hold a colon: only a suffix after the last one that is not a folder is a tag.
    const colon = rest.lastIndexOf(":");
    const split = colon > 0 && !existsSync(rest) && !rest.slice(colon + 1).includes("/");
    const dir = resolvePath(split ? rest.slice(0, colon) : rest);
    const out: ConvertSource = { kind: "layout", dir, display: source };
    if (split) out.tag = rest.slice(colon + 1);
    return out;
  }
  if (source.startsWith("docker://")) {
    const ref = parseReference(source.slice("docker://".length));
    return { kind: "registry", reference: ref, display: formatReference(ref) };
  }
  if (/^(\.{0,2}\/|~)/.test(source) || (existsSync(source) && statSync(source).isFile()))
    return { kind: "vm-config", path: resolvePath(source), display: source };
  const ref = parseReference(source);
  return { kind: "registry", reference: ref, display: formatReference(ref) };
}

/** ImageStore reads the manifests and blobs of one container image source, verified. */
export interface ImageStore {
  /** name is the source for messages and the artifact's base-name annotation. */
  readonly name: string;
  /** manifest reads a manifest or index (an index entry), or the source's own one (its tag) when none is given. */
  manifest(entry?: Pick<Descriptor, "digest" | "size">): Promise<{ descriptor: Descriptor; bytes: Buffer }>;
  /** blob streams a blob; the stream fails at its end when size or digest is wrong; `signal` stops it. */
  blob(desc: Descriptor, signal?: AbortSignal): Promise<Readable>;
  close(): Promise<void>;
}

/** openImageStore opens a registry repository (the project's registry client) or an OCI layout. */
export async function openImageStore(
  src: Exclude<ConvertSource, { kind: "vm-config" }>,
): Promise<ImageStore> {
  if (src.kind === "registry") {
    const client = new RegistryClient({ retry: { attempts: 3 } });
    const repo = client.repository(src.reference);
    const tag = src.reference.digest ?? src.reference.tag ?? "latest";
    return {
      name: src.display,
      manifest: async (entry) => {
        const r = await repo.fetchManifest(entry?.digest ?? tag);
        return { descriptor: r.descriptor, bytes: r.bytes };
      },
      blob: (desc, signal) => repo.fetch(desc, signal ? { signal } : {}),
      close: () => client.close(),
    };
  }
  if (!existsSync(src.dir))
    throw new OvmsError("FILE_NOT_FOUND", `${src.display}: no such folder ${src.dir}`);
  const layout = await LayoutSource.open(src.dir);
  const readAll = async (s: Readable) => {
    const chunks: Buffer[] = [];
    for await (const c of s) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  };
  const top = async (): Promise<Descriptor> => {
    if (src.tag) return layout.resolve(src.tag);
    const all = layout.index.manifests;
    if (all.length === 1) return all[0];
    throw new OvmsError(
      "USAGE",
      `${src.display}: the layout holds ${all.length} manifests; name one as oci:DIR:TAG (has: ${layout.names().join(", ") || "no names"})`,
    );
  };
  return {
    name: src.display,
    manifest: async (entry) => {
      const d = entry ?? (await top());
      if (d.size > MAX_MANIFEST)
        throw new OvmsError("IMAGE_UNSUPPORTED", `${src.display}: manifest ${d.digest} is larger than 4 MiB`);
      // LayoutSource.fetch verifies size and digest while it streams.
      const bytes = await readAll(await layout.fetch(d));
      const doc = JSON.parse(bytes.toString("utf8")) as { mediaType?: string; manifests?: unknown };
      const mediaType = doc.mediaType ?? (doc.manifests ? MediaType.OciIndex : MediaType.OciManifest);
      return { descriptor: { mediaType, digest: d.digest, size: bytes.length }, bytes };
    },
    blob: async (desc, signal) => {
      const s = await layout.fetch(desc);
      signal?.addEventListener("abort", () => s.destroy(new OvmsError("CANCELLED", "cancelled")), {
        once: true,
      });
      return s;
    },
    close: async () => {},
  };
}
