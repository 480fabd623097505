/**
 * bench/pull: `ovm pull` against `skopeo copy docker://… oci:…` and the raw loopback ceiling
 * (`curl` of the same blobs to /dev/null, as parallel as ovm; and, for reference, to files), on a local registry this bench
 * starts, with an artifact of several layers of random data (2 GiB by default).
 *
 *   npx tsc -p . && node dist/bench/pull.js [--size-mib 2048] [--runs 5] [--concurrency 4]
 *
 * Every run pulls into a fresh, empty store; contenders alternate so they share the machine's
 * state; page-cache writeback is flushed (`sync`, not timed) between runs. Prints a table of
 * medians and writes bench/results/pull-<date>.json.
 */
import { readFile, rm } from "node:fs/promises";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../src/store/store.js";
import type { ImageIndex, ImageManifest } from "../src/core/oci.js";
import { RegistryClient } from "../src/registry/client.js";
import { copy } from "../src/registry/copy.js";
import { startRegistry } from "../test/registry-server.js";
import { OVM, makeBenchArtifact, median, parseArgs, report, run, timed, type Series } from "./bench-lib.js";

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const work = mkdtempSync(join(tmpdir(), "ovms-bench-pull-"));
  const reg = await startRegistry();
  try {
    process.stderr.write(`building a ${args.sizeMiB} MiB artifact…\n`);
    const src = await Store.open(join(work, "src"));
    const ref = `${reg.host}/bench/vm:1`;
    const built = await makeBenchArtifact(src, join(work, "parts"), args.sizeMiB, ref);
    const manifest = await src.readJson<ImageManifest>(built.descriptor.digest);
    const blobs = [manifest.config, ...manifest.layers];
    const bytes = blobs.reduce((n, b) => n + b.size, 0) + built.descriptor.size;
    const client = new RegistryClient({ credentials: async () => undefined });
    await copy(src, ref, client.repository(ref, { push: true }), "1");
    await client.close();
    await rm(join(work, "src"), { recursive: true, force: true });
    process.stderr.write(
      `pushed ${ref} (${blobs.length} blobs, ${(bytes / (1 << 20)).toFixed(0)} MiB); ${args.runs} runs each…\n`,
    );

    const dest = join(work, "dest");
    const ovmCmd = ["--store", dest, "-q", "pull", "--concurrency", String(args.concurrency), ref];
    const skopeoCmd = ["copy", "-q", "--src-tls-verify=false", `docker://${ref}`, `oci:${dest}:bench`];
    const curlCmd = ["-s", "-f", "--parallel", "--parallel-max", String(args.concurrency)];
    for (const b of blobs)
      curlCmd.push("-o", "/dev/null", `http://${reg.host}/v2/bench/vm/blobs/${b.digest}`);
    // For reference: the same download written to files (no hashing, no fsync).
    const curlDiskCmd = [
      "-s",
      "-f",
      "--parallel",
      "--parallel-max",
      String(args.concurrency),
      "--create-dirs",
    ];
    for (const b of blobs)
      curlDiskCmd.push(
        "-o",
        join(dest, b.digest.slice(7)),
        `http://${reg.host}/v2/bench/vm/blobs/${b.digest}`,
      );
    const series: Series[] = [
      { name: "ovm pull", command: `node ${OVM} ${ovmCmd.join(" ")}`, seconds: [] },
      { name: "skopeo copy", command: `skopeo ${skopeoCmd.join(" ")}`, seconds: [] },
      { name: "curl (ceiling)", command: `curl ${curlCmd.join(" ")}`, seconds: [] },
      { name: "curl to files", command: `curl ${curlDiskCmd.join(" ")}`, seconds: [] },
    ];
    const check = async (what: string) => {
      const index = JSON.parse(await readFile(join(dest, "index.json"), "utf8")) as ImageIndex;
      if (!index.manifests.some((m) => m.digest === built.descriptor.digest))
        throw new Error(`${what} did not store ${built.descriptor.digest}`);
    };
    // One unmeasured round warms the registry's page cache and the binaries.
    for (let i = -1; i < args.runs; i++) {
      await rm(dest, { recursive: true, force: true });
      await run("sync", []);
      const o = await timed(process.execPath, [OVM, ...ovmCmd]);
      await check("ovm pull");
      await rm(dest, { recursive: true, force: true });
      await run("sync", []);
      const s = await timed("skopeo", skopeoCmd);
      await check("skopeo copy");
      await rm(dest, { recursive: true, force: true });
      await run("sync", []);
      const c = await timed("curl", curlCmd);
      await run("sync", []);
      const cd = await timed("curl", curlDiskCmd);
      await rm(dest, { recursive: true, force: true });
      if (i < 0) continue;
      series[0].seconds.push(o);
      series[1].seconds.push(s);
      series[2].seconds.push(c);
      series[3].seconds.push(cd);
      process.stderr.write(
        `run ${i + 1}: ovm ${o.toFixed(3)} s, skopeo ${s.toFixed(3)} s, curl ${c.toFixed(3)} s, curl to files ${cd.toFixed(3)} s\n`,
      );
    }
    const [ovm, skopeo, ceiling] = series.map((s) => median(s.seconds));
    await report("pull", args, bytes, series, {
      "speedup ovm vs skopeo (skopeo s / ovm s)": skopeo / ovm,
      "ovm throughput / ceiling throughput": ceiling / ovm,
    });
  } finally {
    await reg.stop();
    if (!args.keep) await rm(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exitCode = 1;
});
