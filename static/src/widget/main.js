// The embeddable entry point: <script src="https://chat.example.com/widget.js" async></script>
// with optional data-chatd-* attributes (docs/embedding.md).
import css from './widget.css';
import { Widget } from './widget.js';

(function boot() {
  if (window.chatd && window.chatd.__widget) return; // the snippet was pasted twice
  const script = document.currentScript
    || [...document.querySelectorAll('script[src]')].find((s) => /\/widget\.js(\?|#|$)/.test(s.src));
  const data = (script && script.dataset) || {};
  const origin = script && script.src ? new URL(script.src, location.href).origin : location.origin;
  const cfg = {
    server: (data.chatdServer || origin).replace(/\/+$/, ''),
    token: data.chatdToken || '',
    lang: data.chatdLang || '',
    name: data.chatdName || '',
    email: data.chatdEmail || '',
    topic: data.chatdTopic || '',
    title: data.chatdTitle || '',
    position: data.chatdPosition === 'left' ? 'left' : 'right',
    open: data.chatdOpen === 'true',
  };
  const start = () => {
    const widget = new Widget(cfg, css);
    window.chatd = { ...widget.api(), __widget: true };
  };
  if (document.body) start();
  else document.addEventListener('DOMContentLoaded', start, { once: true });
})();
