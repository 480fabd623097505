import { Readable } from "node:stream";
import { Hasher, isDigest, sha256, type Digest } from "../core/digest.js";
import { isOvmsError } from "../core/errors.js";
import { MediaType } from "../core/media-types.js";
import type { Descriptor, ImageIndex, ImageManifest } from "../core/oci.js";
import type {
  ContentCapabilities,
  ContentFetchOptions,
  ContentStore,
  SignalOptions,
} from "../core/content.js";
import { parseReference } from "../core/reference.js";
import { repositoryScope } from "./auth.js";
import { resumableDownload } from "./download.js";
import { fetchInto, type FetchIntoOptions, type SyncWriter } from "./fetch-into.js";
import {
  MANIFEST_ACCEPT,
  MAX_MANIFEST,
  describeManifest,
  readManifestBody,
  headerDigest,
  isManifestMediaType,
  readAll,
} from "./manifest-bytes.js";
import {
  editReferrersIndex,
  filterReferrers,
  referrerDescriptor,
  referrersFromApi,
  referrersTag,
} from "./referrers.js";
import { RegistryError } from "./registry-error.js";
import type { RegistryEndpoint, RegistryHandoff } from "./registry-endpoint.js";
import { backoff } from "./retry-policy.js";
import { listTags } from "./tags.js";
import type { TransportRequest, TransportResponse } from "./transport.js";
import { uploadBlob, type PushSource, type UploadResult } from "./upload.js";

/** FetchOptions tune a blob download. */
export interface FetchOptions extends ContentFetchOptions {
  /** onResume is told when a dropped download goes on from `offset`. */
  onResume?(offset: number): void;
}

/**
 * Repository is one remote repository (`registry/name`) playing the ContentStore role, so a
 * copy between the local store and a registry, or between two registries, is one function.
 * Manifests are read with the Accept types of OCI and Docker and verified against the digest
 * asked for; pushing a manifest with a `subject` keeps the referrers tag schema up to date
 * when the registry has no Referrers API. It reaches its registry through a RegistryEndpoint
 * (the transport and its settings), which the RegistryClient hands out.
 */
export class Repository implements ContentStore {
  /** Manifest bytes seen by resolve/fetch, by digest: a copy reads the root manifest once. */
  private readonly manifests = new Map<string, Buffer>();
  private referrersApi?: boolean;
  private readonly referrersPushed = new Set<string>();

  /**
   * capabilities: the registry verifies every upload, a blob may be mounted from another
   * repository of the same registry, and a worker thread can reach the repository again.
   */
  readonly capabilities: ContentCapabilities = {
    verifiesOnPush: true,
    pushBlob: async (desc, open, opts = {}) => {
      const openReader = opts.from?.capabilities?.openReader;
      const how = await this.pushBlob(desc, open, {
        mountFrom: this.mountSource(opts.from),
        signal: opts.signal,
        reader: openReader ? () => openReader(desc) : undefined,
        onBytes: opts.onBytes,
      });
      return how === "mounted" ? "mounted" : "transferred";
    },
    handoff: async (): Promise<RegistryHandoff> => ({
      kind: "registry",
      registry: this.registry,
      name: this.name,
      push: !!this.opts.push,
      ...(await this.endpoint.handoff()),
    }),
  };

  constructor(
    readonly endpoint: RegistryEndpoint,
    /** name is the repository path, e.g. `demo/vm`. */
    readonly name: string,
    private readonly opts: { push?: boolean } = {},
  ) {}

  /** registry is `host[:port]` as in references, e.g. `127.0.0.1:5000`. */
  get registry(): string {
    return this.endpoint.registry;
  }

  /** reference is `registry/name`. */
  get reference(): string {
    return `${this.registry}/${this.name}`;
  }

  /** url is the API URL of `path` under this repository: `/v2/<name>/<path>`. */
  url(path: string): URL {
    return new URL(`/v2/${this.name}/${path}`, this.endpoint.baseUrl());
  }

  /** pullScopes are what reads need; a repository opened for push asks pull+push from the start, one token for all. */
  pullScopes(): string[] {
    return [repositoryScope(this.name, this.opts.push ? ["pull", "push"] : ["pull"])];
  }

  /** pushScopes are what writes need. */
  pushScopes(): string[] {
    return [repositoryScope(this.name, ["pull", "push"])];
  }

  /** send makes one request to this repository's registry through its transport. */
  send(req: TransportRequest): Promise<TransportResponse> {
    return this.endpoint.transport.send(req);
  }

  /** mountSource names `from` when it is another repository of this registry reached the same way. */
  private mountSource(from: ContentStore | undefined): string | undefined {
    return from instanceof Repository && from.endpoint === this.endpoint && from.name !== this.name
      ? from.name
      : undefined;
  }

  async exists(desc: Descriptor, opts: SignalOptions = {}): Promise<boolean> {
    const manifest = isManifestMediaType(desc.mediaType);
    const res = await this.send({
      method: "HEAD",
      url: this.url(`${manifest ? "manifests" : "blobs"}/${desc.digest}`),
      scopes: this.pullScopes(),
      headers: manifest ? { accept: MANIFEST_ACCEPT } : {},
      ok: [200, 404],
      context: `${manifest ? "manifest" : "blob"} ${desc.digest}`,
      signal: opts.signal,
    });
    await res.body.dump();
    return res.statusCode === 200;
  }

  async fetch(desc: Descriptor, opts: FetchOptions = {}): Promise<Readable> {
    if (isManifestMediaType(desc.mediaType)) {
      const { bytes } = await this.fetchManifest(desc.digest, opts);
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
          highWaterMark: this.endpoint.highWaterMark,
          signal: opts.signal,
        }),
      onResume: opts.onResume,
      backoff: (n) => backoff(this.endpoint.retry, n),
      highWaterMark: this.endpoint.highWaterMark,
      signal: opts.signal,
    });
    if (opts.verify === false) return stream;
    const hasher = new Hasher({ digest: desc.digest, size: desc.size, what });
    stream.on("error", (e) => hasher.destroy(e));
    return stream.pipe(hasher);
  }

  /**
   * fetchInto downloads a blob into a synchronous writer (Store.openIngest) and resumes with
   * `Range: bytes=<writer.bytes>-` after a dropped connection (see fetch-into.ts). The writer
   * verifies; nothing is hashed here.
   */
  fetchInto(desc: Descriptor, writer: SyncWriter, opts: FetchIntoOptions = {}): Promise<void> {
    const { transport, fastGet, retry } = this.endpoint;
    const src = {
      transport,
      fastGet,
      retry,
      url: this.url(`blobs/${desc.digest}`),
      scopes: this.pullScopes(),
    };
    return fetchInto(src, desc, writer, opts);
  }

  /**
   * fetchManifest reads a manifest or index by tag or digest: Accept lists the OCI and Docker
   * types, the body is capped at 4 MiB, and its sha256 must be the digest asked for (or the
   * `Docker-Content-Digest` the registry announced for a tag).
   */
  async fetchManifest(
    reference: string,
    opts: SignalOptions = {},
  ): Promise<{ descriptor: Descriptor; bytes: Buffer; manifest: ImageManifest | ImageIndex }> {
    const cached = isDigest(reference) ? this.manifests.get(reference) : undefined;
    if (cached) return { ...describeManifest(cached, reference as Digest, undefined), bytes: cached };
    const what = `manifest ${this.reference}${isDigest(reference) ? "@" : ":"}${reference}`;
    const url = this.url(`manifests/${reference}`);
    const res = await this.send({
      method: "GET",
      url,
      scopes: this.pullScopes(),
      headers: { accept: MANIFEST_ACCEPT },
      ok: [200],
      context: what,
      signal: opts.signal,
    });
    const bytes = await readManifestBody(res.body, what);
    const got = sha256(bytes);
    const want = isDigest(reference) ? reference : headerDigest(res.headers["docker-content-digest"]);
    if (want && got !== want) {
      throw new RegistryError(
        "DIGEST_MISMATCH",
        `${what}: digest mismatch after ${bytes.length} bytes (got ${got}, want ${want})`,
        { method: "GET", url: url.toString() },
      );
    }
    this.manifests.set(got, bytes);
    return { ...describeManifest(bytes, got, String(res.headers["content-type"] ?? "")), bytes };
  }

  /** resolve turns a tag, a digest or a full reference of this repository into its manifest descriptor. */
  async resolve(reference: string, opts: SignalOptions = {}): Promise<Descriptor> {
    return (await this.fetchManifest(this.refPart(reference), opts)).descriptor;
  }

  /** refPart reduces `registry/name:tag@digest`, `tag` or `sha256:…` to what goes after /manifests/. */
  private refPart(reference: string): string {
    if (isDigest(reference)) return reference;
    if (/^[\w][\w.-]{0,127}$/.test(reference)) return reference;
    const r = parseReference(reference);
    return r.digest ?? r.tag ?? "latest";
  }

  async push(desc: Descriptor, content: Readable, opts: SignalOptions = {}): Promise<void> {
    if (isManifestMediaType(desc.mediaType)) {
      await this.pushManifest(desc, await readAll(content, MAX_MANIFEST), undefined, opts);
      return;
    }
    await this.pushBlob(desc, async () => content, opts);
  }

  /** pushBlob uploads a blob unless it is there, mounting it from `mountFrom` when that is another repository of this registry. */
  pushBlob(
    desc: Descriptor,
    open: () => Promise<Readable>,
    opts: SignalOptions & PushSource = {},
  ): Promise<UploadResult> {
    const put = this.endpoint.fastPut;
    return uploadBlob(this, desc, open, {
      mountFrom: opts.mountFrom,
      chunkSize: this.endpoint.chunkSize,
      signal: opts.signal,
      fast: put && opts.reader ? { put, reader: opts.reader, onBytes: opts.onBytes } : undefined,
    });
  }

  /**
   * pushManifest PUTs manifest bytes by digest (or under `tag`). When the manifest has a
   * `subject` and the registry does not answer `OCI-Subject`, it has no Referrers API, so the
   * manifest is added to the subject's `sha256-<hex>` referrers index.
   */
  async pushManifest(desc: Descriptor, bytes: Buffer, tag?: string, opts: SignalOptions = {}): Promise<void> {
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
      signal: opts.signal,
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
  async tag(desc: Descriptor, reference: string, opts: SignalOptions = {}): Promise<void> {
    const tag = isDigest(reference)
      ? undefined
      : /^[\w][\w.-]{0,127}$/.test(reference)
        ? reference
        : parseReference(reference).tag;
    if (!tag)
      throw new RegistryError("INVALID_REFERENCE", `${reference}: a tag is needed to name ${desc.digest}`);
    const { bytes } = await this.fetchManifest(desc.digest, opts);
    await this.pushManifest(desc, bytes, tag, opts);
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

  /** updateReferrersIndex edits the subject's referrers tag schema index (see referrers.ts). */
  private updateReferrersIndex(subject: Digest, edit: (list: Descriptor[]) => void): Promise<void> {
    return editReferrersIndex(this, subject, edit);
  }

  /**
   * referrers lists the manifests whose subject is `subject`: the Referrers API
   * (`GET /v2/<name>/referrers/<digest>`) where the registry has it, else the referrers tag
   * schema. The artifactType filter is applied here when the registry did not apply it.
   */
  async referrers(
    subject: Pick<Descriptor, "digest">,
    artifactType?: string,
    opts: SignalOptions = {},
  ): Promise<Descriptor[]> {
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
        signal: opts.signal,
      });
      const list = await referrersFromApi(res, artifactType);
      if (list) {
        this.referrersApi = true;
        return list;
      }
      // 404 (or anything that is not an index): no Referrers API here.
      this.referrersApi = false;
    }
    try {
      const { manifest } = await this.fetchManifest(referrersTag(subject.digest as Digest), opts);
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
  tags(opts: SignalOptions & { pageSize?: number } = {}): Promise<string[]> {
    return listTags(this, opts);
  }
}
