import type { Command } from "commander";
import { familiarReference, parseReference } from "../../core/reference.js";
import { formatSize } from "../../core/size.js";
import { artifactSize, isOvmsManifest, loadArtifact } from "../../artifact/artifact.js";
import { pruneSnapshotCaches } from "../../artifact/prepare.js";
import type { ImageManifest } from "../../core/oci.js";
import type { Digest } from "../../core/digest.js";
import { validateBootstrap } from "../../core/bootstrap.js";
import { Annotation } from "../../core/media-types.js";
import { Printer, globals, openStore, table } from "../context.js";

/** register adds the store commands: ls, inspect, tag, rmi (and `rm` for artifacts), gc. */
export function register(program: Command): void {
  program
    .command("ls")
    .alias("images")
    .description("list the artifacts in the local store")
    .action(async (_opts, cmd: Command) => {
      const out = new Printer(globals(cmd));
      const store = await openStore(cmd);
      const rows: {
        reference: string;
        digest: string;
        artifactType: string;
        ovms: boolean;
        created: string;
        size: number;
        ramSnapshot: boolean;
      }[] = [];
      for (const e of await store.entries()) {
        if (!e.reference) continue;
        const oci = await store.readJson<ImageManifest>(e.descriptor.digest);
        const size =
          e.descriptor.size + (oci.config?.size ?? 0) + (oci.layers ?? []).reduce((n, l) => n + l.size, 0);
        const ovms = oci.config && isOvmsManifest(oci);
        rows.push({
          reference: e.reference,
          digest: e.descriptor.digest,
          artifactType: oci.artifactType ?? oci.config?.mediaType ?? "",
          ovms,
          created: oci.annotations?.["org.opencontainers.image.created"] ?? "",
          size,
          ramSnapshot: (oci.layers ?? []).some((l) => l.mediaType === "application/vnd.ovms.ramsnap.v1+lz4"),
        });
      }
      out.result(rows, () =>
        table(
          ["REFERENCE", "DIGEST", "SNAPSHOT", "CREATED", "SIZE"],
          rows.map((r) => [
            familiarReference(parseReference(r.reference)),
            r.digest.slice(7, 19),
            r.ramSnapshot ? "yes" : "-",
            r.created,
            formatSize(r.size),
          ]),
        ),
      );
    });

  program
    .command("inspect")
    .description("show an artifact: the OVMS manifest, the OCI manifest and sizes")
    .argument("<ref>", "artifact reference (or digest)")
    .action(async (ref: string, _opts, cmd: Command) => {
      const out = new Printer(globals(cmd));
      const store = await openStore(cmd);
      const a = await loadArtifact(store, ref);
      const referrers = await store.referrers(a.descriptor);
      // A converted container image: what it runs and which ports it listens on.
      const bootstrap = a.ovms.bootstrap
        ? validateBootstrap(
            await store.readJson<unknown>(a.ovms.bootstrap.ref as Digest),
            `${ref}: bootstrap config`,
          )
        : undefined;
      const value = {
        reference: ref,
        digest: a.descriptor.digest,
        mediaType: a.descriptor.mediaType,
        artifactType: a.oci.artifactType,
        size: artifactSize(a),
        manifest: a.ovms,
        oci: a.oci,
        referrers,
        ...(bootstrap ? { bootstrap, exposedPorts: bootstrap.exposedPorts ?? [] } : {}),
      };
      out.result(value, () => {
        const m = a.ovms;
        const lines = [
          `Reference:   ${ref}`,
          `Digest:      ${a.descriptor.digest}`,
          `Type:        ${a.oci.artifactType}`,
          `Name:        ${m.name} ${m.version}`,
          `Created:     ${m.metadata?.created ?? "-"}`,
          `Size:        ${formatSize(artifactSize(a))}`,
          `Kernel:      ${m.kernel.ref} ${m.kernel.size !== undefined ? formatSize(m.kernel.size) : ""}`,
          `Cmdline:     ${m.kernel.args ?? ""}`,
        ];
        if (m.initrd)
          lines.push(
            `Initrd:      ${m.initrd.ref} ${m.initrd.size !== undefined ? formatSize(m.initrd.size) : ""}`,
          );
        (m.diskLayers ?? []).forEach((d, i) =>
          lines.push(
            `Disk ${i}:      ${d.ref} ${d.format} ${formatSize(d.size)}${d.virtualSize ? ` (virtual ${formatSize(d.virtualSize)})` : ""}${i === 0 ? " base" : " diff"}`,
          ),
        );
        if (m.ramSnapshot) lines.push(`RAM snapshot: ${m.ramSnapshot.ref} ${m.ramSnapshot.compression}`);
        for (const d of m.devices ?? []) lines.push(`Device:      ${d.type} ${d.name} ${formatSize(d.size)}`);
        if (m.resources)
          lines.push(
            `Resources:   ${m.resources.memory ? formatSize(m.resources.memory) : "-"} memory, ${m.resources.vcpus ?? "-"} vCPUs`,
          );
        if (bootstrap) {
          const q = (v: string[] | undefined) => (v?.length ? JSON.stringify(v) : "-");
          const base = a.oci.annotations?.[Annotation.BaseName];
          if (base) lines.push(`Image:       ${base} ${a.oci.annotations?.[Annotation.BaseDigest] ?? ""}`);
          lines.push(`Entrypoint:  ${q(bootstrap.entrypoint)}`, `Cmd:         ${q(bootstrap.cmd)}`);
          lines.push(`Workdir:     ${bootstrap.workdir ?? "/"}`);
          if (bootstrap.user)
            lines.push(
              `User:        ${bootstrap.user.uid}:${bootstrap.user.gid}${bootstrap.user.name ? ` (${bootstrap.user.name})` : ""}`,
            );
          for (const e of bootstrap.env ?? []) lines.push(`Env:         ${e}`);
          lines.push(`Ports:       ${bootstrap.exposedPorts?.join(", ") || "-"}`);
        }
        for (const r of referrers) lines.push(`Referrer:    ${r.digest} ${r.artifactType ?? ""}`);
        return lines.join("\n");
      });
    });

  program
    .command("tag")
    .description("give an artifact another name")
    .argument("<src>", "existing reference")
    .argument("<dst>", "new reference")
    .action(async (src: string, dst: string, _opts, cmd: Command) => {
      const out = new Printer(globals(cmd));
      const store = await openStore(cmd);
      const desc = await store.resolve(src);
      await store.tag(desc, dst);
      out.result({ source: src, reference: dst, digest: desc.digest }, () => undefined);
    });

  program
    .command("rmi")
    .description("remove an artifact name from the store (blobs go with `ovm gc`)")
    .argument("<ref...>", "references")
    .action(async (refs: string[], _opts, cmd: Command) => removeArtifacts(refs, cmd));

  program
    .command("gc")
    .description("remove blobs that no named artifact or referrer reaches")
    .action(async (_opts, cmd: Command) => {
      const out = new Printer(globals(cmd));
      const store = await openStore(cmd);
      const r = await store.gc();
      // Preloaded snapshots (tmpfs) of blobs that are gone, and of stores that are gone.
      const cacheBytesFreed = await pruneSnapshotCaches(store);
      out.result(
        { ...r, cacheBytesFreed },
        () =>
          `removed ${r.blobsRemoved} blob(s), ${r.manifestsDropped} dangling referrer(s); freed ${formatSize(r.bytesFreed)}` +
          (cacheBytesFreed ? `, and ${formatSize(cacheBytesFreed)} of preloaded snapshots` : ""),
      );
    });
}

/** removeArtifacts untags references and prints what went. */
export async function removeArtifacts(refs: string[], cmd: Command): Promise<void> {
  const out = new Printer(globals(cmd));
  const store = await openStore(cmd);
  const removed: { reference: string; digest: string }[] = [];
  for (const ref of refs) {
    const d = await store.untag(ref);
    removed.push({ reference: ref, digest: d.digest });
  }
  out.result({ removed }, () => removed.map((r) => `Untagged: ${r.reference} (${r.digest})`).join("\n"));
}
