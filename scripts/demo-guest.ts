/**
 * The demo guest's kernel command line, shared by the demo, the tests and the benchmarks:
 * serial console, quiet kernel, and a fixed TSC rate. microvm has no HPET or ACPI PM timer
 * to calibrate against, and under TCG on a busy host the PIT calibration fails and the
 * kernel stalls silently (seen with five guests on two cores); `ovms.mode=…` is appended
 * per run (see scripts/guest/init).
 */
export const DEMO_CMDLINE = "console=ttyS0 quiet panic=-1 tsc_early_khz=2000000 tsc=reliable no_timer_check";
