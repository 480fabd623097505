/* Generated from schemas/bootstrap.v1.json by scripts/gen-types.mjs. Do not edit. */

/**
 * The bootstrap config of a containerMode artifact (rfc/ovms-v0.1.md §2.5): how OVMS-Init starts the image's program. Carried as a layer of media type application/vnd.ovms.bootstrap.config.v1+json that the OVMS manifest names in `bootstrap`. A converter takes it from the OCI image config (Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts, StopSignal), resolving the user against the image's /etc/passwd and /etc/group. Unknown members are refused.
 */
export interface BootstrapConfig {
  /**
   * Version of this schema; always 1.
   */
  schemaVersion: 1;
  /**
   * Media type of this document.
   */
  mediaType: "application/vnd.ovms.bootstrap.config.v1+json";
  /**
   * The program and its first arguments; a start's command override is appended to it (OCI Entrypoint).
   */
  entrypoint?: string[];
  /**
   * Default arguments after the entrypoint, or the whole command when there is none; replaced by a start's command override (OCI Cmd).
   */
  cmd?: string[];
  /**
   * The program's environment as NAME=VALUE strings; a start's overrides replace or add names.
   */
  env?: string[];
  /**
   * Absolute path of the program's working folder (default /); made when it does not exist.
   */
  workdir?: string;
  user?: User;
  /**
   * Ports the program listens on, `PORT/PROTOCOL` (tcp, udp or sctp), sorted.
   */
  exposedPorts?: string[];
  /**
   * The signal OVMS-Init sends the program when the VM is asked to stop (default SIGTERM).
   */
  stopSignal?: string;
}
/**
 * Whom the program runs as, as numbers (resolved by the converter). Supplementary groups are not set in v0.1.
 */
export interface User {
  uid: number;
  gid: number;
  /**
   * The image's User as written (`nobody`, `1000:1000`), for people.
   */
  name?: string;
}
