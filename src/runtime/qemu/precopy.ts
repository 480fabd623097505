/**
 * When QEMU's precopy (the `live` snapshot, rfc §5.8) captures a guest soundly.
 *
 * Under TCG before QEMU 9.0, precopy misses guest writes now and then (fixed upstream by commit
 * 03bfc2188f061, "physmem: Fix migration dirty bitmap coherency with TCG memory access"): the
 * dirty-bitmap sync has a fast path, taken for a RAM block whose length is a whole number of
 * bitmap words (64 pages: 256 KiB), that clears the migration's dirty bits without resetting
 * the vCPUs' TLB entries, so writes through those entries mark nothing dirty and the pages are
 * not sent again. The slow path, per page, resets them. Here a live snapshot of a busy guest
 * restored to a spinning or panicking guest about once in 15–35 when its RAM was on that grid;
 * with RAM 8 KiB off it (192 MiB + 8 KiB, `--memory 196616K`) none did in 111. The runtime
 * does not change the size asked: guests with RAM off the grid were also seen, 3 times in ~270
 * cold boots under load (0 in ~230 on the grid), to stop after their first console line with
 * the vCPU idle. It takes `live` snapshots by default only where every RAM block is off the grid.
 */

/** WORD: the RAM block length whose multiples take the sync's fast path (64 pages of 4 KiB). */
const WORD = 256 << 10;

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
