/**
 * DEMO_CMDLINE is the demo guest's kernel command line, shared by the demo, the tests, the
 * benchmarks and the conformance suite (which defines it, src/conformance/guest.ts, as the
 * command line of its guest protocol): serial console, quiet kernel, and a fixed TSC rate.
 * microvm has no HPET or ACPI PM timer to calibrate against, and under TCG on a busy host the
 * PIT calibration fails and the kernel stalls silently (seen with five guests on two cores);
 * `ovms.mode=…` is appended per run (see scripts/guest/init).
 */
export { GUEST_CMDLINE as DEMO_CMDLINE } from "../src/conformance/guest.js";
