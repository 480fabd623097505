import { OvmsError } from "./errors.js";
import { isDigest, type Digest } from "./digest.js";

/**
 * Reference names an artifact: `[registry[:port]/]repository[:tag][@digest]`, with the
 * docker defaults (registry docker.io, `library/` for one-component names, tag `latest`).
 * Grammar: https://github.com/distribution/reference/blob/main/reference.go
 */
export interface Reference {
  /** Registry host with optional port, e.g. `docker.io`, `127.0.0.1:5000`. */
  registry: string;
  /** Repository path inside the registry, e.g. `library/ubuntu`. */
  repository: string;
  tag?: string;
  digest?: Digest;
}

export const DEFAULT_REGISTRY = "docker.io";
export const DEFAULT_TAG = "latest";

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const HOST =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$/;

function bad(input: string, why: string): OvmsError {
  return new OvmsError("INVALID_REFERENCE", `invalid reference "${input}": ${why}`);
}

/** parseReference parses and normalizes a reference, or throws INVALID_REFERENCE saying why. */
export function parseReference(input: string): Reference {
  if (input.length === 0) throw bad(input, "empty");
  if (/\s/.test(input)) throw bad(input, "contains whitespace");
  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    const d = rest.slice(at + 1);
    if (!isDigest(d)) throw bad(input, `"${d}" is not a sha256 digest (sha256: + 64 lowercase hex)`);
    digest = d;
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const slash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > slash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(input, `tag "${tag}" must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`);
  }
  if (rest.length === 0) throw bad(input, "missing repository name");
  let registry = DEFAULT_REGISTRY;
  let path = rest;
  const first = rest.indexOf("/");
  if (first >= 0) {
    const head = rest.slice(0, first);
    if (head.includes(".") || head.includes(":") || head === "localhost" || head.startsWith("[")) {
      registry = head;
      path = rest.slice(first + 1);
      if (!HOST.test(registry)) throw bad(input, `registry "${registry}" is not a valid host[:port]`);
    }
  }
  if (registry === "index.docker.io") registry = DEFAULT_REGISTRY;
  if (path.length === 0) throw bad(input, "missing repository name");
  if (path !== path.toLowerCase()) throw bad(input, "repository name must be lowercase");
  const parts = path.split("/");
  for (const p of parts) {
    if (!COMPONENT.test(p)) {
      throw bad(
        input,
        `path component "${p}" must be lowercase letters, digits and single separators (. _ __ -)`,
      );
    }
  }
  if (registry === DEFAULT_REGISTRY && parts.length === 1) path = `library/${path}`;
  if (registry.length + 1 + path.length > 255) throw bad(input, "name longer than 255 characters");
  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  const ref: Reference = { registry, repository: path };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** formatReference writes the full normalized form, e.g. `docker.io/library/ubuntu:latest`. */
export function formatReference(r: Reference): string {
  return `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : ""}${r.digest ? `@${r.digest}` : ""}`;
}

/** familiarReference writes the short form people type, e.g. `ubuntu:latest`. */
export function familiarReference(r: Reference): string {
  let name = `${r.registry}/${r.repository}`;
  if (r.registry === DEFAULT_REGISTRY) {
    name = r.repository.startsWith("library/") ? r.repository.slice(8) : r.repository;
  }
  return `${name}${r.tag ? `:${r.tag}` : ""}${r.digest ? `@${r.digest}` : ""}`;
}

/** normalizeReference is formatReference(parseReference(s)). */
export function normalizeReference(s: string): string {
  return formatReference(parseReference(s));
}

/**
 * namesRegistry tells whether a reference as typed names its registry (`127.0.0.1:5000/demo/vm`,
 * `registry.example.com/vm`, `localhost/vm`) rather than leaving it to the docker.io default:
 * the same first-component rule as parseReference.
 */
export function namesRegistry(input: string): boolean {
  const first = input.split("@")[0].indexOf("/");
  if (first < 0) return false;
  const head = input.slice(0, first);
  return head.includes(".") || head.includes(":") || head === "localhost" || head.startsWith("[");
}

/** repositoryOf is `registry/repository`, the name without tag or digest. */
export function repositoryOf(r: Reference): string {
  return `${r.registry}/${r.repository}`;
}

/** withTag returns a copy of `r` naming `tag` instead (and no digest). */
export function withTag(r: Reference, tag: string): Reference {
  return { registry: r.registry, repository: r.repository, tag };
}
