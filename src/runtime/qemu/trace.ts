/**
 * trace prints timestamped steps of a start to stderr when OVMS_TRACE is set, to see where the
 * milliseconds of a restore go; otherwise it is a no-op, so the hot path pays nothing for it.
 */
export const trace: (step: string) => void = process.env.OVMS_TRACE
  ? (step) => process.stderr.write(`${performance.now().toFixed(2)} ${step}\n`)
  : () => {};
