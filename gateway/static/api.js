// Calls to the gateway's REST API: JSON requests, server-sent event streams, OpenAI error
// bodies, and the API key (kept in localStorage, sent as `Authorization: Bearer <key>`).

const KEY_STORAGE = "nanollm.apiKey";

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

/** A failed call: HTTP status and the fields of the OpenAI error body. */
export class ApiError extends Error {
  constructor(status, message, param = null, code = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.param = param;
    this.code = code;
  }
}

// Asks the user for a key after a 401; resolves true when a new key was saved. app.js sets it.
let askForKey = async () => false;

export function onKeyNeeded(prompt) {
  askForKey = prompt;
}

function headers(extra = {}) {
  const out = { ...extra };
  const key = apiKey();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's page): the status line says enough
  }
  const detail = body && body.error;
  // A 429 or 503 says when to try again; the message tells the user.
  const wait = Number(response.headers.get("Retry-After"));
  const retry = wait > 0 ? ` (try again in ${wait} s)` : "";
  if (detail && typeof detail.message === "string") {
    return new ApiError(response.status, `${detail.message}${retry}`, detail.param ?? null,
                        detail.code ?? null);
  }
  const text = (body && typeof body.detail === "string") ? body.detail : response.statusText;
  return new ApiError(response.status, `${response.status} ${text || "error"}`);
}

/** A network failure (server down, connection cut) as an ApiError a person can read; fetch's
 * own TypeError says only "Failed to fetch". An abort stays an abort. */
function unreachable(error) {
  if (isAbort(error) || error instanceof ApiError) return error;
  return new ApiError(0, `Cannot reach the server at ${location.host} (${error.message}).`);
}

async function fetchOrFail(path, init) {
  try {
    return await fetch(path, { ...init, headers: headers(init.headers) });
  } catch (error) {
    throw unreachable(error);
  }
}

/** fetch() with the key; after a 401 the user is asked for a key once and the call retried. */
async function send(path, init) {
  let response = await fetchOrFail(path, init);
  if (response.status === 401) {
    const error = await errorOf(response);
    if (!(await askForKey(error.message))) throw error;
    response = await fetchOrFail(path, init);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

/** A JSON call; resolves to the parsed body, rejects with ApiError. */
export async function call(method, path, body = undefined, { signal } = {}) {
  const init = { method, signal, headers: {} };
  if (body instanceof FormData) {
    init.body = body;  // the browser sets the multipart boundary itself
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await send(path, init);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** The JSON data of each server-sent event, until `data: [DONE]` or the end of the stream.
 * An `{"error": ...}` event (a failure after the stream began) is thrown as ApiError. */
export async function* events(method, path, body = undefined, { signal } = {}) {
  const init = { method, signal, headers: { Accept: "text/event-stream" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await send(path, init);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (error) {
        throw unreachable(error);  // the connection dropped mid-stream
      }
      const { value, done } = chunk;
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const data = dataOf(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (data === "[DONE]") return;
        if (data === null) continue;  // a comment or keep-alive
        const message = JSON.parse(data);
        if (message && message.error) {
          const e = message.error;
          throw new ApiError(0, e.message || "the stream failed", e.param ?? null,
                             e.code ?? null);
        }
        yield message;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** The data lines of one event joined, or null when it has none. */
function dataOf(event) {
  const lines = event.split("\n").filter((line) => line.startsWith("data:"));
  if (!lines.length) return null;
  return lines.map((line) => line.slice(5).replace(/^ /, "")).join("\n");
}

/** Whether an error is the one fetch raises when its AbortController fires. */
export function isAbort(error) {
  return error && error.name === "AbortError";
}
