import { RuntimeError } from "./runtime-error.js";

/**
 * RUNTIME_ADAPTERS are the runtime adapters this project ships, by the name `--runtime` and
 * `runtimeHints.preferredRuntime` use (a Runtime's `name`). v0.1 ships one: QEMU.
 */
export const RUNTIME_ADAPTERS = ["qemu"] as const;

/** GENERIC is the preferredRuntime entry that means "any conforming runtime" (rfc §2.2). */
export const GENERIC = "generic";

/**
 * checkRuntimeChoice decides whether a runtime called `installed` may run an artifact: the
 * asked runtime (`--runtime`) must be it; without one, the artifact's preferredRuntime list,
 * when it has one, must name it or `generic`. A refusal (RUNTIME_NOT_INSTALLED) names what was
 * asked, what is here, and how to go on.
 */
export function checkRuntimeChoice(
  installed: string,
  asked: string | undefined,
  preferred: string[] | undefined,
  what: string,
): void {
  if (asked !== undefined) {
    if (asked !== installed)
      throw new RuntimeError(
        "RUNTIME_NOT_INSTALLED",
        `runtime ${asked} is not installed here: this runtime runs ${installed} (known adapters: ${RUNTIME_ADAPTERS.join(", ")})`,
      );
    return;
  }
  if (!preferred?.length || preferred.includes(installed) || preferred.includes(GENERIC)) return;
  throw new RuntimeError(
    "RUNTIME_NOT_INSTALLED",
    `${what} prefers runtime ${preferred.join(", then ")} (runtimeHints.preferredRuntime), and none of them is installed here: this runtime runs ${installed}; run it anyway with --runtime=${installed}`,
  );
}
