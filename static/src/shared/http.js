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
