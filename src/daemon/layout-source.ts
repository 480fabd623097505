import { createReadStream } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { Hasher, digestHex, isDigest, type Digest } from "../core/digest.js";
import { OvmsError } from "../core/errors.js";
import { Annotation, MediaType } from "../core/media-types.js";
import type { Descriptor, ImageIndex, ImageManifest } from "../core/oci.js";
import type { ContentStore } from "../core/content.js";

/**
 * LayoutSource reads an OCI image layout someone handed the daemon (a folder, or a tar
 * unpacked into a temp folder) without writing to it: the source side of `copy` when an
 * artifact is imported into the store. Blobs are verified while they stream, like the store's.
 * https://github.com/opencontainers/image-spec/blob/v1.1.0/image-layout.md
 */
export class LayoutSource implements ContentStore {
  private constructor(
    readonly root: string,
    readonly index: ImageIndex,
  ) {}

  /** open reads `root`'s oci-layout and index.json, or says why it is not a layout. */
  static async open(root: string): Promise<LayoutSource> {
    const layout = await readFile(join(root, "oci-layout"), "utf8").catch(() => undefined);
    if (layout === undefined) {
      throw new OvmsError("MANIFEST_INVALID", `${root}: not an OCI image layout (no oci-layout file)`);
    }
    let index: ImageIndex;
    try {
      index = JSON.parse(await readFile(join(root, "index.json"), "utf8")) as ImageIndex;
    } catch (e) {
      throw new OvmsError("MANIFEST_INVALID", `${root}/index.json: ${(e as Error).message}`);
    }
    if (!Array.isArray(index.manifests))
      throw new OvmsError("MANIFEST_INVALID", `${root}/index.json: no manifests array`);
    return new LayoutSource(root, index);
  }

  private blobPath(digest: Digest): string {
    return join(this.root, "blobs", "sha256", digestHex(digest));
  }

  async exists(desc: Pick<Descriptor, "digest">): Promise<boolean> {
    return (await stat(this.blobPath(desc.digest)).catch(() => undefined)) !== undefined;
  }

  async fetch(desc: Pick<Descriptor, "digest" | "size">): Promise<Readable> {
    if (!isDigest(desc.digest))
      throw new OvmsError("MANIFEST_INVALID", `${this.root}: "${desc.digest}" is not a sha256 digest`);
    if (!(await this.exists(desc))) {
      throw new OvmsError(
        "ARTIFACT_INCOMPLETE",
        `${this.root}: blob ${desc.digest} is missing from the layout`,
      );
    }
    const hasher = new Hasher({
      digest: desc.digest,
      size: desc.size,
      what: `${this.root}: blob ${desc.digest}`,
    });
    return createReadStream(this.blobPath(desc.digest)).pipe(hasher);
  }

  async push(): Promise<void> {
    throw new OvmsError("INTERNAL", `${this.root}: an imported layout is read-only`);
  }

  async tag(): Promise<void> {
    throw new OvmsError("INTERNAL", `${this.root}: an imported layout is read-only`);
  }

  /** resolve finds a manifest by digest, by its full ref name, or by the tag part of it. */
  async resolve(reference: string): Promise<Descriptor> {
    const entries = this.index.manifests;
    const hit = isDigest(reference)
      ? entries.find((d) => d.digest === reference)
      : (entries.find((d) => d.annotations?.[Annotation.RefName] === reference) ??
        entries.find((d) => {
          const name = d.annotations?.[Annotation.RefName] ?? "";
          return name.endsWith(`:${reference}`) && !name.slice(0, -reference.length - 1).includes("@");
        }));
    if (!hit)
      throw new OvmsError(
        "ARTIFACT_NOT_FOUND",
        `${this.root}: no manifest named "${reference}" in the layout (has: ${this.names().join(", ") || "no names"})`,
      );
    return { mediaType: hit.mediaType ?? MediaType.OciManifest, digest: hit.digest, size: hit.size };
  }

  /** names lists the ref names of index.json. */
  names(): string[] {
    return this.index.manifests
      .map((d) => d.annotations?.[Annotation.RefName])
      .filter((n): n is string => !!n);
  }

  /**
   * artifacts lists the layout's entries that are OVMS artifacts (by artifactType, or by
   * the config media type of the manifest when the descriptor does not say).
   */
  async artifacts(): Promise<Descriptor[]> {
    const out: Descriptor[] = [];
    for (const d of this.index.manifests) {
      if (d.artifactType === MediaType.OvmsManifest) {
        out.push(d);
        continue;
      }
      if (d.mediaType !== MediaType.OciManifest) continue;
      const m = await this.readJson<ImageManifest>(d).catch(() => undefined);
      if (
        m &&
        !m.subject &&
        (m.artifactType === MediaType.OvmsManifest || m.config?.mediaType === MediaType.OvmsManifest)
      )
        out.push(d);
    }
    return out;
  }

  async referrers(subject: Pick<Descriptor, "digest">, artifactType?: string): Promise<Descriptor[]> {
    const out: Descriptor[] = [];
    for (const d of this.index.manifests) {
      const m = await this.readJson<ImageManifest>(d).catch(() => undefined);
      if (!m || m.subject?.digest !== subject.digest) continue;
      const at = m.artifactType ?? m.config?.mediaType;
      if (artifactType && at !== artifactType) continue;
      const r: Descriptor = {
        mediaType: m.mediaType ?? MediaType.OciManifest,
        digest: d.digest,
        size: d.size,
      };
      if (at) r.artifactType = at;
      out.push(r);
    }
    return out;
  }

  private async readJson<T>(d: Pick<Descriptor, "digest" | "size">): Promise<T> {
    const chunks: Buffer[] = [];
    for await (const c of await this.fetch(d)) chunks.push(c as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString("utf8")) as T;
  }
}
