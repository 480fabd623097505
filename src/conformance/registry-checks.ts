import { createHash, randomBytes } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { sha256, type Digest } from "../core/digest.js";
import { MediaType } from "../core/media-types.js";
import type { Descriptor } from "../core/oci.js";
import { parseReference } from "../core/reference.js";
import type { RegistryClient } from "../registry/client.js";
import type { Repository } from "../registry/repository.js";
import { editReferrersIndex, referrersTag } from "../registry/referrers.js";
import { uploadBlob } from "../registry/upload.js";
import type { TransportResponse } from "../registry/transport.js";
import { Skip, expect, type Check } from "./check.js";

/**
 * Whether a registry carries OVMS artifacts (rfc §3, §9): it takes a custom config media type
 * and artifactType and gives the manifest back byte for byte (so `subject` is kept), lists
 * referrers (Referrers API) or at least keeps the referrers tag schema, takes large blobs, in
 * one PUT and in chunks, and maybe mounts across repositories — each reported with what OVMS
 * does when the registry lacks it. Everything pushed is small except the large blob.
 */

/** RegistryContext is the repository under test and what the checks learned. */
export interface RegistryContext {
  client: RegistryClient;
  repo: Repository;
  runId: string;
  largeBytes: number;
  chunkBytes: number;
  /** found: what the registry turned out to support, for the report. */
  found: Record<string, string>;
  ovms?: { desc: Descriptor; bytes: Buffer };
  referrer?: { desc: Descriptor; bytes: Buffer; ociSubject?: string };
}

type C = Check<RegistryContext>;
const reg = { level: "registry" as const, requirement: "MUST" as const };
const ANY = [
  200, 201, 202, 204, 206, 400, 401, 403, 404, 405, 409, 411, 413, 415, 416, 422, 500, 501, 502, 503,
];

/** raw sends one request to the repository and returns whatever it answers. */
async function raw(
  ctx: RegistryContext,
  method: "GET" | "HEAD" | "PUT" | "DELETE",
  path: string,
  opts: { headers?: Record<string, string>; body?: Buffer; push?: boolean } = {},
): Promise<{ res: TransportResponse; body: Buffer }> {
  const res = await ctx.repo.send({
    method,
    url: ctx.repo.url(path),
    scopes: opts.push ? ctx.repo.pushScopes() : ctx.repo.pullScopes(),
    headers: opts.headers ?? {},
    ...(opts.body ? { body: opts.body } : {}),
    ok: ANY,
    retry: method !== "PUT",
    context: `${method} ${path}`,
  });
  const chunks: Buffer[] = [];
  if (method !== "HEAD") for await (const c of res.body) chunks.push(c as Buffer);
  else await res.body.dump();
  return { res, body: Buffer.concat(chunks) };
}

const hdr = (r: TransportResponse, k: string) => {
  const v = r.headers[k];
  return Array.isArray(v) ? v[0] : v;
};

/** putBlob uploads a small blob in one PUT unless it is there. */
async function putBlob(ctx: RegistryContext, data: Buffer): Promise<Descriptor> {
  const desc: Descriptor = { mediaType: "application/octet-stream", digest: sha256(data), size: data.length };
  await uploadBlob(ctx.repo, desc, async () => Readable.from([data]), { chunkSize: Number.MAX_SAFE_INTEGER });
  return desc;
}

/** pattern streams `size` bytes that are unique to this run (so no registry has them yet). */
function pattern(seed: string, size: number): Readable {
  const block = createHash("sha512");
  let left = size;
  let n = 0;
  return new Readable({
    read() {
      if (left <= 0) return this.push(null);
      const buf = Buffer.alloc(Math.min(1 << 20, left));
      const h = block.copy().update(`${seed}:${n++}`).digest();
      for (let i = 0; i < buf.length; i += h.length) h.copy(buf, i);
      left -= buf.length;
      this.push(buf);
    },
  });
}

async function digestOf(s: Readable): Promise<Digest> {
  const h = createHash("sha256");
  await pipeline(s, new Writable({ write: (c, _e, cb) => (h.update(c), cb()) }));
  return `sha256:${h.digest("hex")}`;
}

/** roundTrip uploads a generated blob of `size` with the given chunk size and reads it back verified. */
async function roundTrip(ctx: RegistryContext, seed: string, size: number, chunkSize: number) {
  const digest = await digestOf(pattern(seed, size));
  const desc: Descriptor = { mediaType: "application/octet-stream", digest, size };
  const t0 = performance.now();
  const how = await uploadBlob(ctx.repo, desc, async () => pattern(seed, size), { chunkSize });
  const up = performance.now() - t0;
  const t1 = performance.now();
  await pipeline(await ctx.repo.fetch(desc), new Writable({ write: (_c, _e, cb) => cb() }));
  const down = performance.now() - t1;
  const mbs = (ms: number) => Math.round(size / (1 << 20) / (ms / 1000));
  return {
    how,
    desc,
    measured: { mib: Math.round(size / (1 << 20)), up_mib_s: mbs(up), down_mib_s: mbs(down) },
  };
}

/** ovmsArtifact pushes a small OVMS-shaped artifact: a config of the OVMS type, one kernel layer. */
async function ovmsArtifact(ctx: RegistryContext) {
  const kernel = await putBlob(ctx, Buffer.from(`not a kernel ${ctx.runId}\n`));
  const config = Buffer.from(
    JSON.stringify({
      schemaVersion: 1,
      mediaType: MediaType.OvmsManifest,
      name: "ovms-conformance/registry",
      version: ctx.runId,
      kernel: { ref: kernel.digest, size: kernel.size },
    }),
  );
  const cfg = await putBlob(ctx, config);
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType: MediaType.OvmsManifest,
    config: { mediaType: MediaType.OvmsManifest, digest: cfg.digest, size: cfg.size },
    layers: [
      {
        mediaType: MediaType.Kernel,
        digest: kernel.digest,
        size: kernel.size,
        annotations: { "ovms.role": "kernel", "org.opencontainers.image.title": "vmlinuz" },
      },
    ],
    annotations: { "ovms.name": "ovms-conformance/registry", "org.opencontainers.image.version": ctx.runId },
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  return {
    desc: { mediaType: MediaType.OciManifest, digest: sha256(bytes), size: bytes.length } as Descriptor,
    bytes,
  };
}

/** pushed is the OVMS artifact registry.artifact pushed, or a skip when it could not. */
function pushed(ctx: RegistryContext): NonNullable<RegistryContext["ovms"]> {
  if (!ctx.ovms) throw new Skip("needs the artifact registry.artifact pushes");
  return ctx.ovms;
}

/** REGISTRY_CHECKS are whether a registry carries OVMS artifacts. */
export const REGISTRY_CHECKS: C[] = [
  {
    ...reg,
    id: "registry.api",
    section: "§9",
    title: "the registry answers the OCI distribution API (GET /v2/) with the credentials at hand",
    async run(ctx) {
      await ctx.client.ping(ctx.repo.registry);
    },
  },
  {
    ...reg,
    id: "registry.artifact",
    section: "§3.2",
    title:
      "a manifest with the OVMS config media type and artifactType is taken and given back byte for byte",
    async run(ctx) {
      const a = await ovmsArtifact(ctx);
      const tag = `conformance-${ctx.runId}`;
      const put = await raw(ctx, "PUT", `manifests/${tag}`, {
        headers: { "content-type": MediaType.OciManifest },
        body: a.bytes,
        push: true,
      });
      expect(
        put.res.statusCode === 201,
        `PUT of the manifest answered ${put.res.statusCode}: ${put.body.toString().slice(0, 300)}`,
      );
      ctx.ovms = a;
      const byDigest = await raw(ctx, "GET", `manifests/${a.desc.digest}`, {
        headers: { accept: MediaType.OciManifest },
      });
      expect(byDigest.res.statusCode === 200, `GET by digest answered ${byDigest.res.statusCode}`);
      expect(byDigest.body.equals(a.bytes), "GET by digest gives other bytes than were pushed");
      expect(
        hdr(byDigest.res, "content-type")?.startsWith(MediaType.OciManifest),
        `content type ${hdr(byDigest.res, "content-type")}`,
      );
      const byTag = await raw(ctx, "GET", `manifests/${tag}`, { headers: { accept: MediaType.OciManifest } });
      expect(sha256(byTag.body) === a.desc.digest, "GET by tag gives other bytes");
    },
  },
  {
    ...reg,
    id: "registry.subject",
    section: "§3.5",
    title: "a manifest with a subject is taken and given back with its subject",
    async run(ctx) {
      const ovms = pushed(ctx);
      const empty = await putBlob(ctx, Buffer.from("{}"));
      const bundle = await putBlob(ctx, Buffer.from(JSON.stringify({ note: `conformance ${ctx.runId}` })));
      const m = {
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        artifactType: MediaType.SigstoreBundle,
        config: { mediaType: MediaType.OciEmpty, digest: empty.digest, size: 2 },
        layers: [{ mediaType: MediaType.SigstoreBundle, digest: bundle.digest, size: bundle.size }],
        subject: { mediaType: MediaType.OciManifest, digest: ovms.desc.digest, size: ovms.desc.size },
        annotations: { "org.opencontainers.image.created": new Date(0).toISOString() },
      };
      const bytes = Buffer.from(JSON.stringify(m));
      const desc: Descriptor = {
        mediaType: MediaType.OciManifest,
        digest: sha256(bytes),
        size: bytes.length,
        artifactType: MediaType.SigstoreBundle,
      };
      const put = await raw(ctx, "PUT", `manifests/${desc.digest}`, {
        headers: { "content-type": MediaType.OciManifest },
        body: bytes,
        push: true,
      });
      expect(
        put.res.statusCode === 201,
        `PUT answered ${put.res.statusCode}: ${put.body.toString().slice(0, 300)}`,
      );
      const ociSubject = hdr(put.res, "oci-subject");
      ctx.referrer = { desc, bytes, ...(ociSubject ? { ociSubject } : {}) };
      const got = await raw(ctx, "GET", `manifests/${desc.digest}`, {
        headers: { accept: MediaType.OciManifest },
      });
      expect(got.res.statusCode === 200, `GET by digest answered ${got.res.statusCode}`);
      let back: any;
      try {
        back = JSON.parse(got.body.toString("utf8"));
      } catch {
        back = undefined;
      }
      expect(
        back?.subject?.digest === ovms.desc.digest,
        `the manifest came back without its subject: ${got.body.toString().slice(0, 200)}`,
      );
      expect(got.body.equals(bytes), "the manifest came back with other bytes than were pushed");
    },
  },
  {
    ...reg,
    id: "registry.referrers",
    section: "§3.6",
    title:
      "referrers are listed: by the Referrers API, or through the referrers tag schema OVMS falls back to",
    async run(ctx) {
      const subject = pushed(ctx).desc.digest;
      if (!ctx.referrer) throw new Skip("needs the referrer registry.subject pushes");
      const api = await raw(ctx, "GET", `referrers/${subject}`, { headers: { accept: MediaType.OciIndex } });
      if (api.res.statusCode === 200 && hdr(api.res, "content-type")?.startsWith(MediaType.OciIndex)) {
        const list = JSON.parse(api.body.toString("utf8"))?.manifests ?? [];
        expect(
          list.some(
            (d: Descriptor) =>
              d.digest === ctx.referrer!.desc.digest && d.artifactType === MediaType.SigstoreBundle,
          ),
          `the Referrers API answers without the referrer (with its artifactType): ${api.body.toString().slice(0, 300)}`,
        );
        ctx.found.referrers = `Referrers API${ctx.referrer.ociSubject ? " (OCI-Subject on push)" : ""}`;
        return { message: `the Referrers API lists it; OVMS uses it` };
      }
      expect(
        api.res.statusCode === 404,
        `GET /referrers answered ${api.res.statusCode}: neither an index nor 404`,
      );
      // No Referrers API: what `ovm push` does instead (§3.6), then read it back.
      const r = ctx.referrer;
      await editReferrersIndex(ctx.repo, subject, (list) => list.push({ ...r.desc }));
      const tag = referrersTag(subject);
      const back = await raw(ctx, "GET", `manifests/${tag}`, { headers: { accept: MediaType.OciIndex } });
      const list =
        back.res.statusCode === 200 ? (JSON.parse(back.body.toString("utf8"))?.manifests ?? []) : [];
      expect(
        list.some((d: Descriptor) => d.digest === r.desc.digest),
        `the fallback tag ${tag} does not list the referrer (${back.res.statusCode})`,
      );
      ctx.found.referrers = `referrers tag schema (${tag}); no Referrers API`;
      return {
        message: `no Referrers API (404): OVMS keeps the referrers tag schema, tag ${tag}, which works here`,
      };
    },
  },
  {
    ...reg,
    id: "registry.blob.large",
    section: "§9",
    title: "a large blob goes up in one PUT and comes back intact",
    async run(ctx) {
      const r = await roundTrip(ctx, `large-${ctx.runId}`, ctx.largeBytes, Number.MAX_SAFE_INTEGER);
      return { measured: r.measured };
    },
  },
  {
    ...reg,
    requirement: "SHOULD",
    id: "registry.blob.chunked",
    section: "§9",
    title: "a blob goes up in PATCH chunks (what OVMS does above its chunk size)",
    async run(ctx) {
      try {
        const r = await roundTrip(ctx, `chunked-${ctx.runId}`, ctx.chunkBytes * 3 + 4099, ctx.chunkBytes);
        ctx.found.chunked = "yes";
        return { measured: { ...r.measured, chunk_mib: ctx.chunkBytes / (1 << 20) } };
      } catch (e) {
        ctx.found.chunked = "no: push blobs in one PUT (raise the chunk size above the largest layer)";
        throw e;
      }
    },
  },
  {
    ...reg,
    requirement: "INFO",
    id: "registry.blob.mount",
    section: "§9",
    title: "a blob is mounted from another repository instead of uploaded again",
    async run(ctx) {
      pushed(ctx);
      const other = ctx.client.repository(parseReference(`${ctx.repo.registry}/${ctx.repo.name}-mount:x`), {
        push: true,
      });
      const data = Buffer.from(`mount ${ctx.runId} ${randomBytes(8).toString("hex")}\n`);
      const desc = await putBlob(ctx, data);
      const how = await uploadBlob(other, desc, async () => Readable.from([data]), {
        chunkSize: 1 << 30,
        mountFrom: ctx.repo.name,
      });
      ctx.found.mount = how === "mounted" ? "yes" : "no: OVMS uploads the bytes again";
      return {
        message:
          how === "mounted" ? "mounted (201): no bytes moved" : "not mounted: OVMS uploads the bytes again",
      };
    },
  },
  {
    ...reg,
    requirement: "INFO",
    id: "registry.blob.range",
    section: "§5.5",
    title: "a blob read with Range (for inspecting RAM snapshots in place)",
    async run(ctx) {
      const cfg = JSON.parse(pushed(ctx).bytes.toString("utf8")).config as Descriptor;
      const r = await raw(ctx, "GET", `blobs/${cfg.digest}`, { headers: { range: "bytes=0-9" } });
      ctx.found.range =
        r.res.statusCode === 206 ? "yes" : `no (${r.res.statusCode}: whole blob; OVMS reads it whole)`;
      return {
        message:
          r.res.statusCode === 206
            ? `206, ${r.body.length} bytes`
            : `answered ${r.res.statusCode} with the whole blob: OVMS handles it`,
      };
    },
  },
];
