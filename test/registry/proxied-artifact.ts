import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import type { ImageManifest } from "../../src/core/oci.js";
import { RegistryClient } from "../../src/registry/client.js";
import { copy } from "../../src/registry/copy.js";
import { tempDir } from "../helpers.js";
import { registry, type RegistryServer } from "../registry-server.js";
import { faultProxy, type FaultProxy } from "./fault-proxy.js";
import { buildArtifact, makeDisks } from "./fixtures.js";

/** Setup is an artifact pushed to a real registry, reached through a fault proxy. */
export interface Setup {
  reg: RegistryServer;
  proxy: FaultProxy;
  dir: string;
  src: Store;
  /** ref is the artifact's reference through the proxy. */
  ref: string;
  manifest: ImageManifest;
  digest: string;
  /** base is the digest of the largest layer (the base disk). */
  base: string;
}

/** setup pushes a 6 MiB artifact straight to a real registry and puts a fault proxy in front of it. */
export async function setup(t: Parameters<typeof tempDir>[0], baseMiB = 6): Promise<Setup> {
  const reg = await registry(t);
  const proxy = await faultProxy(t, reg.port);
  const dir = await tempDir(t);
  const disks = await makeDisks(dir, baseMiB);
  const src = await Store.open(join(dir, "src"));
  const built = await buildArtifact(src, `${reg.host}/test/vm:1`, disks);
  const client = new RegistryClient({ credentials: async () => undefined });
  await copy(src, `${reg.host}/test/vm:1`, client.repository(`${reg.host}/test/vm`, { push: true }), "1");
  await client.close();
  const manifest = await src.readJson<ImageManifest>(built.descriptor.digest);
  const base = [...manifest.layers].sort((a, b) => b.size - a.size)[0].digest;
  return {
    reg,
    proxy,
    dir,
    src,
    ref: `${proxy.host}/test/vm:1`,
    manifest,
    digest: built.descriptor.digest,
    base,
  };
}
