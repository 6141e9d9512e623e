// Message bodies are plain text (docs/protocol.md#message): fenced code blocks become
// <pre><code>, inline `code` and http(s) links are recognised, and everything else
// stays text.
import { h } from './dom.js';

const FENCE = /```([\w+#.-]*)[^\S\n]*\n?([\s\S]*?)\n?```/g;
const INLINE = /(`[^`\n]+`)|(\bhttps?:\/\/[^\s<>"'`]+[^\s<>"'`.,;:!?)\]}])/g;

export function renderBody(body) {
  const frag = document.createDocumentFragment();
  let last = 0;
  FENCE.lastIndex = 0;
  let m;
  while ((m = FENCE.exec(body)) !== null) {
    if (m.index > last) inline(frag, trimNewlines(body.slice(last, m.index)));
    const code = h('code', { text: m[2] });
    if (m[1]) code.dataset.lang = m[1];
    frag.append(h('pre', { class: 'code', tabIndex: 0 }, code));
    last = FENCE.lastIndex;
  }
  if (last < body.length) inline(frag, trimNewlines(body.slice(last)));
  return frag;
}

function trimNewlines(text) {
  return text.replace(/^\n+|\n+$/g, '');
}

function inline(frag, text) {
  if (!text) return;
  const p = h('p', { class: 'text' });
  let last = 0;
  INLINE.lastIndex = 0;
  let m;
  while ((m = INLINE.exec(text)) !== null) {
    if (m.index > last) p.append(text.slice(last, m.index));
    if (m[1]) p.append(h('code', { class: 'inline', text: m[1].slice(1, -1) }));
    else p.append(safeLink(m[2]));
    last = INLINE.lastIndex;
  }
  if (last < text.length) p.append(text.slice(last));
  frag.append(p);
}

function safeLink(url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return document.createTextNode(url);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    return document.createTextNode(url);
  }
  return h('a', { href: parsed.href, target: '_blank', rel: 'noopener noreferrer nofollow', text: url });
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}
