// The native API, from the browser. Every call carries the key the user typed (if any).

const KEY_STORAGE = "kandinsky-serve.api-key";

export function savedKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function saveKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

function headers(extra = {}) {
  const key = savedKey();
  return key ? { "x-api-key": key, ...extra } : extra;
}

// An error the page can show as is: the server's own sentence, prefixed with the field it names.
export class ApiError extends Error {
  constructor(code, message, field = null) {
    // "body" names no field a person filled in: the message says what is wrong on its own
    const named = field && field !== "body" && !message.startsWith(field);
    super(named ? `${field}: ${message}` : message);
    this.code = code;
  }
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's HTML page, say): fall back to the status line below
  }
  const err = body && body.error;
  if (err && err.message) return new ApiError(err.code, err.message, err.field);
  return new ApiError("http_" + response.status, `The server answered ${response.status} ${response.statusText}.`);
}

async function call(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { "content-type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError("network", "Could not reach the server; is it still running?");
  }
  if (!response.ok) throw await failure(response);
  return response.json();
}

export const getConfig = () => call("GET", "/web/config");
export const createJob = (request) => call("POST", "/v1/jobs", request);
export const getJob = (id) => call("GET", `/v1/jobs/${encodeURIComponent(id)}`);
export const cancelJob = (id) => call("POST", `/v1/jobs/${encodeURIComponent(id)}/cancel`);

// One server-sent event block ("event: x\ndata: {...}") as {event, data}.
function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return data.length ? { event, data: JSON.parse(data.join("\n")) } : null;
}

// Follows a job's events until it ends and returns the final job. EventSource cannot send the
// x-api-key header, so the stream is read with fetch. Calls onProgress for each progress event.
export async function followJob(id, onProgress) {
  const response = await fetch(`/v1/jobs/${encodeURIComponent(id)}/events`, { headers: headers() }).catch(() => null);
  if (response && !response.ok) throw await failure(response);
  if (response) {
    try {
      const job = await readEvents(response.body.getReader(), onProgress);
      if (job) return job;
    } catch {
      // the connection dropped mid-stream: fall through to asking
    }
  }
  // no stream, or it broke before `done` (a proxy timeout, a restarted API node): ask until it ends
  return pollJob(id);
}

async function readEvents(reader, onProgress) {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return null;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const message = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (message && message.event === "done") return message.data;
      if (message && message.event === "progress") onProgress(message.data);
    }
  }
}

async function pollJob(id) {
  for (;;) {
    const job = await getJob(id);
    if (["succeeded", "failed", "canceled"].includes(job.state)) return job;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// A file as the base64 the canonical request takes for image, mask, hint and fuse images.
export function fileToBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(new ApiError("file", `Could not read ${file.name}.`));
    reader.readAsDataURL(file);
  });
}
