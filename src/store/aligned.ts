/**
 * Page-aligned buffers, reused within a thread. O_DIRECT reads and writes need aligned memory,
 * which a Buffer's allocation is not; a WebAssembly memory is (it is mapped whole). And reuse
 * matters as much: fresh memory costs a page fault per 4 KiB, the very cost direct I/O avoids
 * (expensive on the nested VMs this runs on, see append-file.ts).
 */

/** KEEP: spare buffers kept per size (a few files' worth in flight). */
const KEEP = 8;

const spare = new Map<number, Buffer[]>();

/** takeAligned returns a page-aligned buffer of `size` bytes (a multiple of 64 KiB), spare or new. */
export function takeAligned(size: number): Buffer {
  const reused = spare.get(size)?.pop();
  if (reused) return reused;
  const pages = size >> 16;
  if (pages << 16 !== size || pages === 0)
    throw new RangeError(`aligned buffers come in 64 KiB steps, not ${size}`);
  return Buffer.from(new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer);
}

/** giveAligned keeps `b` (from takeAligned, and no longer in use) for the next take. */
export function giveAligned(b: Buffer): void {
  let list = spare.get(b.length);
  if (!list) spare.set(b.length, (list = []));
  if (list.length < KEEP) list.push(b);
}
