// The API client of the dashboard. The access token lives in this module's memory only: never in
// localStorage, sessionStorage or a cookie, so a reload signs out and no other page can read or send it.

let token = null;
let onSignedOut = () => {};

export class ApiError extends Error {
  constructor(status, message, errors = []) {
    super(message);
    this.status = status;
    this.errors = errors;
  }
}

export function setToken(value) {
  token = value;
}

export function signedIn() {
  return token !== null;
}

/** What to do when the API says the token is no longer good (401): back to the sign-in form. */
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

function authHeaders(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

/** The ApiError of a refused answer, from its problem+json body when it has one. */
async function problemOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let errors = [];
  try {
    const problem = await response.json();
    message = problem.detail || problem.title || message;
    errors = problem.errors || [];
  } catch {
    // Not JSON (a proxy's page, say): the status line is all there is to show.
  }
  if (response.status === 401 && token !== null) {
    token = null;
    onSignedOut(message);
  }
  return new ApiError(response.status, message, errors);
}

/** A JSON call: `api("/bulk-actions", {method: "POST", body: {...}})`. */
export async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  const init = { method, headers: authHeaders({ Accept: "application/json", ...headers }), signal };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await problemOf(response);
  if (response.status === 204) return null;
  return response.json();
}

/** A raw body sent as is (the import preview's first bytes), answered with JSON. */
export async function postBytes(path, bytes, contentType) {
  const response = await fetch(path, {
    method: "POST",
    headers: authHeaders({ Accept: "application/json", "Content-Type": contentType }),
    body: bytes,
  });
  if (!response.ok) throw await problemOf(response);
  return response.json();
}

/** Fetch a file with the token (a plain link could not send it) and hand it to the browser as a download. */
export async function download(path, accept, filename) {
  const response = await fetch(path, { headers: authHeaders({ Accept: accept }) });
  if (!response.ok) throw await problemOf(response);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return blob.size;
}

/**
 * Upload a file with XMLHttpRequest, the one browser API that reports upload progress:
 * `onProgress(sentBytes, totalBytes)` as the body goes out; resolves with the JSON answer.
 */
export function upload(path, file, contentType, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(authHeaders({ Accept: "application/json" }))) {
      xhr.setRequestHeader(name, value);
    }
    xhr.setRequestHeader("Content-Type", contentType);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener("load", async () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(file.size, file.size);
        resolve(JSON.parse(xhr.responseText));
        return;
      }
      const response = new Response(xhr.responseText, { status: xhr.status, statusText: xhr.statusText });
      reject(await problemOf(response));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "the upload could not reach the API")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "the upload was stopped")));
    xhr.send(file);
  });
}

const sleep = (ms) => new Promise((resolve) => window.setTimeout(resolve, ms));

/** The events of one `text/event-stream` block: `{event, id, data, retry}`. */
function parseEvent(block) {
  const event = { event: "message", id: null, data: null, retry: null };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "data") data.push(value);
    else if (field === "event") event.event = value;
    else if (field === "id") event.id = value;
    else if (field === "retry") event.retry = Number(value);
  }
  event.data = data.length ? data.join("\n") : null;
  return event;
}

/**
 * Follow `GET /bulk-actions/{id}/events` with fetch() streaming: EventSource cannot send the Authorization
 * header. Calls `onJob(job)` for each `progress` and the final `end`; reconnects with Last-Event-ID when the
 * stream drops, as EventSource would. Resolves with the terminal job, or null once `signal` aborts.
 */
export async function followJob(jobId, onJob, signal) {
  let lastId = null;
  let wait = 2000;
  while (!signal.aborted) {
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (lastId) headers["Last-Event-ID"] = lastId;
    try {
      const response = await fetch(`/bulk-actions/${jobId}/events`, { headers, signal });
      if (!response.ok) throw await problemOf(response);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let held = ""; // a CR at the end of a piece may be the first half of a CRLF
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const text = held + value;
        held = text.endsWith("\r") ? "\r" : "";
        buffer += (held ? text.slice(0, -1) : text).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (event.id) lastId = event.id;
          if (event.retry) wait = event.retry;
          if (event.data === null) continue;
          const job = JSON.parse(event.data);
          onJob(job);
          if (event.event === "end") return job;
        }
      }
    } catch (error) {
      if (signal.aborted) return null;
      if (error instanceof ApiError && error.status >= 400 && error.status < 500) throw error;
    }
    await sleep(wait);
  }
  return null;
}
