import { readFile, stat } from "node:fs/promises";
import { resolve as resolvePath } from "node:path";
import { isDigest, sha256 } from "../core/digest.js";
import { OvmsError, ValidationError } from "../core/errors.js";
import { Annotation, MediaType } from "../core/media-types.js";
import type { Descriptor, ImageManifest } from "../core/oci.js";
import type { Store } from "../store/store.js";
import { checkedArtifact, type Artifact } from "./artifact.js";
import { assembleArtifact, type ArtifactPart } from "./assemble.js";
import { LayoutSource } from "./layout-source.js";
import { isTarFile, openLayoutTar } from "./layout-tar-source.js";
import { loadStoredArtifact } from "./resolve.js";

/** ImportOptions tune importPath. */
export interface ImportOptions {
  /** cwd is what a relative path is relative to (default: this process's working folder). */
  cwd?: string;
}

/** The titles an imported OVMS manifest's layers get: the file names they had are not known. */
const IMPORTED_TITLE = {
  kernel: "kernel",
  initrd: "initrd",
  bootstrap: "bootstrap.json",
  ramsnap: "ramsnap.lz4",
} as const;

/**
 * importPath brings the artifact a host path names into the store and returns it validated:
 * an OCI layout folder, a tar of one (read in place), or a manifest.json (an OCI image
 * manifest whose blobs are in the store, or an OVMS manifest whose parts are). `PATH:NAME`
 * picks one artifact of a layout that holds several. The artifact (and, from a layout, its
 * referrers) is recorded untagged: an import never takes over a name of the store. Its
 * `reference` is the path as given.
 */
export async function importPath(store: Store, given: string, opts: ImportOptions = {}): Promise<Artifact> {
  const path = resolvePath(opts.cwd ?? process.cwd(), given);
  let st = await stat(path).catch(() => undefined);
  let pick: string | undefined;
  let file = path;
  if (!st) {
    // PATH:NAME names one artifact of a layout that holds several.
    const colon = path.lastIndexOf(":");
    const base = colon > 0 ? path.slice(0, colon) : "";
    const baseSt = base ? await stat(base).catch(() => undefined) : undefined;
    if (!baseSt) throw new OvmsError("ARTIFACT_NOT_FOUND", `${given}: no such file or folder`);
    st = baseSt;
    file = base;
    pick = path.slice(colon + 1);
  }
  if (st.isDirectory()) return importLayout(store, await LayoutSource.open(file), given, pick);
  if (!st.isFile()) throw new OvmsError("BAD_REQUEST", `${given}: not a file or a folder`);
  if (await isTarFile(file)) return importLayout(store, await openLayoutTar(file), given, pick);
  if (pick !== undefined) throw new OvmsError("ARTIFACT_NOT_FOUND", `${given}: no such file or folder`);
  return importManifestFile(store, file, given);
}

/**
 * importLayout copies one artifact of an OCI layout (and its referrers) into the store,
 * untagged. The artifact is the one `pick` names, else the layout's only OVMS artifact.
 */
async function importLayout(
  store: Store,
  src: LayoutSource,
  given: string,
  pick?: string,
): Promise<Artifact> {
  let root: Descriptor;
  if (pick !== undefined) {
    root = await src.resolve(pick);
  } else {
    const found = await src.artifacts();
    if (found.length === 0)
      throw new OvmsError("MANIFEST_INVALID", `${given}: the OCI layout holds no OVMS artifact`);
    if (found.length > 1) {
      const names = found.map((d) => d.annotations?.[Annotation.RefName] ?? d.digest);
      throw new OvmsError(
        "BAD_REQUEST",
        `${given}: the OCI layout holds ${found.length} artifacts (${names.join(", ")}); name one as ${given}:NAME`,
      );
    }
    root = { mediaType: found[0].mediaType, digest: found[0].digest, size: found[0].size };
  }
  // Loaded when used: the registry code is not needed to run what is already in the store.
  const { copy } = await import("../registry/copy.js");
  await copy(src, root.digest, store, undefined, { referrers: true });
  return loadStoredArtifact(store, root, given);
}

/**
 * importManifestFile starts from a manifest.json: an OCI image manifest whose blobs are in
 * the store, or an OVMS manifest whose parts (by `ref`) are, for which the OCI manifest is
 * assembled the way `ovm build` assembles one. Either is checked before it is recorded.
 */
async function importManifestFile(store: Store, file: string, given: string): Promise<Artifact> {
  const st = await stat(file);
  if (st.size > 4 << 20)
    throw new OvmsError("MANIFEST_INVALID", `${given}: larger than a manifest can be (${st.size} bytes)`);
  const bytes = await readFile(file);
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString("utf8"));
  } catch {
    // The parser's message quotes the file's first bytes: not for clients who may not read it.
    throw new ValidationError(given, [{ path: "", message: "not valid JSON (nor a tar of an OCI layout)" }]);
  }
  const isOci =
    typeof doc === "object" &&
    doc !== null &&
    (doc as { schemaVersion?: unknown }).schemaVersion === 2 &&
    "config" in doc;
  let desc: Descriptor;
  if (isOci) {
    const m = doc as ImageManifest;
    for (const d of [m.config, ...(m.layers ?? [])]) {
      if (!d || !isDigest(d.digest))
        throw new OvmsError("MANIFEST_INVALID", `${given}: a descriptor has no valid digest`);
      if (!(await store.exists(d)))
        throw new OvmsError("ARTIFACT_NOT_FOUND", `${given}: blob ${d.digest} is not in the store`);
    }
    desc = { mediaType: m.mediaType ?? MediaType.OciManifest, digest: sha256(bytes), size: bytes.length };
    if (m.artifactType) desc.artifactType = m.artifactType;
    await checkedArtifact(store, desc, m, given);
    desc = await store.putManifest(m, bytes);
  } else {
    const part = async (p: ArtifactPart) => {
      const size = await store.blobSize(p.ref);
      if (size === undefined)
        throw new OvmsError("ARTIFACT_NOT_FOUND", `${given}: ${p.path} ${p.ref} is not in the store`);
      const title = p.role === "disk" ? `disk-${p.index}.tar` : IMPORTED_TITLE[p.role];
      return { size, title };
    };
    ({ descriptor: desc } = await assembleArtifact(store, doc, { what: given, blob: part, config: bytes }));
  }
  await store.addUntagged(desc);
  return loadStoredArtifact(store, desc, given);
}
