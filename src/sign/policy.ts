import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { Ajv2020 } from "ajv/dist/2020.js";
import schema from "../../schemas/policy.v1.json" with { type: "json" };
import { OvmsError, type ValidationProblem } from "../core/errors.js";
import { jsonPath } from "../core/validate.js";
import { loadPublicKey, parsePublicKey, type TrustedKey } from "./keys.js";
import { SignError } from "./sign-error.js";

/**
 * The trust policy (schemas/policy.v1.json, documented in docs/signing/README.md §6): which
 * artifacts a pull names and a runtime starts. Loading checks everything up front, so a
 * policy that cannot be read stops the command or the daemon instead of meaning "no policy".
 */

/** Action is what a rule does: accept, require a signature with its keys, or reject. */
export type Action = "accept" | "requireSigned" | "reject";

/** Rule is one decision of a policy: its action, its keys, and the name messages give it. */
export interface Rule {
  /** name says where the rule is in the file: `scopes[1] ("127.0.0.1:5000/prod/**")`, `default`, `local`. */
  name: string;
  action: Action;
  /** keys are the keys a signature must verify with (empty: any key of the policy, for snapshots). */
  keys: TrustedKey[];
}

/** Scope is a rule for the repositories a pattern matches. */
export interface Scope extends Rule {
  match: string;
  pattern: RegExp;
  /** literal is the length of the pattern before its first wildcard: the longest wins. */
  literal: number;
}

/** Policy is a loaded, checked policy file. */
export interface Policy {
  file: string;
  keys: Map<string, TrustedKey>;
  scopes: Scope[];
  default: Rule;
  local: Rule;
  /** ramSnapshots: requireSigned (default) or accept. */
  ramSnapshots: "requireSigned" | "accept";
}

interface RawRule {
  action: Action;
  keys?: string[];
}
interface RawPolicy {
  version: 1;
  keys?: Record<string, { path?: string; pem?: string }>;
  scopes?: (RawRule & { match: string })[];
  default?: RawRule;
  local?: RawRule;
  ramSnapshots?: "requireSigned" | "accept";
}

let compiled: ReturnType<Ajv2020["compile"]> | undefined;

/** policySchema is the JSON Schema of policy files, as shipped in schemas/. */
export const policySchema: object = schema;

/**
 * patternRegExp compiles a scope's `match`: `**` any number of path components (also none),
 * `*` any characters within one component, everything else literally.
 */
export function patternRegExp(match: string): RegExp {
  let re = "";
  for (let i = 0; i < match.length; i++) {
    if (match.startsWith("/**", i) && i + 3 === match.length) {
      re += "(?:/.*)?";
      i += 2;
    } else if (match.startsWith("**/", i)) {
      re += "(?:.*/)?";
      i += 2;
    } else if (match.startsWith("**", i)) {
      re += ".*";
      i += 1;
    } else if (match[i] === "*") {
      re += "[^/]*";
    } else {
      re += match[i].replace(/[.+?^${}()|[\]\\]/g, "\\$&");
    }
  }
  return new RegExp(`^${re}$`);
}

/** policyInvalid is a CONFIG_INVALID error listing every problem of a policy file. */
function policyInvalid(file: string, problems: ValidationProblem[]): OvmsError {
  const lines = problems.map((p) => `  ${p.path || "(root)"}: ${p.message}`);
  return new SignError(
    "CONFIG_INVALID",
    `policy ${file}: ${problems.length} problem(s)\n${lines.join("\n")}`,
    {
      details: { problems },
    },
  );
}

/**
 * parsePolicy checks a policy document (schema, then: every key name a rule uses exists,
 * requireSigned has keys, patterns are valid) and loads its keys; `file` names it in errors
 * and anchors relative key paths.
 */
export async function parsePolicy(doc: unknown, file: string): Promise<Policy> {
  if (!compiled) compiled = new Ajv2020({ allErrors: true, strict: true }).compile(schema);
  if (!compiled(doc)) {
    throw policyInvalid(
      file,
      (compiled.errors ?? []).map((e) => ({
        path: jsonPath(e.instancePath, (e.params as { additionalProperty?: string }).additionalProperty),
        message:
          e.keyword === "additionalProperties"
            ? "is not a known field"
            : e.keyword === "enum"
              ? `must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(", ")}`
              : (e.message ?? e.keyword),
      })),
    );
  }
  const raw = doc as RawPolicy;
  const problems: ValidationProblem[] = [];
  const keys = new Map<string, TrustedKey>();
  for (const [name, k] of Object.entries(raw.keys ?? {})) {
    try {
      keys.set(
        name,
        k.pem !== undefined
          ? parsePublicKey(k.pem, name, `policy key ${name}`)
          : await loadPublicKey(resolve(dirname(file), k.path!), name),
      );
    } catch (e) {
      problems.push({ path: `keys.${name}`, message: (e as Error).message });
    }
  }
  const rule = (r: RawRule, name: string, path: string): Rule => {
    const ks: TrustedKey[] = [];
    for (const [i, k] of (r.keys ?? []).entries()) {
      const key = keys.get(k);
      if (key) ks.push(key);
      else if (!raw.keys?.[k])
        problems.push({ path: `${path}.keys[${i}]`, message: `no key named "${k}" in keys` });
    }
    if (r.action === "requireSigned" && !(r.keys ?? []).length)
      problems.push({ path: `${path}.keys`, message: "requireSigned needs at least one key" });
    return { name, action: r.action, keys: ks };
  };
  const scopes = (raw.scopes ?? []).map((s, i): Scope => {
    if (/\*\*\*|[\s@]/.test(s.match) || (!s.match.startsWith("file://") && s.match.includes(":/")))
      problems.push({
        path: `scopes[${i}].match`,
        message: `"${s.match}" is not a registry/repository pattern`,
      });
    const wildcard = s.match.indexOf("*");
    return {
      ...rule(s, `scopes[${i}] (match "${s.match}")`, `scopes[${i}]`),
      match: s.match,
      pattern: patternRegExp(s.match),
      literal: wildcard < 0 ? s.match.length + 1 : wildcard,
    };
  });
  const policy: Policy = {
    file,
    keys,
    scopes,
    default: rule(raw.default ?? { action: "reject" }, "default", "default"),
    local: rule(raw.local ?? { action: "accept" }, "local", "local"),
    ramSnapshots: raw.ramSnapshots ?? "requireSigned",
  };
  if (problems.length) throw policyInvalid(file, problems);
  return policy;
}

/** loadPolicy reads and checks a policy file (JSON). */
export async function loadPolicy(path: string): Promise<Policy> {
  const file = resolve(path);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new SignError(
      code === "ENOENT" ? "FILE_NOT_FOUND" : "CONFIG_INVALID",
      `policy ${path}: ${code === "ENOENT" ? "no such file" : (e as Error).message}`,
      { cause: e },
    );
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw policyInvalid(file, [{ path: "", message: `not valid JSON: ${(e as Error).message}` }]);
  }
  return parsePolicy(doc, file);
}

/**
 * ruleFor picks the rule for where an artifact came from: `local` for one made on this host,
 * else the matching scope with the longest literal prefix (the first of equals), else
 * `default`. `from` is `registry/repository`, or `file://<absolute path>` for a path.
 */
export function ruleFor(policy: Policy, from: { local: true } | { repository: string }): Rule {
  if ("local" in from) return policy.local;
  let best: Scope | undefined;
  for (const s of policy.scopes) {
    if (s.pattern.test(from.repository) && (!best || s.literal > best.literal)) best = s;
  }
  return best ?? policy.default;
}
