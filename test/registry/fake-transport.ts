import { Readable } from "node:stream";
import type { RetryClock } from "../../src/registry/retry-transport.js";
import type {
  ResponseBody,
  Transport,
  TransportRequest,
  TransportResponse,
} from "../../src/registry/transport.js";

/** body makes a response body like undici's: a stream that can also be drained or read as text. */
export function body(text = ""): ResponseBody {
  const r = Readable.from(text ? [Buffer.from(text)] : []) as ResponseBody;
  r.dump = async () => {
    r.destroy();
  };
  r.text = async () => text;
  return r;
}

/** answer makes a response to `url` with a status, headers and a text body. */
export function answer(
  url: URL,
  statusCode: number,
  headers: Record<string, string> = {},
  text = "",
): TransportResponse {
  return { statusCode, headers, body: body(text), url };
}

/** Answerer is what the fake sends back for the n-th request (1-based): a response, or a thrown error. */
export type Answerer = (req: TransportRequest, n: number) => TransportResponse | Promise<TransportResponse>;

/** FakeTransport is an inner transport that records every request and answers as told. */
export class FakeTransport implements Transport {
  readonly requests: TransportRequest[] = [];

  constructor(private readonly answerer: Answerer) {}

  async send(req: TransportRequest): Promise<TransportResponse> {
    this.requests.push(req);
    return this.answerer(req, this.requests.length);
  }
}

/** fakeClock records the waits of a RetryTransport instead of sleeping; jitter is fixed at its middle. */
export function fakeClock(): RetryClock & { waits: number[] } {
  const waits: number[] = [];
  return {
    waits,
    async sleep(ms) {
      waits.push(ms);
    },
    random: () => 0.5,
  };
}

/** get is a GET request of `url`, accepting 200. */
export function get(url: string, more: Partial<TransportRequest> = {}): TransportRequest {
  return { method: "GET", url: new URL(url), scopes: [], ok: [200], ...more };
}
