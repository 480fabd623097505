/** KEY is where the bearer token is kept: sessionStorage, so it goes when the tab closes. */
const KEY = "ovms.token";

/** ApiError is an error answer of the runtime API: its stable code and its message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export const token = {
  get: (): string | null => sessionStorage.getItem(KEY),
  set: (t: string): void => sessionStorage.setItem(KEY, t),
  clear: (): void => sessionStorage.removeItem(KEY),
};

/** onUnauthorized is called when the daemon refuses the token (set by main). */
export let onUnauthorized: (message: string) => void = () => undefined;
export function setUnauthorizedHandler(fn: (message: string) => void): void {
  onUnauthorized = fn;
}

/**
 * api calls the runtime API on the console's own origin with the bearer token and answers
 * the parsed JSON body; an error answer throws ApiError with the API's code and message.
 */
export async function api<T = any>(
  method: string,
  path: string,
  body?: unknown,
  tok = token.get(),
): Promise<T> {
  const headers: Record<string, string> = {};
  if (tok) headers.authorization = `Bearer ${tok}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    const e = new ApiError(
      res.status,
      json?.error?.code ?? `HTTP_${res.status}`,
      json?.error?.message ?? text,
    );
    if (res.status === 401 && tok === token.get()) onUnauthorized(e.message);
    throw e;
  }
  return json as T;
}

/** bearerProtocol is the WebSocket subprotocol that carries the token (browsers cannot set headers there). */
export function bearerProtocol(t: string): string {
  const b64 = btoa(String.fromCharCode(...new TextEncoder().encode(t)));
  return `ovms.bearer.${b64.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")}`;
}
