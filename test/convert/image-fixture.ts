import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { createHash } from "node:crypto";

/**
 * Test fixture: a real container image built by the test, as an OCI image layout: a busybox
 * root filesystem (the host's busybox-static, which runs in the guest) in two layers, written
 * by a small tar writer so that every entry type a layer may hold is there: folders, files
 * with set-id bits and owners, symlinks, a hard link, a character device, a fifo, an extended
 * attribute (pax SCHILY.xattr), and in the second layer a whiteout and an opaque folder.
 */

/** TarEntry is one entry the fixture's tar writer writes. */
export interface TarEntry {
  path: string;
  type?: "file" | "dir" | "symlink" | "link" | "char" | "fifo";
  data?: Buffer | string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  target?: string;
  major?: number;
  minor?: number;
  xattrs?: Record<string, Buffer | string>;
}

const FLAG = { file: "0", link: "1", symlink: "2", char: "3", dir: "5", fifo: "6" } as const;

function header(name: string, e: Partial<TarEntry>, size: number, flag: string): Buffer {
  const h = Buffer.alloc(512);
  const put = (s: string, at: number, len: number) => h.write(s.slice(0, len), at, len, "utf8");
  const oct = (n: number, at: number, len: number) => put(n.toString(8).padStart(len - 1, "0"), at, len - 1);
  put(name, 0, 100);
  oct(e.mode ?? 0o644, 100, 8);
  oct(e.uid ?? 0, 108, 8);
  oct(e.gid ?? 0, 116, 8);
  oct(size, 124, 12);
  oct(e.mtime ?? 1_700_000_000, 136, 12);
  h.write(flag, 156, 1, "latin1");
  put(e.target ?? "", 157, 100);
  h.write("ustar\u000000", 257, 8, "latin1");
  oct(e.major ?? 0, 329, 8);
  oct(e.minor ?? 0, 337, 8);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  put(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8);
  return h;
}

const pad = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from("\n")]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** tarOf writes entries as a POSIX tar (ustar, with a pax header where xattrs or long names need one). */
export function tarOf(entries: TarEntry[]): Buffer {
  const out: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? "file";
    const data = type === "file" ? Buffer.from(e.data ?? "") : Buffer.alloc(0);
    const records: Buffer[] = [];
    if (Buffer.byteLength(e.path) > 99) records.push(paxRecord("path", Buffer.from(e.path)));
    for (const [k, v] of Object.entries(e.xattrs ?? {}))
      records.push(paxRecord(`SCHILY.xattr.${k}`, Buffer.from(v)));
    if (records.length) {
      const body = Buffer.concat(records);
      out.push(header(`PaxHeaders/${e.path.slice(0, 80)}`, {}, body.length, "x"), body, pad(body.length));
    }
    out.push(header(e.path, e, data.length, FLAG[type]), data, pad(data.length));
  }
  out.push(Buffer.alloc(1024));
  return Buffer.concat(out);
}

/** APPLETS are the busybox applets the image links in /bin. */
const APPLETS = [
  "sh",
  "echo",
  "cat",
  "ls",
  "env",
  "id",
  "sleep",
  "test",
  "pwd",
  "stat",
  "mkdir",
  "printf",
  "true",
  "false",
  "kill",
  "wc",
  "head",
];

/** baseLayer is the fixture's first layer: a busybox root filesystem. */
export function baseLayer(): TarEntry[] {
  const busybox = readFileSync("/usr/bin/busybox");
  return [
    { path: "./", type: "dir", mode: 0o755 },
    { path: "bin/", type: "dir", mode: 0o755 },
    { path: "bin/busybox", data: busybox, mode: 0o755 },
    ...APPLETS.map((a): TarEntry => ({ path: `bin/${a}`, type: "symlink", target: "busybox", mode: 0o777 })),
    { path: "bin/busybox-hardlink", type: "link", target: "bin/busybox", mode: 0o755 },
    { path: "dev/", type: "dir", mode: 0o755 },
    { path: "dev/null", type: "char", major: 1, minor: 3, mode: 0o666 },
    { path: "etc/", type: "dir", mode: 0o755 },
    { path: "etc/passwd", data: "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n" },
    { path: "etc/group", data: "root:x:0:\napp:x:1000:\n" },
    { path: "etc/removed", data: "this file is whited out by the second layer\n" },
    { path: "etc/kept", data: "kept\n" },
    { path: "etc/secret", data: "only root reads this\n", mode: 0o600 },
    { path: "opt/old/", type: "dir", mode: 0o755 },
    { path: "opt/old/hidden", data: "hidden by the opaque folder of layer 2\n" },
    { path: "run/fifo", type: "fifo", mode: 0o640 },
    { path: "tmp/", type: "dir", mode: 0o1777 },
    { path: "usr/bin/setuid-tool", data: "#!/bin/sh\necho setuid\n", mode: 0o4755 },
    {
      path: "usr/bin/tagged",
      data: "has an xattr\n",
      xattrs: { "user.ovms": "tagged", "security.capability": Buffer.from([1, 0, 0, 2, 0, 32, 0, 0]) },
    },
  ];
}

/** topLayer is the fixture's second layer: a whiteout, an opaque folder, and the app's home. */
export function topLayer(): TarEntry[] {
  return [
    { path: "etc/.wh.removed" },
    { path: "etc/greeting", data: "hello from layer 2\n" },
    { path: "opt/old/.wh..wh..opq" },
    { path: "opt/old/new", data: "new in layer 2\n" },
    { path: "home/app/", type: "dir", mode: 0o750, uid: 1000, gid: 1000 },
    { path: "home/app/notes", data: "mine\n", uid: 1000, gid: 1000, mode: 0o640 },
  ];
}

/** ImageConfigFields are the parts of the image config a test may choose. */
export interface ImageConfigFields {
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  WorkingDir?: string;
  User?: string;
  ExposedPorts?: Record<string, object>;
  StopSignal?: string;
  Labels?: Record<string, string>;
}

const digestOf = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/**
 * writeImageLayout writes an OCI image layout at `dir` holding one image tagged `tag`: its
 * layers (the first gzip-compressed, the others plain tar, so both kinds are read), and an
 * image config for linux/`arch` with `config`. Returns the manifest's digest.
 */
export async function writeImageLayout(
  dir: string,
  tag: string,
  layers: TarEntry[][],
  config: ImageConfigFields,
  arch = "amd64",
): Promise<string> {
  await mkdir(join(dir, "blobs", "sha256"), { recursive: true });
  const blob = async (b: Buffer) => {
    const d = digestOf(b);
    await writeFile(join(dir, "blobs", "sha256", d.slice(7)), b);
    return { digest: d, size: b.length };
  };
  const descs = [];
  const diffIds = [];
  for (const [i, entries] of layers.entries()) {
    const tar = tarOf(entries);
    diffIds.push(digestOf(tar));
    const gz = i === 0;
    descs.push({
      mediaType: gz
        ? "application/vnd.oci.image.layer.v1.tar+gzip"
        : "application/vnd.oci.image.layer.v1.tar",
      ...(await blob(gz ? gzipSync(tar) : tar)),
    });
  }
  const cfg = Buffer.from(
    JSON.stringify({
      created: "2026-01-02T03:04:05Z",
      architecture: arch,
      os: "linux",
      config,
      rootfs: { type: "layers", diff_ids: diffIds },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", ...(await blob(cfg)) },
      layers: descs,
    }),
  );
  const m = await blob(manifest);
  await writeFile(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await writeFile(
    join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          ...m,
          annotations: { "org.opencontainers.image.ref.name": tag },
        },
      ],
    }),
  );
  return m.digest;
}
