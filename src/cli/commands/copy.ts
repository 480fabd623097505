import type { Command } from "commander";
import { OvmsError } from "../../core/errors.js";
import { Annotation } from "../../core/media-types.js";
import type { Descriptor } from "../../core/oci.js";
import { formatReference, parseReference } from "../../core/reference.js";
import { formatSize, parseSize } from "../../core/size.js";
import type { CopyProgress, CopyResult } from "../../registry/copy.js";
import type { RegistryClient } from "../../registry/client.js";
import { Printer, globals, type GlobalOptions } from "../context.js";

/** RegistryFlags are the flags of every command that talks to a registry. */
export interface RegistryFlags {
  plainHttp?: boolean;
  caFile?: string;
  concurrency?: number;
  chunkSize?: string;
}

/**
 * addRegistryFlags adds --plain-http and --ca-file to a command; with `transfer` (commands
 * that move blobs) --concurrency too, and with `upload` (commands that push) --chunk-size.
 */
export function addRegistryFlags(
  cmd: Command,
  opts: { transfer?: boolean; upload?: boolean } = { transfer: true, upload: true },
): Command {
  cmd
    .option("--plain-http", "speak HTTP, not HTTPS, to the registry (always allowed for loopback registries)")
    .option("--ca-file <pem>", "trust the certificate authorities in this PEM file too");
  if (opts.transfer)
    cmd.option("--concurrency <n>", "blobs transferred at once", positiveInt("--concurrency"), 4);
  if (opts.upload)
    cmd.option("--chunk-size <size>", "upload blobs larger than this in chunks of this size (default: 256M)");
  return cmd;
}

/** positiveInt parses an integer flag ≥ 1. */
export function positiveInt(flag: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1)
      throw new OvmsError("USAGE", `${flag} ${v}: expected a whole number ≥ 1`);
    return n;
  };
}

/** parseBool reads `--referrers=false`-style flags. */
export function parseBool(flag: string): (v: string) => boolean {
  return (v) => {
    if (/^(true|1|yes)$/i.test(v)) return true;
    if (/^(false|0|no)$/i.test(v)) return false;
    throw new OvmsError("USAGE", `${flag}=${v}: expected true or false`);
  };
}

/** makeClient builds the registry client the flags describe (credentials from the docker config). */
export async function makeClient(flags: RegistryFlags): Promise<RegistryClient> {
  const { RegistryClient } = await import("../../registry/client.js");
  return new RegistryClient({
    plainHttp: flags.plainHttp,
    caFile: flags.caFile,
    chunkSize: flags.chunkSize ? parseSize(flags.chunkSize, "--chunk-size") : undefined,
  });
}

/** EXIT_ON_SIGNAL is the exit status of a transfer stopped by a signal: 128 + its number, as shells report it. */
const EXIT_ON_SIGNAL = { SIGINT: 130, SIGTERM: 143 } as const;

/**
 * interruptible runs a transfer with an AbortSignal that SIGINT (Ctrl-C) and SIGTERM fire.
 * The transfer then stops cleanly (no partial blob, no name written: see copy()), and `ovm`
 * exits 130 or 143 with one line instead of a stack of errors from every transfer it stopped.
 * A second signal exits at once, for a registry that does not let go. `view` (the progress
 * bars) is stopped before that line is written.
 */
export async function interruptible<T>(
  g: GlobalOptions,
  what: string,
  view: { stop(): void },
  run: (signal: AbortSignal) => Promise<T>,
): Promise<{ done: true; value: T } | { done: false }> {
  const controller = new AbortController();
  let got: keyof typeof EXIT_ON_SIGNAL | undefined;
  const handlers = (Object.keys(EXIT_ON_SIGNAL) as (keyof typeof EXIT_ON_SIGNAL)[]).map((sig) => {
    const handler = () => {
      if (got) process.exit(EXIT_ON_SIGNAL[got]);
      got = sig;
      controller.abort(new Error(sig));
    };
    process.on(sig, handler);
    return () => process.off(sig, handler);
  });
  try {
    return { done: true, value: await run(controller.signal) };
  } catch (e) {
    if (!got) throw e;
    view.stop();
    const message = `${what} interrupted (${got}); nothing half-written was kept`;
    process.stderr.write(
      g.json ? JSON.stringify({ error: { code: "CANCELLED", message } }) + "\n" : `ovm: ${message}\n`,
    );
    process.exitCode = EXIT_ON_SIGNAL[got];
    return { done: false };
  } finally {
    for (const off of handlers) off();
  }
}

/** ProgressView draws one bar per blob on stderr while a copy runs. */
export interface ProgressView {
  progress?: CopyProgress;
  stop(): void;
}

/**
 * progressView shows cli-progress bars (bytes, rate, per blob) when stderr is a terminal and
 * neither --json nor -q is given; otherwise it shows nothing.
 */
export async function progressView(g: GlobalOptions): Promise<ProgressView> {
  if (!process.stderr.isTTY || g.json || g.quiet) return { stop() {} };
  const { default: cliProgress } = await import("cli-progress");
  const multi = new cliProgress.MultiBar(
    {
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: false,
      fps: 8,
      format: (options, params, payload: { title: string; state: string; started: number }) => {
        const width = options.barsize ?? 30;
        const filled = Math.round(params.progress * width);
        const bar = "█".repeat(filled) + "░".repeat(width - filled);
        const secs = Math.max(0.001, (Date.now() - payload.started) / 1000);
        const rate = payload.state === "" ? `${formatSize(params.value / secs)}/s` : payload.state;
        return `${payload.title.padEnd(20).slice(0, 20)} ${bar} ${formatSize(params.value).padStart(9)}/${formatSize(params.total).padEnd(9)} ${rate}`;
      },
      barsize: 25,
    },
    cliProgress.Presets.shades_classic,
  );
  const bars = new Map<string, ReturnType<typeof multi.create>>();
  // Layers carry a title; a JSON blob without one is a config (or a referrer's payload).
  const title = (d: Descriptor) =>
    d.annotations?.[Annotation.Title] ??
    (d.mediaType.endsWith("json") ? `config ${d.digest.slice(7, 15)}` : d.digest.slice(7, 19));
  const progress: CopyProgress = {
    start(d) {
      bars.set(d.digest, multi.create(d.size, 0, { title: title(d), state: "", started: Date.now() }));
    },
    bytes(d, n) {
      bars.get(d.digest)?.increment(n);
    },
    done(d, how) {
      const bar =
        bars.get(d.digest) ?? multi.create(d.size, 0, { title: title(d), state: "", started: Date.now() });
      bars.set(d.digest, bar);
      bar.update(d.size, {
        state: how === "transferred" ? "done" : how === "mounted" ? "mounted" : "exists",
      });
    },
  };
  let stopped = false;
  return {
    progress,
    stop: () => {
      if (!stopped) multi.stop();
      stopped = true;
    },
  };
}

/** CopySummary is what push, pull and copy print with --json. */
export interface CopySummary {
  reference: string;
  digest: string;
  bytesTransferred: number;
  bytesSkipped: number;
  blobs: number;
  blobsTransferred: number;
  blobsSkipped: number;
  blobsMounted: number;
  referrers: number;
  seconds: number;
  /** policy says why the policy admitted a pull. */
  policy?: string;
  /** preloaded is where a pull put a RAM snapshot that asked to be preloaded. */
  preloaded?: string;
}

/** printSummary prints the outcome of a copy: JSON, the digest with -q, a sentence otherwise. */
export function printSummary(
  cmd: Command,
  verb: string,
  reference: string,
  r: CopyResult,
  extra: { policy?: string; preloaded?: string } = {},
): void {
  const g = globals(cmd);
  const out = new Printer(g);
  const summary: CopySummary = {
    reference,
    digest: r.digest,
    bytesTransferred: r.bytesTransferred,
    bytesSkipped: r.bytesSkipped,
    blobs: r.blobs,
    blobsTransferred: r.blobsTransferred,
    blobsSkipped: r.blobsSkipped,
    blobsMounted: r.blobsMounted,
    referrers: r.referrers,
    seconds: Math.round(r.seconds * 1000) / 1000,
    ...extra,
  };
  out.result(summary, () => {
    if (g.quiet) return r.digest;
    const notes =
      (extra.policy ? `\n  policy: ${extra.policy}` : "") +
      (extra.preloaded ? `\n  RAM snapshot preloaded into ${extra.preloaded} (preload_hint)` : "");
    const skipped = r.blobsSkipped + r.blobsMounted;
    const rate = r.seconds > 0 ? `, ${formatSize(r.bytesTransferred / r.seconds)}/s` : "";
    return (
      `${verb} ${reference} ${r.digest}\n` +
      `  ${r.blobsTransferred} blob(s) transferred (${formatSize(r.bytesTransferred)}), ${skipped} already there${r.blobsMounted ? ` or mounted (${r.blobsMounted})` : ""} (${formatSize(r.bytesSkipped)}), ` +
      `${r.referrers} referrer(s), ${r.seconds.toFixed(2)} s${rate}` +
      notes
    );
  });
}

/** register adds `ovm copy SRC DST`: registry to registry, blobs mounted when both are on one registry. */
export function register(program: Command): void {
  const cmd = program
    .command("copy")
    .alias("cp")
    .description("copy an artifact (and its referrers) from one registry repository to another")
    .argument("<src>", "source reference, e.g. registry.example/demo/vm:1.0")
    .argument("<dst>", "destination reference")
    .option(
      "--referrers <bool>",
      "also copy signatures, snapshots and other referrers",
      parseBool("--referrers"),
      true,
    )
    .option("--platform <os/arch>", "copy only this platform's manifest of a multi-platform index")
    .addHelpText(
      "after",
      `
Blobs go from registry to registry through this host (mounted instead when both repositories
are on one registry); nothing is written to the local store.

Examples:
  ovm copy 127.0.0.1:5000/demo/vm:1.0 127.0.0.1:5000/team/vm:1.0
  ovm cp registry.example.com/demo/vm:1.0 127.0.0.1:5000/demo/vm:1.0 --referrers=false`,
    );
  addRegistryFlags(cmd).action(
    async (
      src: string,
      dst: string,
      opts: RegistryFlags & { referrers: boolean; platform?: string },
      c: Command,
    ) => {
      const { copy } = await import("../../registry/copy.js");
      const s = parseReference(src);
      const d = parseReference(dst);
      const client = await makeClient(opts);
      const view = await progressView(globals(c));
      try {
        const r = await interruptible(globals(c), `copy to ${formatReference(d)}`, view, (signal) =>
          copy(client.repository(s), s.digest ?? s.tag!, client.repository(d, { push: true }), d.tag, {
            concurrency: opts.concurrency,
            referrers: opts.referrers,
            platform: opts.platform,
            progress: view.progress,
            signal,
          }),
        );
        view.stop();
        if (r.done) printSummary(c, "Copied", formatReference(d), r.value);
      } finally {
        view.stop();
        await client.close();
      }
    },
  );
}
