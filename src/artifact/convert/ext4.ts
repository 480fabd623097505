import { execFile } from "node:child_process";
import { copyFile, link, mkdir, mkdtemp, rm, statfs, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { OvmsError } from "../../core/errors.js";
import type { LayerCache } from "./layer-cache.js";
import type { RootFs, RootNode } from "./rootfs.js";

/**
 * Makes an ext4 filesystem image of a merged root filesystem without root privileges and
 * without mounting anything (e2fsprogs 1.47):
 *
 *  1. a staging tree holds the structure and contents only: folders, symlinks, and regular
 *     files hard-linked from the layer cache (copied when the cache is on another filesystem);
 *     device nodes and fifos are left out, since an unprivileged user cannot make them;
 *  2. `mke2fs -t ext4 -d STAGING` copies it into a sparse image file (e2fsprogs sorts folder
 *     entries, so the staging tree's creation order does not matter);
 *  3. `debugfs -w` then sets what the staging tree could not carry, for every path, from the
 *     layers' tar headers: type and mode (set-id bits included), uid and gid, times,
 *     extended attributes (`ea_set`), and creates the device nodes and fifos (`mknod`);
 *  4. `e2fsck -fn` checks the result.
 *
 * Reproducible: a fixed UUID and hash seed (from the image digest), every time from the tar
 * headers or the fixed time `E2FSPROGS_FAKE_TIME` (superblock, lost+found), so the same image
 * always gives the same bytes.
 */

/** ContentFiles finds the content of a regular file of a RootFs: the layer cache, or a directory's own files. */
export type ContentFiles = Pick<LayerCache, "contentPath">;

/** Ext4Options are what shapes the filesystem. */
export interface Ext4Options {
  /** Free space added to the content (bytes). */
  sizeBuffer: number;
  /** The largest filesystem to make (bytes); more is IMAGE_UNSUPPORTED. */
  maxSize: number;
  /** Seconds since the epoch for everything without a time of its own. */
  time: number;
  /** The filesystem UUID, also its directory hash seed. */
  uuid: string;
  progress?: (line: string) => void;
  /** signal kills the e2fsprogs tool running (CANCELLED). */
  signal?: AbortSignal;
}

/** Ext4Result says what was made. */
export interface Ext4Result {
  /** Bytes of content: file data and folders, rounded to blocks. */
  contentBytes: number;
  /** Size of the filesystem (the disk the guest sees). */
  sizeBytes: number;
  /** Paths in the filesystem. */
  paths: number;
}

const BLOCK = 4096;
const MIB = 1 << 20;
const JOURNAL_MIB = 4;

/** estimate counts the content of a root filesystem, in blocks as ext4 stores it. */
export function estimate(root: RootFs): { contentBytes: number; paths: number } {
  let bytes = 0;
  const seen = new Set<string>();
  let children = 0;
  for (const n of root.nodes.values()) {
    children++;
    if (n.type === "file" && n.content) {
      const key = `${n.content.layer}/${n.content.n}`;
      if (seen.has(key)) continue;
      seen.add(key);
      bytes += Math.ceil((n.size ?? 0) / BLOCK) * BLOCK;
    } else if (n.type === "dir") bytes += BLOCK;
    else if (n.type === "symlink" && (n.target?.length ?? 0) > 59) bytes += BLOCK;
  }
  // Folder entries (~32 bytes per name) beyond each folder's first block.
  bytes += Math.ceil((children * 40) / BLOCK) * BLOCK;
  return { contentBytes: bytes, paths: root.nodes.size };
}

/**
 * buildExt4 writes the root filesystem as a raw ext4 image `out` (sparse), in `work` (a
 * scratch folder on the same filesystem as the cache, removed by the caller).
 */
export async function buildExt4(
  root: RootFs,
  cache: ContentFiles,
  work: string,
  out: string,
  opts: Ext4Options,
): Promise<Ext4Result> {
  const { contentBytes, paths } = estimate(root);
  const inodes = paths + 1024 + Math.ceil(opts.sizeBuffer / (16 * 1024));
  const overhead = inodes * 256 + JOURNAL_MIB * MIB + Math.ceil(contentBytes * 0.03) + 2 * MIB;
  let size = roundUp(contentBytes + overhead + opts.sizeBuffer, MIB);
  if (size > opts.maxSize)
    throw new OvmsError(
      "IMAGE_UNSUPPORTED",
      `the root filesystem would be ${mib(size)} MiB (${mib(contentBytes)} MiB of content + ${mib(opts.sizeBuffer)} MiB buffer), more than the limit of ${mib(opts.maxSize)} MiB (--max-size)`,
    );
  const fs = await statfs(work);
  const free = fs.bavail * fs.bsize;
  if (free < 2 * (contentBytes + overhead))
    throw new OvmsError(
      "INSUFFICIENT_RESOURCES",
      `converting needs about ${mib(2 * (contentBytes + overhead))} MiB of scratch space in ${work}; ${mib(free)} MiB are free`,
    );

  const staging = await mkdtemp(join(work, "rootfs-"));
  opts.progress?.(`staging ${paths} paths (${mib(contentBytes)} MiB of content)`);
  await stage(root, cache, staging);

  const env = {
    ...process.env,
    E2FSPROGS_FAKE_TIME: String(opts.time),
    SOURCE_DATE_EPOCH: String(opts.time),
  };
  for (let attempt = 0; ; attempt++) {
    opts.progress?.(`mke2fs: ${mib(size)} MiB ext4, ${inodes} inodes`);
    await rm(out, { force: true });
    try {
      await tool(
        "mke2fs",
        [
          "-q",
          "-F",
          "-t",
          "ext4",
          "-b",
          String(BLOCK),
          "-N",
          String(inodes),
          "-I",
          "256",
          "-J",
          `size=${JOURNAL_MIB}`,
          "-L",
          "ovms-rootfs",
          "-U",
          opts.uuid,
          "-E",
          `hash_seed=${opts.uuid},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard`,
          "-d",
          staging,
          out,
          `${size / 1024}k`,
        ],
        env,
        opts.signal,
      );
      break;
    } catch (e) {
      // The estimate was short (very many small files, large folders): grow by a quarter, the
      // same way every time, so the result stays reproducible.
      const full = /no space|could not allocate|not enough|too many/i.test((e as Error).message);
      if (!full || attempt >= 4) throw e;
      size = roundUp(size * 1.25, MIB);
      if (size > opts.maxSize) throw e;
    }
  }

  opts.progress?.(`debugfs: ownership, modes, times, xattrs and device nodes of ${paths} paths`);
  const script = await fixupScript(root, work);
  const { stderr } = await tool("debugfs", ["-w", "-f", script, out], env, opts.signal);
  const problems = stderr
    .split("\n")
    .filter((l) => l.trim() && !/^debugfs \d/.test(l))
    .slice(0, 5);
  if (problems.length)
    throw new OvmsError(
      "TOOL_FAILED",
      `debugfs could not set up the root filesystem: ${problems.join("; ")}`,
    );
  await tool("e2fsck", ["-fn", out], env, opts.signal);
  await rm(staging, { recursive: true, force: true });
  return { contentBytes, sizeBytes: size, paths };
}

/**
 * stage makes the staging tree: folders, symlinks, and each regular file's content hard-linked
 * from the cache (a second path of one inode is linked to the first, so mke2fs sees it as
 * a hard link); special files are left to debugfs.
 */
async function stage(root: RootFs, cache: ContentFiles, staging: string): Promise<void> {
  const first = new Map<string, string>();
  for (const p of root.paths()) {
    if (p === "") continue;
    const n = root.nodes.get(p)!;
    const at = join(staging, p);
    if (n.type === "dir") await mkdir(at);
    else if (n.type === "symlink") await symlink(n.target ?? "", at);
    else if (n.type === "file") {
      const key = `${n.content!.layer}/${n.content!.n}`;
      const prior = first.get(key);
      if (prior) await link(prior, at);
      else {
        const src = cache.contentPath(n.content!.layer, n.content!.n);
        await link(src, at).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== "EXDEV" && e.code !== "EPERM" && e.code !== "EMLINK") throw e;
          return copyFile(src, at);
        });
        first.set(key, at);
      }
    }
  }
}

/** TYPE_BITS are the i_mode file type bits of each node type. */
const TYPE_BITS: Record<RootNode["type"], number> = {
  file: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  char: 0o020000,
  block: 0o060000,
  fifo: 0o010000,
};

/** quote writes a path as one debugfs argument: in double quotes, a quote doubled. */
function quote(p: string): string {
  if (/[\n\r]/.test(p))
    throw new OvmsError(
      "IMAGE_UNSUPPORTED",
      `/${p.replace(/[\n\r]/g, "?")}: a file name with a line break cannot be written by debugfs`,
    );
  return `"${p.replace(/"/g, '""')}"`;
}

/** fixupScript writes the debugfs commands that give every path its metadata, and returns the script's path. */
async function fixupScript(root: RootFs, work: string): Promise<string> {
  const lines: string[] = [];
  const xattrDir = join(work, "xattrs");
  await mkdir(xattrDir, { recursive: true });
  let nx = 0;
  for (const p of root.paths()) {
    const n = root.nodes.get(p)!;
    const path = quote(`/${p}`);
    if (n.type === "char" || n.type === "block" || n.type === "fifo") {
      const slash = p.lastIndexOf("/");
      lines.push(`cd ${quote(`/${slash < 0 ? "" : p.slice(0, slash)}`)}`);
      const name = quote(p.slice(slash + 1));
      lines.push(n.type === "fifo" ? `mknod ${name} p` : `mknod ${name} ${n.type[0]} ${n.major} ${n.minor}`);
      lines.push("cd /");
    }
    lines.push(`sif ${path} mode 0${(TYPE_BITS[n.type] | (n.mode & 0o7777)).toString(8)}`);
    lines.push(`sif ${path} uid ${n.uid}`);
    lines.push(`sif ${path} gid ${n.gid}`);
    for (const t of ["mtime", "atime", "ctime", "crtime"]) lines.push(`sif ${path} ${t} @${n.mtime}`);
    for (const [name, value] of Object.entries(n.xattrs ?? {}).sort(([a], [b]) => (a < b ? -1 : 1))) {
      const file = join(xattrDir, String(nx++));
      await writeFile(file, Buffer.from(value, "base64"));
      lines.push(`ea_set -f ${quote(file)} ${path} ${quote(name)}`);
    }
  }
  const script = join(work, "fixup.debugfs");
  await writeFile(script, lines.join("\n") + "\n");
  return script;
}

/** tool runs an e2fsprogs tool with `env` and returns its output; a failure says what it printed. */
function tool(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  signal?: AbortSignal,
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const o = { env, maxBuffer: 256 << 20, timeout: 30 * 60_000, ...(signal ? { signal } : {}) };
    execFile(cmd, args, o, (err, stdout, stderr) => {
      if (!err) return resolve({ stdout, stderr });
      if (signal?.aborted)
        return reject(new OvmsError("CANCELLED", `${cmd}: cancelled`, { cause: signal.reason }));
      if ((err as NodeJS.ErrnoException).code === "ENOENT")
        return reject(
          new OvmsError("TOOL_MISSING", `${cmd} is not installed (apt-get install e2fsprogs)`, {
            cause: err,
          }),
        );
      reject(
        new OvmsError(
          "TOOL_FAILED",
          `${cmd}: ${(String(stderr).trim() || String(stdout).trim() || err.message).slice(0, 2000)}`,
          { cause: err },
        ),
      );
    });
  });
}

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

function mib(n: number): number {
  return Math.ceil(n / MIB);
}
