/** VERSION is the version of this implementation of OVMS. */
export const VERSION = "0.1.0";
