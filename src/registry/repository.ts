import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import type { Dispatcher } from "undici";
import { Hasher, isDigest, sha256, type Digest } from "../core/digest.js";
import { OvmsError, isOvmsError } from "../core/errors.js";
import { ManifestMediaTypes, MediaType } from "../core/media-types.js";
import type { Descriptor, ImageIndex, ImageManifest } from "../core/oci.js";
import type { ContentStore } from "../core/content.js";
import { parseReference } from "../core/reference.js";
import { repositoryScope } from "./auth.js";
import type { RegistryClient, SendOptions } from "./client.js";
import { resumableDownload } from "./download.js";
import { RegistryError, isNetworkFailure } from "./registry-error.js";
import type { FastGetTarget } from "./fast-get.js";
import { emptyReferrersIndex, filterReferrers, referrerDescriptor, referrersTag } from "./referrers.js";
import { parseNextLink } from "./tags.js";
import { uploadBlob, type UploadResult } from "./upload.js";

/** MAX_MANIFEST is the largest manifest OVMS reads (the distribution spec suggests registries accept at least 4 MiB). */
const MAX_MANIFEST = 4 << 20;

const MANIFEST_ACCEPT = ManifestMediaTypes.join(", ");

/** isManifestMediaType tells whether a descriptor names a manifest or index (not a plain blob). */
export function isManifestMediaType(mediaType: string): boolean {
  return (ManifestMediaTypes as readonly string[]).includes(mediaType);
}

/** FetchOptions tune a blob download. */
export interface FetchOptions {
  /** verify checks size and digest while streaming (default true); copy turns it off when the sink verifies. */
  verify?: boolean;
  /** onResume is told when a dropped download goes on from `offset`. */
  onResume?(offset: number): void;
}

/**
 * Repository is one remote repository (`registry/name`) playing the ContentStore role, so a
 * copy between the local store and a registry, or between two registries, is one function.
 * Manifests are read with the Accept types of OCI and Docker and verified against the digest
 * asked for; pushing a manifest with a `subject` keeps the referrers tag schema up to date
 * when the registry has no Referrers API.
 */
export class Repository implements ContentStore {
  /** Manifest bytes seen by resolve/fetch, by digest: a copy reads the root manifest once. */
  private readonly manifests = new Map<string, Buffer>();
  private referrersApi?: boolean;
  private readonly referrersPushed = new Set<string>();

  constructor(
    readonly client: RegistryClient,
    /** registry is `host[:port]` as in references, e.g. `127.0.0.1:5000`. */
    readonly registry: string,
    /** name is the repository path, e.g. `demo/vm`. */
    readonly name: string,
    private readonly opts: { push?: boolean } = {},
  ) {}

  /** reference is `registry/name`. */
  get reference(): string {
    return `${this.registry}/${this.name}`;
  }

  /** url is the API URL of `path` under this repository: `/v2/<name>/<path>`. */
  url(path: string): URL {
    return new URL(`/v2/${this.name}/${path}`, this.client.baseUrl(this.registry));
  }

  /** pullScopes are what reads need; a repository opened for push asks pull+push from the start, one token for all. */
  pullScopes(): string[] {
    return [repositoryScope(this.name, this.opts.push ? ["pull", "push"] : ["pull"])];
  }

  /** pushScopes are what writes need. */
  pushScopes(): string[] {
    return [repositoryScope(this.name, ["pull", "push"])];
  }

  /** send is RegistryClient.send for this repository's registry. */
  send(opts: SendOptions): Promise<Dispatcher.ResponseData> {
    return this.client.send(this.registry, opts);
  }

  async exists(desc: Descriptor): Promise<boolean> {
    const manifest = isManifestMediaType(desc.mediaType);
    const res = await this.send({
      method: "HEAD",
      url: this.url(`${manifest ? "manifests" : "blobs"}/${desc.digest}`),
      scopes: this.pullScopes(),
      headers: manifest ? { accept: MANIFEST_ACCEPT } : {},
      ok: [200, 404],
      context: `${manifest ? "manifest" : "blob"} ${desc.digest}`,
    });
    await res.body.dump();
    return res.statusCode === 200;
  }

  async fetch(desc: Descriptor, opts: FetchOptions = {}): Promise<Readable> {
    if (isManifestMediaType(desc.mediaType)) {
      const { bytes } = await this.fetchManifest(desc.digest);
      return Readable.from([bytes]);
    }
    const what = `blob ${desc.digest}`;
    const url = this.url(`blobs/${desc.digest}`);
    const stream = resumableDownload({
      size: desc.size,
      what,
      url,
      open: (offset) =>
        this.send({
          method: "GET",
          url,
          scopes: this.pullScopes(),
          headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
          ok: offset > 0 ? [200, 206] : [200],
          context: what,
          highWaterMark: this.client.highWaterMark,
        }),
      onResume: opts.onResume,
      backoff: (n) => Math.min(this.client.retry.maxMs, this.client.retry.baseMs * 2 ** (n - 1)),
      highWaterMark: this.client.highWaterMark,
    });
    if (opts.verify === false) return stream;
    const hasher = new Hasher({ digest: desc.digest, size: desc.size, what });
    stream.on("error", (e) => hasher.destroy(e));
    return stream.pipe(hasher);
  }

  /**
   * fetchInto downloads a blob into a synchronous writer (Store.openIngest) and resumes with
   * `Range: bytes=<writer.bytes>-` after a dropped connection, so the writer's running hash
   * covers the parts as one. The writer verifies; nothing is hashed here.
   */
  async fetchInto(
    desc: Descriptor,
    writer: { bytes: number; write(chunk: Uint8Array): void },
    opts: { onBytes?(n: number): void; maxResumes?: number } = {},
  ): Promise<void> {
    const what = `blob ${desc.digest}`;
    const url = this.url(`blobs/${desc.digest}`);
    const maxResumes = opts.maxResumes ?? 5;
    for (let resumes = 0; ;) {
      const offset = writer.bytes;
      let skip = 0;
      const target: FastGetTarget = {
        accept: (status, headers) => {
          if (offset === 0) return status === 200;
          if (status === 206) {
            const start = /^bytes (\d+)-/.exec(headers["content-range"] ?? "")?.[1];
            if (Number(start) !== offset) {
              throw new RegistryError(
                "REGISTRY_ERROR",
                `${what}: asked to resume at byte ${offset}, the registry answered Content-Range "${headers["content-range"] ?? ""}"`,
              );
            }
            return true;
          }
          // A registry that ignores Range sends it all again: skip what the writer has.
          skip = offset;
          return status === 200;
        },
        data: (view) => {
          let v = view;
          if (skip > 0) {
            const n = Math.min(skip, v.length);
            skip -= n;
            v = v.subarray(n);
            if (!v.length) return;
          }
          if (writer.bytes + v.length > desc.size) {
            throw new OvmsError(
              "DIGEST_MISMATCH",
              `${what}: the registry sent more than the declared ${desc.size} bytes`,
            );
          }
          writer.write(v);
          opts.onBytes?.(v.length);
        },
      };
      try {
        await this.client.getInto(
          this.registry,
          {
            method: "GET",
            url,
            scopes: this.pullScopes(),
            headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
            ok: [200, 206],
            context: what,
          },
          target,
        );
        if (writer.bytes >= desc.size) return;
        throw new RegistryError(
          "CONNECTION_LOST",
          `${what}: the body ended after ${writer.bytes} of ${desc.size} bytes`,
          { transient: true },
        );
      } catch (e) {
        // A request the client already retried is not resumed again on top.
        const retried = e instanceof RegistryError && e.attempts > 1;
        if (isNetworkFailure(e) && !retried && resumes < maxResumes) {
          resumes++;
          await sleep(Math.min(this.client.retry.maxMs, this.client.retry.baseMs * 2 ** (resumes - 1)));
          continue;
        }
        throw e;
      }
    }
  }

  /**
   * fetchManifest reads a manifest or index by tag or digest: Accept lists the OCI and Docker
   * types, the body is capped at 4 MiB, and its sha256 must be the digest asked for (or the
   * `Docker-Content-Digest` the registry announced for a tag).
   */
  async fetchManifest(
    reference: string,
  ): Promise<{ descriptor: Descriptor; bytes: Buffer; manifest: ImageManifest | ImageIndex }> {
    const cached = isDigest(reference) ? this.manifests.get(reference) : undefined;
    if (cached) return { ...describe(cached, reference as Digest, undefined), bytes: cached };
    const what = `manifest ${this.reference}${isDigest(reference) ? "@" : ":"}${reference}`;
    const url = this.url(`manifests/${reference}`);
    const res = await this.send({
      method: "GET",
      url,
      scopes: this.pullScopes(),
      headers: { accept: MANIFEST_ACCEPT },
      ok: [200],
      context: what,
    });
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of res.body) {
      n += (c as Buffer).length;
      if (n > MAX_MANIFEST) {
        res.body.destroy();
        throw new RegistryError("MANIFEST_INVALID", `${what}: larger than ${MAX_MANIFEST} bytes`);
      }
      chunks.push(c as Buffer);
    }
    const bytes = Buffer.concat(chunks);
    const got = sha256(bytes);
    const want = isDigest(reference) ? reference : headerDigest(res.headers["docker-content-digest"]);
    if (want && got !== want) {
      throw new RegistryError(
        "DIGEST_MISMATCH",
        `${what}: digest mismatch after ${bytes.length} bytes (got ${got}, want ${want})`,
        {
          method: "GET",
          url: url.toString(),
        },
      );
    }
    this.manifests.set(got, bytes);
    return { ...describe(bytes, got, String(res.headers["content-type"] ?? "")), bytes };
  }

  /** resolve turns a tag, a digest or a full reference of this repository into its manifest descriptor. */
  async resolve(reference: string): Promise<Descriptor> {
    return (await this.fetchManifest(this.refPart(reference))).descriptor;
  }

  /** refPart reduces `registry/name:tag@digest`, `tag` or `sha256:…` to what goes after /manifests/. */
  private refPart(reference: string): string {
    if (isDigest(reference)) return reference;
    if (/^[\w][\w.-]{0,127}$/.test(reference)) return reference;
    const r = parseReference(reference);
    return r.digest ?? r.tag ?? "latest";
  }

  async push(desc: Descriptor, content: Readable): Promise<void> {
    if (isManifestMediaType(desc.mediaType)) {
      await this.pushManifest(desc, await readAll(content, MAX_MANIFEST));
      return;
    }
    await this.pushBlob(desc, async () => content);
  }

  /** pushBlob uploads a blob unless it is there, mounting it from `mountFrom` when that is another repository of this registry. */
  pushBlob(
    desc: Descriptor,
    open: () => Promise<Readable>,
    opts: { mountFrom?: string } = {},
  ): Promise<UploadResult> {
    return uploadBlob(this, desc, open, { mountFrom: opts.mountFrom, chunkSize: this.client.chunkSize });
  }

  /**
   * pushManifest PUTs manifest bytes by digest (or under `tag`). When the manifest has a
   * `subject` and the registry does not answer `OCI-Subject`, it has no Referrers API, so the
   * manifest is added to the subject's `sha256-<hex>` referrers index.
   */
  async pushManifest(desc: Descriptor, bytes: Buffer, tag?: string): Promise<void> {
    const what = `manifest ${desc.digest}`;
    const got = sha256(bytes);
    if (got !== desc.digest)
      throw new RegistryError("DIGEST_MISMATCH", `${what}: the bytes to push hash to ${got}`);
    const res = await this.send({
      method: "PUT",
      url: this.url(`manifests/${tag ?? desc.digest}`),
      scopes: this.pushScopes(),
      headers: { "content-type": desc.mediaType },
      body: bytes,
      ok: [201],
      // The same bytes under the same name: a repeat changes nothing.
      retry: true,
      context: tag ? `${what} as ${this.reference}:${tag}` : what,
    });
    await res.body.dump();
    const stored = headerDigest(res.headers["docker-content-digest"]);
    if (stored && stored !== desc.digest) {
      throw new RegistryError("DIGEST_MISMATCH", `${what}: the registry stored it as ${stored}`);
    }
    this.manifests.set(desc.digest, bytes);
    const manifest = JSON.parse(bytes.toString("utf8")) as ImageManifest | ImageIndex;
    if (manifest.subject && !res.headers["oci-subject"] && !this.referrersPushed.has(desc.digest)) {
      this.referrersApi = false;
      await this.updateReferrersIndex(manifest.subject.digest, (list) => {
        if (!list.some((d) => d.digest === desc.digest)) list.push(referrerDescriptor(desc, manifest));
      });
    }
    this.referrersPushed.add(desc.digest);
  }

  /** tag names the manifest `desc` with a tag (or the tag of a full reference). */
  async tag(desc: Descriptor, reference: string): Promise<void> {
    const tag = isDigest(reference)
      ? undefined
      : /^[\w][\w.-]{0,127}$/.test(reference)
        ? reference
        : parseReference(reference).tag;
    if (!tag)
      throw new RegistryError("INVALID_REFERENCE", `${reference}: a tag is needed to name ${desc.digest}`);
    const { bytes } = await this.fetchManifest(desc.digest);
    await this.pushManifest(desc, bytes, tag);
  }

  /**
   * deleteManifest removes a manifest by digest; a referrer is also taken out of its subject's
   * referrers index when the registry has no Referrers API.
   */
  async deleteManifest(desc: Descriptor): Promise<void> {
    let manifest: ImageManifest | ImageIndex | undefined;
    try {
      manifest = (await this.fetchManifest(desc.digest)).manifest;
    } catch (e) {
      if (!isOvmsError(e, "MANIFEST_UNKNOWN") && !isOvmsError(e, "NOT_FOUND")) throw e;
    }
    const res = await this.send({
      method: "DELETE",
      url: this.url(`manifests/${desc.digest}`),
      scopes: [repositoryScope(this.name, ["delete", "pull", "push"])],
      ok: [202, 404],
      retry: true,
      context: `manifest ${desc.digest}`,
    });
    await res.body.dump();
    this.manifests.delete(desc.digest);
    if (manifest?.subject && this.referrersApi !== true) {
      await this.updateReferrersIndex(manifest.subject.digest, (list) => {
        const i = list.findIndex((d) => d.digest === desc.digest);
        if (i >= 0) list.splice(i, 1);
      });
    }
  }

  private async updateReferrersIndex(subject: Digest, edit: (list: Descriptor[]) => void): Promise<void> {
    const tag = referrersTag(subject);
    let index = emptyReferrersIndex();
    try {
      index = (await this.fetchManifest(tag)).manifest as ImageIndex;
    } catch (e) {
      if (!isOvmsError(e, "MANIFEST_UNKNOWN") && !isOvmsError(e, "NOT_FOUND")) throw e;
    }
    const before = JSON.stringify(index.manifests ?? []);
    index.manifests = [...(index.manifests ?? [])];
    edit(index.manifests);
    if (JSON.stringify(index.manifests) === before) return;
    const bytes = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: index.manifests }),
    );
    await this.pushManifest(
      { mediaType: MediaType.OciIndex, digest: sha256(bytes), size: bytes.length },
      bytes,
      tag,
    );
  }

  /**
   * referrers lists the manifests whose subject is `subject`: the Referrers API
   * (`GET /v2/<name>/referrers/<digest>`) where the registry has it, else the referrers tag
   * schema. The artifactType filter is applied here when the registry did not apply it.
   */
  async referrers(subject: Pick<Descriptor, "digest">, artifactType?: string): Promise<Descriptor[]> {
    if (this.referrersApi !== false) {
      const url = this.url(`referrers/${subject.digest}`);
      if (artifactType) url.searchParams.set("artifactType", artifactType);
      const res = await this.send({
        method: "GET",
        url,
        scopes: this.pullScopes(),
        headers: { accept: MediaType.OciIndex },
        ok: [200, 404],
        context: `referrers of ${subject.digest}`,
      });
      const type = String(res.headers["content-type"] ?? "");
      if (res.statusCode === 200 && type.startsWith(MediaType.OciIndex)) {
        this.referrersApi = true;
        const index = JSON.parse(
          await readAll(res.body, MAX_MANIFEST).then((b) => b.toString("utf8")),
        ) as ImageIndex;
        const applied = String(res.headers["oci-filters-applied"] ?? "")
          .split(",")
          .map((s) => s.trim());
        const list = index.manifests ?? [];
        return applied.includes("artifactType") ? list : filterReferrers(list, artifactType);
      }
      await res.body.dump();
      // 404 (or anything that is not an index): no Referrers API here.
      this.referrersApi = false;
    }
    try {
      const { manifest } = await this.fetchManifest(referrersTag(subject.digest as Digest));
      return filterReferrers((manifest as ImageIndex).manifests ?? [], artifactType);
    } catch (e) {
      if (isOvmsError(e, "MANIFEST_UNKNOWN") || isOvmsError(e, "NOT_FOUND")) return [];
      throw e;
    }
  }

  /**
   * tags lists every tag of the repository, following `Link: <…>; rel="next"` pages
   * (distribution spec "Listing Tags"); `pageSize` asks for pages of `n` tags.
   */
  async tags(opts: { pageSize?: number } = {}): Promise<string[]> {
    let url: URL | undefined = this.url("tags/list");
    if (opts.pageSize) url.searchParams.set("n", String(opts.pageSize));
    const out: string[] = [];
    for (let page = 0; url && page < 100_000; page++) {
      const res = await this.send({
        method: "GET",
        url,
        scopes: this.pullScopes(),
        ok: [200],
        context: `tags of ${this.reference}`,
      });
      const body = JSON.parse((await readAll(res.body, 64 << 20)).toString("utf8")) as {
        tags?: string[] | null;
      };
      out.push(...(body.tags ?? []));
      url = parseNextLink(res.headers.link, url);
    }
    return out;
  }
}

/** describe makes the descriptor of manifest bytes, its mediaType from the body, else the Content-Type. */
function describe(
  bytes: Buffer,
  digest: Digest,
  contentType: string | undefined,
): { descriptor: Descriptor; manifest: ImageManifest | ImageIndex } {
  let manifest: ImageManifest | ImageIndex;
  try {
    manifest = JSON.parse(bytes.toString("utf8"));
  } catch (e) {
    throw new RegistryError(
      "MANIFEST_INVALID",
      `manifest ${digest}: not valid JSON: ${(e as Error).message}`,
    );
  }
  const ct = contentType?.split(";")[0].trim();
  const mediaType =
    manifest.mediaType ??
    (ct && isManifestMediaType(ct)
      ? ct
      : "manifests" in manifest
        ? MediaType.OciIndex
        : MediaType.OciManifest);
  const descriptor: Descriptor = { mediaType, digest, size: bytes.length };
  if (manifest.artifactType) descriptor.artifactType = manifest.artifactType;
  return { descriptor, manifest };
}

function headerDigest(h: string | string[] | undefined): Digest | undefined {
  const v = Array.isArray(h) ? h[0] : h;
  return v && isDigest(v) ? v : undefined;
}

/** readAll reads a stream into memory, refusing more than `limit` bytes. */
export async function readAll(stream: AsyncIterable<unknown>, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of stream) {
    const b = typeof c === "string" ? Buffer.from(c) : (c as Buffer);
    n += b.length;
    if (n > limit) throw new RegistryError("MANIFEST_INVALID", `content larger than ${limit} bytes`);
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}
