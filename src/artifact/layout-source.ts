import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { Hasher, digestHex, isDigest, type Digest } from "../core/digest.js";
import { OvmsError } from "../core/errors.js";
import { Annotation, MediaType } from "../core/media-types.js";
import type { Descriptor, ImageIndex, ImageManifest } from "../core/oci.js";
import type { ContentStore } from "../core/content.js";

/** LayoutFiles are the files of an OCI image layout, wherever they lie: a folder, or ranges of a tar. */
export interface LayoutFiles {
  /** where names the layout in messages: the folder, or the tar file. */
  readonly where: string;
  /** size is the size of the plain file at `path` (relative to the layout's root), or undefined when there is none. */
  size(path: string): Promise<number | undefined>;
  /** open streams the file at `path`, as it is (callers verify what has a digest). */
  open(path: string): Promise<Readable>;
}

/** folderFiles reads a layout that is a folder. */
export function folderFiles(root: string): LayoutFiles {
  return {
    where: root,
    size: async (path) => {
      const st = await stat(join(root, path)).catch(() => undefined);
      return st?.isFile() ? st.size : undefined;
    },
    open: async (path) => createReadStream(join(root, path)),
  };
}

/**
 * LayoutSource reads an OCI image layout someone handed over (a folder, or a tar read in
 * place) without writing to it: the source side of `copy` when an artifact is imported into
 * the store. Blobs are verified while they stream, like the store's.
 * https://github.com/opencontainers/image-spec/blob/v1.1.0/image-layout.md
 */
export class LayoutSource implements ContentStore {
  private constructor(
    private readonly files: LayoutFiles,
    readonly index: ImageIndex,
  ) {}

  /** root names the layout: its folder, or the tar it is read from. */
  get root(): string {
    return this.files.where;
  }

  /** open reads the layout in the folder `root`, or says why it is not one. */
  static async open(root: string): Promise<LayoutSource> {
    return LayoutSource.over(folderFiles(root));
  }

  /** over reads `files`' oci-layout and index.json, or says why they are not a layout. */
  static async over(files: LayoutFiles): Promise<LayoutSource> {
    const where = files.where;
    if ((await files.size("oci-layout")) === undefined) {
      throw new OvmsError("MANIFEST_INVALID", `${where}: not an OCI image layout (no oci-layout file)`);
    }
    let index: ImageIndex;
    try {
      index = JSON.parse((await readAll(await files.open("index.json"))).toString("utf8")) as ImageIndex;
    } catch (e) {
      throw new OvmsError("MANIFEST_INVALID", `${where}/index.json: ${(e as Error).message}`);
    }
    if (!Array.isArray(index?.manifests))
      throw new OvmsError("MANIFEST_INVALID", `${where}/index.json: no manifests array`);
    return new LayoutSource(files, index);
  }

  private blobPath(digest: Digest): string {
    return join("blobs", "sha256", digestHex(digest));
  }

  async exists(desc: Pick<Descriptor, "digest">): Promise<boolean> {
    return isDigest(desc.digest) && (await this.files.size(this.blobPath(desc.digest))) !== undefined;
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
    const stream = await this.files.open(this.blobPath(desc.digest));
    // A read error (the file went away) must fail the verified stream, not vanish.
    stream.on("error", (e) => hasher.destroy(e));
    return stream.pipe(hasher);
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
    return JSON.parse((await readAll(await this.fetch(d))).toString("utf8")) as T;
  }
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
