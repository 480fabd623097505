import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { MediaType } from "../core/media-types.js";
import { Skip, expect, type Check } from "./check.js";
import type { ArtifactContext } from "./artifact-source.js";
import { decodeRamsnap, type DecodedRamsnap, type RamsnapRule } from "./ramsnap-decode.js";

/**
 * RAM snapshots (rfc §5.2–§5.5) and snapshot artifacts (§5.8), one check per group of rules,
 * on the independent decoding of ramsnap-decode.ts; and the promise of §5.1 that the standard
 * `lz4` tool reads the blob whole.
 */

type C = Check<ArtifactContext>;
const must = { level: "artifact" as const, requirement: "MUST" as const };

/** decoded is the artifact's RAM snapshot read once, or a skip when it has none. */
async function decoded(a: ArtifactContext): Promise<DecodedRamsnap> {
  const m = a.needConfig();
  if (!m.ramSnapshot) throw new Skip("no RAM snapshot");
  return a.once("ramsnap", () => decodeRamsnap(a, m.ramSnapshot.ref));
}

/** rule is a check that the problems of one group of rules are none. */
function rule(
  id: string,
  section: string,
  title: string,
  r: RamsnapRule,
  requirement: "MUST" | "SHOULD" = "MUST",
): C {
  return {
    ...must,
    requirement,
    id,
    section,
    title,
    async run(a) {
      const d = await decoded(a);
      if (r !== "layout" && !d.readable)
        throw new Skip("the blob's index cannot be read (see artifact.ramsnap.layout)");
      const p = d.problems[r];
      expect(!p.length, p.slice(0, 6).join("; ") + (p.length > 6 ? ` (and ${p.length - 6} more)` : ""));
      if (r === "layout") return { measured: { bytes: d.size, frames: d.frames } };
    },
  };
}

/** RAMSNAP_CHECKS are §5. */
export const RAMSNAP_CHECKS: C[] = [
  rule(
    "artifact.ramsnap.layout",
    "§5.2, §5.5",
    "frames M, D, B… back to back, then a skippable frame X ending in the OVMSIDX1 trailer",
    "layout",
  ),
  rule(
    "artifact.ramsnap.frames",
    "§5.2",
    "every frame is a standard LZ4 frame with a content checksum, and decompresses",
    "frames",
  ),
  rule("artifact.ramsnap.content-size", "§5.2", "frames carry their content size", "contentSize", "SHOULD"),
  rule(
    "artifact.ramsnap.metadata",
    "§5.3",
    "frame M is `OVMS-RAMSNAP 1`, then metadata with every member and valid extents",
    "metadata",
  ),
  rule(
    "artifact.ramsnap.device-state",
    "§5.4",
    "frame D has the size and SHA-256 the metadata gives",
    "deviceState",
  ),
  rule(
    "artifact.ramsnap.index",
    "§5.4–§5.5",
    "the index's blocks are exactly the extents cut into blockSize pieces",
    "index",
  ),
  rule("artifact.ramsnap.blocks", "§5.4", "each memory frame holds exactly its block's bytes", "blocks"),
  {
    ...must,
    id: "artifact.ramsnap.lz4-tool",
    section: "§5.1–§5.2",
    title: "`lz4 -d` reads the blob whole: metadata, device state and memory, index skipped",
    async run(a) {
      const d = await decoded(a);
      if (!d.lz4Output) throw new Skip("the blob's frames could not be read");
      const got = await lz4Digest(a.blobPath(a.config.ramSnapshot.ref));
      if (got === undefined) throw new Skip("the lz4 command is not installed");
      expect(got === d.lz4Output, "`lz4 -d` prints something else than the frames' contents in order");
    },
  },
  {
    ...must,
    id: "artifact.snapshot",
    section: "§5.8",
    title: "a snapshot artifact: lz4, subject set, the captured diff last, runtimeHints.machine as run",
    async run(a) {
      const m = a.needConfig();
      if (!m.ramSnapshot) throw new Skip("no RAM snapshot");
      const bad: string[] = [];
      if (m.ramSnapshot.compression !== "lz4")
        bad.push(`compression ${m.ramSnapshot.compression}, producers write lz4`);
      const layer = a.layer(m.ramSnapshot.ref);
      if (layer && layer.mediaType !== MediaType.RamSnapshot)
        bad.push(`the ramsnap layer's media type is ${layer.mediaType}`);
      if (!a.oci?.subject) bad.push("no subject (the artifact the instance was started from)");
      const d = await decoded(a);
      if (d.metadata && m.runtimeHints?.machine !== d.metadata.machine)
        bad.push(
          `runtimeHints.machine ${m.runtimeHints?.machine}, the snapshot ran on ${d.metadata.machine}`,
        );
      const disks: any[] = m.diskLayers ?? [];
      if (disks.length > 1 && !disks[disks.length - 1]?.parent) bad.push("the captured diff has no parent");
      expect(!bad.length, bad.join("; "));
    },
  },
];

/** lz4Digest runs `lz4 -dc` on a file and hashes what it prints; undefined when lz4 is missing. */
function lz4Digest(path: string): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    const child = spawn("lz4", ["-dc"], { stdio: ["pipe", "pipe", "pipe"] });
    let err = "";
    child.on("error", (e: NodeJS.ErrnoException) => (e.code === "ENOENT" ? resolve(undefined) : reject(e)));
    child.stdout.on("data", (c: Buffer) => h.update(c));
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    child.on("close", (code) =>
      code === 0 ? resolve(h.digest("hex")) : reject(new Error(`lz4 -d failed: ${err.trim()}`)),
    );
    createReadStream(path)
      .on("error", reject)
      .pipe(child.stdin)
      .on("error", () => undefined);
  });
}
