import type { StoreHandoff } from "../core/content.js";
import type { AuthState } from "./auth.js";
import type { FastGet } from "./fetch-into.js";
import type { FastPut } from "./fast-put.js";
import type { RetryPolicy } from "./retry-policy.js";
import type { Transport } from "./transport.js";

/** ClientSettings are what a RegistryClient is made with, for a twin in a worker thread. */
export interface ClientSettings {
  plainHttp: boolean;
  caFile?: string;
  userAgent: string;
  retry: RetryPolicy;
  chunkSize: number;
  highWaterMark: number;
}

/**
 * RegistryEndpoint is one registry as a Repository sees it: where its API is, the transport
 * that reaches it (authentication, retries and the rest are layers inside), and how blobs
 * move. The RegistryClient makes one per registry; repositories depend on this, not on it.
 */
export interface RegistryEndpoint {
  /** registry is `host[:port]` as in references, e.g. `127.0.0.1:5000`. */
  readonly registry: string;
  readonly transport: Transport;
  /** baseUrl is the API origin, with the scheme the registry was found to speak. */
  baseUrl(): URL;
  /** retry is the policy of the transport, which resumed downloads wait by too. */
  readonly retry: RetryPolicy;
  /** chunkSize: blobs larger than this are uploaded in PATCH chunks of this size. */
  readonly chunkSize: number;
  /** highWaterMark of response bodies. */
  readonly highWaterMark: number;
  /** fastGet is the plain-HTTP fast path for blob bodies, when the client uses one. */
  readonly fastGet?: FastGet;
  /** fastPut is the plain-HTTP fast path for upload bodies read from a local store, when the client uses one. */
  readonly fastPut?: FastPut;
  /** handoff returns the client's settings and what its authentication learnt, for a worker thread. */
  handoff(): Promise<{ client: ClientSettings; auth: AuthState }>;
}

/** RegistryHandoff is a repository as plain data, for a worker thread to open it again. */
export interface RegistryHandoff extends StoreHandoff {
  readonly kind: "registry";
  registry: string;
  name: string;
  /** push: the repository was opened for pushing (its token asks pull and push). */
  push: boolean;
  client: ClientSettings;
  auth: AuthState;
}
