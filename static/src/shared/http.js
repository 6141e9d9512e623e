// HTTP helpers shared by the widget and the console.

/** Uploads one file as multipart field `file`, reporting progress; resolves {status, body}. */
export function uploadFile(url, file, { headers = {}, onProgress, withCredentials = false } = {}) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', url);
    xhr.withCredentials = withCredentials;
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    xhr.responseType = 'text';
    if (onProgress) {
      xhr.upload.addEventListener('progress', (e) => {
        if (e.lengthComputable) onProgress(e.loaded / e.total);
      });
    }
    xhr.addEventListener('load', () => resolve({ status: xhr.status, body: parseJson(xhr.responseText) }));
    xhr.addEventListener('error', () => resolve({ status: 0, body: null }));
    xhr.addEventListener('abort', () => resolve({ status: 0, body: null }));
    const form = new FormData();
    form.append('file', file, file.name);
    xhr.send(form);
  });
}

/** A random id for one file's upload; its retries send the same one (Upload-Id). */
export function newUploadId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * uploadFile with an Upload-Id, sent again with the same id while no answer came back (the
 * connection failed) or the first attempt is still being stored: the server stores the
 * file once and answers a retry with the first attempt's attachment and message.
 */
export async function uploadFileRetrying(url, file, options = {}, delays = [1000, 3000, 5000]) {
  const headers = { ...(options.headers || {}), 'Upload-Id': newUploadId() };
  let res = await uploadFile(url, file, { ...options, headers });
  for (const ms of delays) {
    const busy = res.status === 409 && res.body && res.body.error
      && res.body.error.details && res.body.error.details.reason === 'upload_in_progress';
    if (res.status !== 0 && !busy) break;
    await new Promise((resolve) => setTimeout(resolve, ms));
    res = await uploadFile(url, file, { ...options, headers });
  }
  return res;
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

export async function requestJson(url, { method = 'GET', body, headers = {}, credentials } = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers } };
  if (credentials) init.credentials = credentials;
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    return { status: 0, body: null };
  }
  const text = await response.text();
  return { status: response.status, body: parseJson(text) };
}

/** Saves a blob under a file name, the way a download link would. */
export function saveBlob(blob, filename, parent = document.body) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  a.rel = 'noopener';
  a.hidden = true;
  parent.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30_000);
}

/** The error code of a refused Socket.IO connection: the server sends {code, message} as data. */
export function connectErrorCode(err) {
  const data = err && err.data;
  return data && typeof data === 'object' && typeof data.code === 'string' ? data.code : null;
}

/** Emits with an acknowledgement and a deadline; never rejects. */
export function call(socket, event, data, timeoutMs = 10_000) {
  if (!socket || !socket.connected) {
    return Promise.resolve({ ok: false, error: { code: 'disconnected', message: 'not connected' } });
  }
  return new Promise((resolve) => {
    socket.timeout(timeoutMs).emit(event, data, (err, res) => {
      if (err) resolve({ ok: false, error: { code: 'timeout', message: 'no answer in time' } });
      else resolve(res && typeof res === 'object' ? res : { ok: false, error: { code: 'internal' } });
    });
  });
}

export const TRANSIENT = new Set(['timeout', 'disconnected', 'rate_limited', 'internal', 'unavailable']);

/** Tries of a catch-up after `session:resync`, a second more apart each (docs/protocol.md#resync). */
export const RESYNC_TRIES = 5;

/**
 * A catch-up to run when the server says events may have been lost (docs/protocol.md#resync):
 * `attempt()` (resolving true once done) is tried again after 1 s, 2 s… up to RESYNC_TRIES
 * times while `live()`, then `after()` runs. A call while one runs makes one more round
 * afterwards, not a second one alongside.
 */
export function catchUpOnResync(attempt, live, after = async () => {}) {
  let running = false;
  let again = false;
  return async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        for (let n = 1; ; n += 1) {
          if (!live()) return;
          if ((await attempt()) || n >= RESYNC_TRIES) break;
          await new Promise((resolve) => setTimeout(resolve, n * 1000));
        }
        await after();
      } while (again);
    } finally {
      running = false;
    }
  };
}
