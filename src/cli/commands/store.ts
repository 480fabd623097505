import type { Command } from "commander";
import { OvmsError, isOvmsError } from "../../core/errors.js";
import { isDigest } from "../../core/digest.js";
import { familiarReference, parseReference } from "../../core/reference.js";
import { formatSize } from "../../core/size.js";
import type { ImageManifest } from "../../core/oci.js";
import type { Digest } from "../../core/digest.js";
import { Annotation, isOvmsManifest } from "../../core/media-types.js";
import { Printer, globals, openStore, table } from "../context.js";
import { eachArgument } from "../each.js";

/** register adds the store commands: ls, inspect, tag, rmi, gc. */
export function register(program: Command): void {
  program
    .command("ls")
    .alias("images")
    .description("list the artifacts in the local store")
    .option("-q, --quiet", "print only references, one per line")
    .addHelpText(
      "after",
      `
Examples:
  ovm ls
  ovm ls --json | jq -r '.[] | select(.ramSnapshot) | .reference'
  ovm rmi $(ovm ls -q)        # untag everything (then ovm gc frees the blobs)`,
    )
    .action(async (_opts, cmd: Command) => {
      const g = globals(cmd);
      const out = new Printer(g);
      const store = await openStore(cmd, "read").catch((e: unknown) => {
        // A store that does not exist yet holds nothing: listing it creates nothing.
        if (!isOvmsError(e, "NOT_FOUND")) throw e;
        out.info(`ovm: ${(e as Error).message}`);
        return undefined;
      });
      const rows: {
        reference: string;
        digest: string;
        artifactType: string;
        ovms: boolean;
        created: string;
        size: number;
        ramSnapshot: boolean;
      }[] = [];
      const tagged = (store ? await store.entries() : []).filter((e) => e.reference !== undefined);
      // Read together, not one after the other: each is a small file, a few per store.
      const manifests = await Promise.all(
        tagged.map((e) => store!.readJson<ImageManifest>(e.descriptor.digest)),
      );
      for (const [i, e] of tagged.entries()) {
        const oci = manifests[i];
        const size =
          e.descriptor.size + (oci.config?.size ?? 0) + (oci.layers ?? []).reduce((n, l) => n + l.size, 0);
        const ovms = oci.config && isOvmsManifest(oci);
        rows.push({
          reference: e.reference!,
          digest: e.descriptor.digest,
          artifactType: oci.artifactType ?? oci.config?.mediaType ?? "",
          ovms,
          created: oci.annotations?.["org.opencontainers.image.created"] ?? "",
          size,
          ramSnapshot: (oci.layers ?? []).some((l) => l.mediaType === "application/vnd.ovms.ramsnap.v1+lz4"),
        });
      }
      if (g.quiet && !g.json) {
        for (const r of rows) process.stdout.write(`${familiarReference(parseReference(r.reference))}\n`);
        return;
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
    .addHelpText(
      "after",
      `
Examples:
  ovm inspect example/vm:1.0
  ovm inspect example/vm:1.0 --json | jq .manifest.resources`,
    )
    .action(async (ref: string, _opts, cmd: Command) => {
      const out = new Printer(globals(cmd));
      // A reference that cannot be one is said so first, whatever the store holds.
      if (!isDigest(ref)) parseReference(ref);
      // Loaded here, not at the top, so that `ovm ls` does not compile the schemas (ajv).
      const [{ artifactSize, loadArtifact }, { validateBootstrap }] = await Promise.all([
        import("../../artifact/artifact.js"),
        import("../../core/bootstrap.js"),
      ]);
      const store = await openStore(cmd, "read");
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
    .addHelpText(
      "after",
      `
Examples:
  ovm tag example/vm:1.0 127.0.0.1:5000/example/vm:1.0   # then ovm push 127.0.0.1:5000/example/vm:1.0`,
    )
    .action(async (src: string, dst: string, _opts, cmd: Command) => {
      const out = new Printer(globals(cmd));
      const store = await openStore(cmd, "read");
      const desc = await store.resolve(src);
      await store.tag(desc, dst);
      out.result({ source: src, reference: dst, digest: desc.digest }, () => undefined);
    });

  program
    .command("rmi")
    .description("remove artifact names from the store (blobs go with `ovm gc`; instances: ovm rm)")
    .argument("<ref...>", "references")
    .addHelpText(
      "after",
      `
Examples:
  ovm rmi example/vm:1.0 && ovm gc
  ovm rmi 127.0.0.1:5000/demo/vm:1.0 demo/vm:old`,
    )
    .action(async (refs: string[], _opts, cmd: Command) => {
      const out = new Printer(globals(cmd));
      const store = await openStore(cmd, "read");
      const { done, errors } = await eachArgument(refs, out, async (ref) => {
        try {
          const d = await store.untag(ref);
          return { reference: ref, digest: d.digest };
        } catch (e) {
          if (!isOvmsError(e, "NOT_FOUND")) throw e;
          throw new OvmsError("NOT_FOUND", `rmi ${ref}: no such artifact in the store ${store.root}`);
        }
      });
      out.result({ removed: done, errors }, () =>
        done.map((r) => `Untagged: ${r.reference} (${r.digest})`).join("\n"),
      );
    });

  program
    .command("gc")
    .description("remove blobs that no named artifact or referrer reaches")
    .addHelpText(
      "after",
      `
Also frees the preloaded RAM snapshots (tmpfs) of blobs that went, and of stores that are gone.

Examples:
  ovm rmi example/vm:old && ovm gc`,
    )
    .action(async (_opts, cmd: Command) => {
      const out = new Printer(globals(cmd));
      const store = await openStore(cmd, "read");
      const r = await store.gc();
      // Preloaded snapshots (tmpfs) of blobs that are gone, and of stores that are gone.
      const { pruneSnapshotCaches } = await import("../../artifact/prepare.js");
      const cacheBytesFreed = await pruneSnapshotCaches(store);
      out.result(
        { ...r, cacheBytesFreed },
        () =>
          `removed ${r.blobsRemoved} blob(s), ${r.manifestsDropped} dangling referrer(s); freed ${formatSize(r.bytesFreed)}` +
          (cacheBytesFreed ? `, and ${formatSize(cacheBytesFreed)} of preloaded snapshots` : ""),
      );
    });
}
