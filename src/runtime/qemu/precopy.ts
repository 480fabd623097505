/**
 * When QEMU's precopy (the `live` snapshot, rfc §5.8) captures a guest soundly, and how the
 * runtime makes it so on the QEMUs that do not.
 *
 * Under TCG before QEMU 9.0, precopy misses guest writes now and then (fixed upstream by commit
 * 03bfc2188f061, "physmem: Fix migration dirty bitmap coherency with TCG memory access"): the
 * dirty-bitmap sync has a fast path, taken for a RAM block whose length is a whole number of
 * bitmap words (64 pages: 256 KiB), that clears the migration's dirty bits without resetting
 * the vCPUs' TLB entries, so writes through those entries mark nothing dirty and the pages are
 * not sent again. The slow path, per page, resets them. Here a live snapshot of a busy guest
 * restored to a panicking guest about once in 15–30; a guest whose RAM is 8 KiB longer than a
 * whole number of MiB takes the slow path, and its live snapshots restored cleanly.
 */

/** WORD: the RAM block length whose multiples take the sync's fast path (64 pages of 4 KiB). */
const WORD = 256 << 10;

/** RAM_PAD: what a guest's RAM is lengthened by to leave the fast path (QEMU takes RAM in 8 KiB steps). */
export const RAM_PAD = 8 << 10;

/** fixedIn: whether this QEMU version has the upstream fix (9.0 or later); an unreadable version counts as old. */
function fixedIn(qemuVersion: string): boolean {
  return Number(/^(\d+)\./.exec(qemuVersion)?.[1]) >= 9;
}

/**
 * precopySound tells whether a live capture of a guest with these RAM blocks (its RAM, and the
 * shared memory of its devices, which the capture sends too) is sound on this accelerator and QEMU.
 */
export function precopySound(accel: string, qemuVersion: string, ramBlocks: number[]): boolean {
  if (accel !== "tcg" || fixedIn(qemuVersion)) return true;
  return ramBlocks.every((n) => n % WORD !== 0);
}

/**
 * soundMemory is the RAM a new guest gets for `bytes` asked: RAM_PAD more where that makes its
 * precopy sound. Not where it would not: a device's shared memory on the grid (`devices`, its
 * sizes, fixed by the artifact) keeps the guest on `copy` whatever its RAM.
 */
export function soundMemory(
  bytes: number,
  accel: string,
  qemuVersion: string,
  devices: number[] = [],
): number {
  if (precopySound(accel, qemuVersion, [bytes, ...devices])) return bytes;
  return precopySound(accel, qemuVersion, [bytes + RAM_PAD, ...devices]) ? bytes + RAM_PAD : bytes;
}
