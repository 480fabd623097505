import { Ajv2020 } from "ajv/dist/2020.js";
import schema from "../../schemas/bootstrap.v1.json" with { type: "json" };
import type { BootstrapConfig } from "./bootstrap.generated.js";
import { ValidationError } from "./errors.js";
import { describeSchemaError } from "./validate.js";

export type { BootstrapConfig, User as BootstrapUser } from "./bootstrap.generated.js";

/** bootstrapSchema is the JSON Schema (2020-12) of a containerMode bootstrap config, as shipped in schemas/. */
export const bootstrapSchema: object = schema;

let compiled: ReturnType<Ajv2020["compile"]> | undefined;

/**
 * validateBootstrap returns `doc` typed as a bootstrap config (schemas/bootstrap.v1.json,
 * rfc §2.5), or throws ValidationError with every problem and its JSON path. Env entries are
 * also checked for a name that the guest can set (no `=` at its start, no NUL anywhere).
 */
export function validateBootstrap(doc: unknown, subject = "bootstrap config"): BootstrapConfig {
  if (!compiled) compiled = new Ajv2020({ allErrors: true, strict: true }).compile<BootstrapConfig>(schema);
  if (!compiled(doc)) throw new ValidationError(subject, (compiled.errors ?? []).map(describeSchemaError));
  const b = doc as BootstrapConfig;
  const nul = [...(b.entrypoint ?? []), ...(b.cmd ?? []), ...(b.env ?? []), b.workdir ?? ""].find((s) =>
    s.includes("\0"),
  );
  if (nul !== undefined)
    throw new ValidationError(subject, [{ path: "", message: "no string may hold a NUL byte" }]);
  return b;
}
