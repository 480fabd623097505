/**
 * bench/push: `ovm push` against `skopeo copy oci:STORE:REF docker://…` and a raw ceiling
 * (curl uploading the same blob files, one streamed monolithic PUT each, as parallel as ovm), each run
 * into a fresh registry this bench starts, with an artifact of several layers of random data
 * (2 GiB by default).
 *
 *   npx tsc -p . && node dist/bench/push.js [--size-mib 2048] [--runs 5] [--concurrency 4]
 *
 * Contenders alternate; a fresh registry (new port, empty storage) per run means nothing is
 * skipped or mounted. Prints a table of medians and writes bench/results/push-<date>.json.
 */
import { mkdtempSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../src/store/store.js";
import type { ImageManifest } from "../src/core/oci.js";
import { startRegistry, type RegistryServer } from "../test/registry-server.js";
import { OVM, makeBenchArtifact, median, parseArgs, report, run, timed, type Series } from "./bench-lib.js";

/** curlPush uploads every blob with curl: POST for a session, then one PUT streaming the file (`-T`; `--data-binary @f` would read it all into memory first), blobs in parallel. */
function curlPushScript(
  reg: RegistryServer,
  store: Store,
  blobs: { digest: string }[],
  concurrency: number,
): string {
  const lines = blobs.map(
    (b) =>
      `up() { loc=$(curl -sf -X POST -D - -o /dev/null "http://${reg.host}/v2/bench/curl/blobs/uploads/" | tr -d '\\r' | sed -n 's/^[Ll]ocation: //p'); ` +
      `case "$loc" in *\\?*) sep='&';; *) sep='?';; esac; curl -sf -X PUT -H 'Content-Type: application/octet-stream' -H 'Expect:' -T "$1" "$loc\${sep}digest=$2" -o /dev/null; }; ` +
      `up ${store.blobPath(b.digest as `sha256:${string}`)} ${b.digest} &`,
  );
  // Run at most `concurrency` uploads at once, in groups.
  const groups: string[] = [];
  for (let i = 0; i < lines.length; i += concurrency)
    groups.push(lines.slice(i, i + concurrency).join("\n") + "\nwait");
  return `set -e\n${groups.join("\n")}\n`;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const work = mkdtempSync(join(tmpdir(), "ovms-bench-push-"));
  let reg: RegistryServer | undefined;
  try {
    process.stderr.write(`building a ${args.sizeMiB} MiB artifact…\n`);
    const src = await Store.open(join(work, "src"));
    const name = "bench/vm:1";
    const built = await makeBenchArtifact(src, join(work, "parts"), args.sizeMiB, name);
    const manifest = await src.readJson<ImageManifest>(built.descriptor.digest);
    const blobs = [manifest.config, ...manifest.layers];
    const bytes = blobs.reduce((n, b) => n + b.size, 0) + built.descriptor.size;
    process.stderr.write(
      `built ${built.reference} (${blobs.length} blobs, ${(bytes / (1 << 20)).toFixed(0)} MiB); ${args.runs} runs each…\n`,
    );

    const series: Series[] = [
      {
        name: "ovm push",
        command: `node ${OVM} --store STORE -q push --concurrency ${args.concurrency} HOST/bench/vm:1`,
        seconds: [],
      },
      {
        name: "skopeo copy",
        command: `skopeo copy -q --dest-tls-verify=false oci:STORE:docker.io/${name} docker://HOST/bench/skopeo:1`,
        seconds: [],
      },
      {
        name: "curl (ceiling)",
        command: "curl POST + PUT -T blob per blob, parallel",
        seconds: [],
      },
    ];
    const fresh = async () => {
      await reg?.stop();
      await run("sync", []);
      reg = await startRegistry();
      return reg;
    };
    for (let i = -1; i < args.runs; i++) {
      let r = await fresh();
      // ovm pushes a name of the registry it pushes to: tag the artifact for this run's registry.
      const ref = `${r.host}/bench/vm:1`;
      await src.tag(built.descriptor, ref);
      const o = await timed(process.execPath, [
        OVM,
        "--store",
        src.root,
        "-q",
        "push",
        "--concurrency",
        String(args.concurrency),
        ref,
      ]);
      await src.untag(ref);
      r = await fresh();
      const s = await timed(
        "skopeo",
        [
          "copy",
          "-q",
          "--dest-tls-verify=false",
          `oci:${src.root}:docker.io/${name}`,
          `docker://${r.host}/bench/skopeo:1`,
        ],
        {
          ...process.env,
          // A fresh HOME: skopeo's blob-info cache must not know where the blobs already are.
          HOME: mkdtempSync(join(work, "home-")),
        },
      );
      r = await fresh();
      const c = await timed("bash", ["-c", curlPushScript(r, src, blobs, args.concurrency)]);
      if (i < 0) continue;
      series[0].seconds.push(o);
      series[1].seconds.push(s);
      series[2].seconds.push(c);
      process.stderr.write(
        `run ${i + 1}: ovm ${o.toFixed(3)} s, skopeo ${s.toFixed(3)} s, curl ${c.toFixed(3)} s\n`,
      );
    }
    const [ovm, skopeo, ceiling] = series.map((x) => median(x.seconds));
    await report("push", args, bytes, series, {
      "speedup ovm vs skopeo (skopeo s / ovm s)": skopeo / ovm,
      "ovm throughput / ceiling throughput": ceiling / ovm,
    });
  } finally {
    await reg?.stop();
    if (!args.keep) await rm(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exitCode = 1;
});
