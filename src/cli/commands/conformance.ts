import { writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import type { Command } from "commander";
import { OvmsError } from "../../core/errors.js";
import { formatReference, parseReference } from "../../core/reference.js";
import { resolveSocketPath } from "../../api/paths.js";
import type { Store } from "../../store/store.js";
import type { RegistryClient } from "../../registry/client.js";
import type { Level, Result } from "../../conformance/check.js";
import type { Report } from "../../conformance/report.js";
import { Printer, globals, openStore } from "../context.js";
import { addRegistryFlags, makeClient, positiveInt, type RegistryFlags } from "./copy.js";

/** LEVELS are what `--level` takes, and the RFC §9 levels each means. */
const LEVELS: Record<string, Level[]> = {
  basic: ["runtime-basic"],
  snapshot: ["runtime-basic", "runtime-snapshot"],
  secure: ["runtime-basic", "runtime-secure"],
  all: ["runtime-basic", "runtime-snapshot", "runtime-secure"],
};

/** OutputFlags are what every conformance subcommand takes. */
interface OutputFlags {
  junit?: string;
}

/**
 * finish prints a report (a table per level, or JSON with --json), writes JUnit XML when
 * asked, and sets the exit status: 1 when a MUST failed.
 */
async function finish(c: Command, report: Report, flags: OutputFlags): Promise<void> {
  const { formatReport } = await import("../../conformance/report.js");
  const out = new Printer(globals(c));
  if (flags.junit) {
    const { junitXml } = await import("../../conformance/junit.js");
    await writeFile(flags.junit, junitXml(report));
    out.info(`JUnit XML written to ${flags.junit}`);
  }
  out.result(report, () => formatReport(report));
  if (!report.ok) process.exitCode = 1;
}

/** progress shows each result on stderr as it comes (silent with --json or -q). */
function progress(c: Command): { onResult(r: Result): void; onStep(line: string): void } {
  const out = new Printer(globals(c));
  return {
    onResult: (r) =>
      out.info(`${r.status.padEnd(6)} ${r.requirement.padEnd(6)} ${r.section.padEnd(12)} ${r.id}`),
    onStep: (line) => out.info(line),
  };
}

/** pushTo copies a fixture from its layout to `HOST/REPO:<name>` and returns that reference. */
function pushTo(client: RegistryClient, repository: string) {
  return async (store: Store, tag: string, name: string): Promise<string> => {
    const { copy } = await import("../../registry/copy.js");
    const ref = parseReference(`${repository}:${name}`);
    await copy(store, tag, client.repository(ref, { push: true }), ref.tag, { workers: false });
    return formatReference(ref);
  };
}

const RUNTIME_HELP = `
Levels (rfc/ovms-v0.1.md §9): basic = Runtime-Basic; snapshot = Runtime-Basic + Runtime-Snapshot;
secure = Runtime-Basic + Runtime-Secure; all = the three. Repeat --level or separate with commas.

The suite builds its own artifacts from the demo guest (.cache/demo-assets-HASH, made by
scripts/demo-assets.sh; --assets, --kernel and --initrd choose others that speak the same guest
protocol, see docs/conformance.md) and hands them to the runtime as OCI layout folder paths on
its UNIX socket, or as references to --registry (needed when driving it over TCP).

Examples:
  ovm conformance runtime --socket /run/ovms/ovmd.sock --level all --junit conformance.xml
  ovm conformance runtime --url http://10.0.0.5:7070 --token "$TOKEN" --registry 10.0.0.1:5000/conf
  ovm conformance runtime --socket /run/fc-ovms.sock --kernel vmlinux --level basic --json
`;

/** register adds `ovm conformance runtime|artifact|registry`. */
export function register(program: Command): void {
  const conf = program
    .command("conformance")
    .description("check a runtime, an artifact or a registry against the OVMS conformance levels (rfc §9)");

  conf
    .command("runtime")
    .description("drive a runtime over its API (black-box) and check Runtime-Basic, -Snapshot, -Secure")
    .option("--socket <path>", "the runtime's UNIX socket (default: $OVMD_SOCKET, else the default path)")
    .option(
      "--url <url>",
      "a TCP listener of the runtime, e.g. http://127.0.0.1:7070 (with --socket: only for the token check)",
    )
    .option("--token <token>", "bearer token of the TCP listener (default: $OVMD_TOKEN)")
    .option(
      "--level <level>",
      "basic, snapshot, secure or all (repeatable)",
      (v: string, p: string[] = []) => [...p, ...v.split(",")],
    )
    .option(
      "--assets <dir>",
      "folder with vmlinuz, initrd.img, base.qcow2, diff.qcow2 (default: the demo guest, built by scripts/demo-assets.sh)",
    )
    .option("--kernel <file>", "guest kernel to build the suite's artifacts with")
    .option("--initrd <file>", "guest initrd (its /init must speak the suite's guest protocol)")
    .option("--cmdline <args>", "the guest's kernel command line before ovms.mode=…")
    .option("--registry <host/repo>", "push the suite's artifacts there and start them by reference")
    .option(
      "--runtime-store <dir>",
      "the runtime's OCI layout store, to check the snapshot artifact it writes",
    )
    .option("--accel <accel>", "accel override for every start: auto, kvm or tcg")
    .option(
      "--boot-timeout <seconds>",
      "how long a guest may take to boot",
      positiveInt("--boot-timeout"),
      180,
    )
    .option("--work <dir>", "build the artifacts in this folder and keep them")
    .option("--junit <file>", "also write the results as JUnit XML")
    .addHelpText("after", RUNTIME_HELP)
    .action(async (flags: RuntimeFlags, c: Command) => {
      const [{ runRuntimeSuite }, { guestAssets }] = await Promise.all([
        import("../../conformance/runtime-suite.js"),
        import("../../conformance/guest.js"),
      ]);
      const levels = [...new Set((flags.level ?? ["basic"]).flatMap((l) => LEVELS[l.trim()] ?? badLevel(l)))];
      if (flags.accel && !["auto", "kvm", "tcg"].includes(flags.accel))
        throw new OvmsError("USAGE", `--accel ${flags.accel}: want auto, kvm or tcg`);
      const token = flags.token ?? process.env.OVMD_TOKEN;
      const socket = flags.socket || !flags.url ? resolveSocketPath(flags.socket) : undefined;
      if (!socket && !flags.registry)
        throw new OvmsError(
          "USAGE",
          "over TCP the runtime cannot read the suite's files: give --registry HOST/REPO to push them to",
        );
      const client = flags.registry ? await makeClient({}) : undefined;
      const p = progress(c);
      try {
        const report = await runRuntimeSuite({
          target: socket ? { socketPath: socket } : { url: flags.url!, ...(token ? { token } : {}) },
          ...(socket && flags.url ? { tcp: { url: flags.url, ...(token ? { token } : {}) } } : {}),
          levels,
          assets: guestAssets({
            ...(flags.assets ? { dir: resolve(flags.assets) } : {}),
            ...(flags.kernel ? { kernel: resolve(flags.kernel) } : {}),
            ...(flags.initrd ? { initrd: resolve(flags.initrd) } : {}),
          }),
          ...(flags.cmdline ? { cmdline: flags.cmdline } : {}),
          ...(flags.registry && client
            ? { registry: flags.registry, push: pushTo(client, flags.registry) }
            : {}),
          ...(flags.runtimeStore ? { runtimeStore: resolve(flags.runtimeStore) } : {}),
          ...(flags.accel ? { accel: flags.accel as "auto" | "kvm" | "tcg" } : {}),
          ...(flags.work ? { work: resolve(flags.work) } : {}),
          bootTimeoutMs: flags.bootTimeout * 1000,
          hooks: p,
          onStep: p.onStep,
        });
        await finish(c, report, flags);
      } finally {
        await client?.close();
      }
    });

  addRegistryFlags(
    conf
      .command("artifact")
      .description(
        "check an artifact against the Artifact level (rfc §2–§5): from the store, a registry, or an OCI layout",
      )
      .argument(
        "<ref>",
        "a reference (the local store first, else pulled), or an OCI layout folder PATH[:NAME]",
      )
      .option("--junit <file>", "also write the results as JUnit XML")
      .addHelpText(
        "after",
        `
Examples:
  ovm conformance artifact example/vm:1.0
  ovm conformance artifact 127.0.0.1:5000/example/vm:fast --junit artifact.xml
  ovm conformance artifact ./vm-layout --json
  ovm --store /var/lib/ovms/store conformance artifact docker.io/ovms-conformance/snapshot:snap-1a2b3c
`,
      ),
    false,
  ).action(async (ref: string, flags: OutputFlags & RegistryFlags, c: Command) => {
    const { runArtifactSuite } = await import("../../conformance/artifact-suite.js");
    const given = /^\.{0,2}\//.test(ref) ? resolve(ref) : ref;
    const client = await makeClient(flags);
    const p = progress(c);
    try {
      const report = await runArtifactSuite({
        given,
        store: await openStore(c),
        pull: async (reference, into) => {
          const { copy } = await import("../../registry/copy.js");
          const r = parseReference(reference);
          await copy(
            client.repository(r),
            r.digest ?? r.tag!,
            into,
            formatReference({ ...r, digest: undefined }),
            {
              referrers: false,
              workers: false,
            },
          );
        },
        hooks: p,
        onStep: p.onStep,
      });
      await finish(c, report, flags);
    } finally {
      await client.close();
    }
  });

  addRegistryFlags(
    conf
      .command("registry")
      .description("check whether a registry carries OVMS artifacts, and which fallbacks OVMS needs there")
      .argument("<repository>", "HOST[:PORT]/NAME to push small test artifacts (and one large blob) under")
      .option("--large-mib <n>", "size of the large blob in MiB", positiveInt("--large-mib"), 128)
      .option("--chunk-mib <n>", "chunk size of the chunked upload in MiB", positiveInt("--chunk-mib"), 8)
      .option("--junit <file>", "also write the results as JUnit XML")
      .addHelpText(
        "after",
        `
Examples:
  ovm conformance registry 127.0.0.1:5000/conformance
  ovm conformance registry registry.example.com/team/ovms-test --large-mib 1024 --junit registry.xml
`,
      ),
    false,
  ).action(
    async (
      repository: string,
      flags: OutputFlags & RegistryFlags & { largeMib: number; chunkMib: number },
      c: Command,
    ) => {
      const { runRegistrySuite } = await import("../../conformance/registry-suite.js");
      const client = await makeClient(flags);
      try {
        const report = await runRegistrySuite({
          repository,
          client,
          largeMiB: flags.largeMib,
          chunkMiB: flags.chunkMib,
          hooks: progress(c),
        });
        await finish(c, report, flags);
      } finally {
        await client.close();
      }
    },
  );
}

/** RuntimeFlags are the flags of `ovm conformance runtime`. */
interface RuntimeFlags extends OutputFlags {
  socket?: string;
  url?: string;
  token?: string;
  level?: string[];
  assets?: string;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  registry?: string;
  runtimeStore?: string;
  accel?: string;
  bootTimeout: number;
  work?: string;
}

function badLevel(l: string): never {
  throw new OvmsError("USAGE", `--level ${l}: want basic, snapshot, secure or all`);
}
