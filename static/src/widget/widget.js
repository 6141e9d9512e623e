// The customer's chat widget: a launcher and a panel in a shadow root, one Socket.IO
// connection to /customer, and a resume token in localStorage so that a reload or a dropped
// network loses nothing (docs/embedding.md#reconnects-and-reloads).
import { io } from 'socket.io-client';
import { h, clear, show, uid, clientMsgId, icon, ICON_CLIP } from '../shared/dom.js';
import { STRINGS, pickLanguage, waitText } from '../shared/i18n.js';
import { formatBytes } from '../shared/text.js';
import { ThreadView } from '../shared/thread.js';
import {
  uploadFileRetrying, requestJson, saveBlob, connectErrorCode, call, TRANSIENT, catchUpOnResync,
} from '../shared/http.js';

const ICON_CHAT = 'M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z';
const ICON_MIN = 'M5 12h14';
const ICON_MORE = 'M12 5h.01M12 12h.01M12 19h.01';
const ICON_SEND = 'M4 12l16-8-6 16-3-7-7-1z';
const ICON_X = 'M6 6l12 12M18 6L6 18';
const ENDED_KEEP_MS = 60 * 60 * 1000; // an ended chat stays on screen after reloads for an hour

/** When a stored ended chat (and its resume token) is forgotten: an hour after it ended by
 * the server's clock or after this page learnt of it by its own (`forget_at`), whichever
 * comes first, so that neither clock being wrong keeps the token in the host page's storage. */
function forgetAt(creds) {
  if (!creds || !creds.ended_at) return Infinity;
  const ended = Date.parse(creds.ended_at);
  const byServer = Number.isNaN(ended) ? 0 : ended + ENDED_KEEP_MS;
  return Math.min(byServer, Number(creds.forget_at) || Infinity);
}

export class Widget {
  constructor(cfg, css) {
    this.cfg = cfg;
    this.lang = pickLanguage(cfg.lang);
    this.t = STRINGS[this.lang];
    this.keys = {
      session: `chatd:${cfg.server}:session`,
      guest: `chatd:${cfg.server}:guest`,
    };
    this.socket = null;
    this.startIds = null; // ids of the chat request being made, reused by its retries
    this.connected = false;
    this.wantConnection = false;
    this.session = null; // the session object from the server
    this.creds = null; // {session_id, resume_token}
    this.outbox = []; // [{cid, body}] in sending order
    this.flushing = false;
    this.unread = 0;
    this.isOpen = false;
    this.readSent = 0;
    this.typingSentAt = 0;
    this.typingIdle = null;
    this.otherTypingTimer = null;
    this.ticketTimer = null;
    this.blobUrls = new Map();
    this.mount(css);
    this.restore();
  }

  // ------------------------------------------------------------------ DOM

  mount(css) {
    const host = document.createElement('chatd-widget');
    // Inline !important declarations outrank any rule of the host page's style sheets.
    for (const [prop, value] of [
      ['all', 'initial'],
      ['position', 'fixed'],
      ['z-index', '2147483000'],
      ['right', '0'],
      ['bottom', '0'],
      ['width', '0'],
      ['height', '0'],
      ['display', 'block'],
      ['visibility', 'visible'],
      ['opacity', '1'],
      ['transform', 'none'],
      ['filter', 'none'],
    ]) {
      host.style.setProperty(prop, value, 'important');
    }
    host.id = 'chatd-widget';
    const shadow = host.attachShadow({ mode: 'open' });
    if ('adoptedStyleSheets' in shadow && typeof CSSStyleSheet === 'function') {
      // Constructed style sheets need no 'unsafe-inline' in the host page's CSP.
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(css);
      shadow.adoptedStyleSheets = [sheet];
    } else {
      shadow.append(h('style', { text: css }));
    }
    this.host = host;
    this.shadow = shadow;
    const t = this.t;
    const ids = { panel: uid(), title: uid(), log: uid() };

    this.badge = h('span', { class: 'badge', hidden: true, 'aria-hidden': 'true' });
    this.launcher = h(
      'button',
      {
        class: 'launcher',
        type: 'button',
        'aria-expanded': 'false',
        'aria-controls': ids.panel,
        onclick: () => (this.isOpen ? this.close() : this.open()),
      },
      icon(ICON_CHAT),
      h('span', { class: 'launcher__label', text: t.launcher }),
      this.badge,
    );
    this.subtitle = h('p', { class: 'header__subtitle' });
    this.menuBtn = h(
      'button',
      {
        class: 'icon-btn more', type: 'button', 'aria-label': t.menu, 'aria-haspopup': 'menu',
        'aria-expanded': 'false', hidden: true, onclick: () => this.toggleMenu(),
      },
      icon(ICON_MORE),
    );
    this.menu = h('ul', { class: 'menu', role: 'menu', hidden: true, 'aria-label': t.menu });
    this.menu.addEventListener('keydown', (e) => this.menuKeys(e));
    const closeBtn = h(
      'button',
      { class: 'icon-btn', type: 'button', 'aria-label': t.close, onclick: () => this.close() },
      icon(ICON_MIN),
    );
    const header = h(
      'header',
      { class: 'header' },
      h('div', { class: 'header__titles' },
        h('h2', { class: 'header__title', id: ids.title, text: this.cfg.title || t.title }),
        this.subtitle),
      this.menuBtn,
      closeBtn,
      this.menu,
    );
    this.banner = h('div', { class: 'banner', hidden: true });
    // The vendor's incident notice (status:update), apart from the connection banner.
    this.statusNote = h('div', { class: 'status-note', role: 'status', hidden: true });
    this.announcer = h('div', { class: 'sr-only', role: 'status', 'aria-live': 'polite' });

    this.startView = this.buildStartForm();
    this.ticketView = this.buildTicketForm();
    this.chatView = this.buildChatView(ids);

    this.dropZone = h('div', { class: 'drop', hidden: true, text: t.dropHere });
    this.lightbox = h('div', { class: 'lightbox', hidden: true, role: 'dialog', 'aria-modal': 'true' });
    this.body = h('div', { class: 'body' },
      this.startView, this.ticketView, this.chatView, this.dropZone, this.lightbox);
    this.panel = h(
      'section',
      {
        class: 'panel', id: ids.panel, role: 'dialog', 'aria-labelledby': ids.title,
        hidden: true,
      },
      header,
      this.statusNote,
      this.banner,
      this.body,
      this.announcer,
    );
    this.panel.addEventListener('keydown', (e) => {
      if (e.key !== 'Escape') return;
      if (!this.lightbox.hidden) this.closeLightbox();
      else if (!this.menu.hidden) this.closeMenu(true);
      else this.close();
      e.stopPropagation();
    });
    this.setupDrop();
    this.root = h(
      'div',
      { class: `root${this.cfg.position === 'left' ? ' left' : ''}`, lang: this.lang },
      this.panel,
      this.launcher,
    );
    shadow.append(this.root);
    document.body.append(host);
    this.setSubtitle(null);
  }

  field(label, input, extra) {
    const id = uid();
    input.id = id;
    const err = h('span', { class: 'field__error', id: `${id}-err`, hidden: true });
    input.setAttribute('aria-describedby', err.id);
    return h('div', { class: 'field' },
      h('label', { class: 'field__label', for: id, text: label }), input, extra, err);
  }

  buildStartForm() {
    const t = this.t;
    const guest = this.loadGuest();
    this.nameInput = h('input', {
      class: 'input', type: 'text', name: 'name', autocomplete: 'name', maxLength: 100,
      value: guest.name || this.cfg.name || '',
    });
    this.emailInput = h('input', {
      class: 'input', type: 'email', name: 'email', autocomplete: 'email', maxLength: 254,
      value: guest.email || this.cfg.email || '',
    });
    this.topicInput = h('input', {
      class: 'input', type: 'text', name: 'topic', maxLength: 200,
      placeholder: t.topicPlaceholder, value: this.cfg.topic || '',
    });
    this.severityInput = this.severitySelect();
    this.firstInput = h('textarea', {
      class: 'input', name: 'message', rows: 3, maxLength: 10000,
      placeholder: t.firstMessagePlaceholder,
    });
    this.startError = h('p', { class: 'form-error', role: 'alert', hidden: true });
    this.startBtn = h('button', { class: 'btn btn--primary btn--block', type: 'submit', text: t.start });
    const guestFields = this.cfg.token
      ? null
      : [this.field(t.name, this.nameInput), this.field(t.email, this.emailInput)];
    const form = h(
      'form',
      { class: 'scroll view-start', noValidate: true, hidden: true },
      h('p', { class: 'intro', text: t.intro }),
      this.startError,
      guestFields,
      this.field(t.topic, this.topicInput),
      this.field(t.severity, this.severityInput),
      this.field(t.firstMessage, this.firstInput),
      this.startBtn,
    );
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.startChat();
    });
    return form;
  }

  severitySelect() {
    const select = h('select', { class: 'input', name: 'severity' },
      [1, 2, 3, 4].map((n) => h('option', { value: String(n), text: this.t.severities[n] })));
    select.value = '3';
    return select;
  }

  buildTicketForm() {
    const t = this.t;
    this.ticketBody = h('textarea', { class: 'input', name: 'body', rows: 6, maxLength: 10000 });
    this.ticketSeverity = this.severitySelect();
    this.ticketTopic = h('input', { class: 'input', type: 'text', name: 'topic', maxLength: 200 });
    this.ticketError = h('p', { class: 'form-error', role: 'alert', hidden: true });
    this.ticketDone = h('div', { hidden: true, role: 'status' });
    this.ticketFields = h(
      'div', {},
      h('p', { class: 'intro', text: t.ticketIntro }),
      this.ticketError,
      this.field(t.topic, this.ticketTopic),
      this.field(t.severity, this.ticketSeverity),
      this.field(t.ticketBody, this.ticketBody),
      h('div', { class: 'row' },
        h('button', { class: 'btn btn--primary', type: 'submit', text: t.ticketSend }),
        h('button', {
          class: 'btn btn--ghost', type: 'button', text: t.back, onclick: () => this.render(),
        })),
    );
    const form = h(
      'form',
      { class: 'scroll view-ticket', noValidate: true, hidden: true, 'aria-label': t.ticketTitle },
      h('h3', { class: 'header__title', text: t.ticketTitle }),
      this.ticketFields,
      this.ticketDone,
    );
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.sendTicket();
    });
    return form;
  }

  buildChatView(ids) {
    const t = this.t;
    this.queueParts = {
      pos: h('p', { class: 'queue__pos' }, document.createTextNode(''),
        h('span', { class: 'dots', 'aria-hidden': 'true' }, h('i'), h('i'), h('i'))),
      eta: h('p', { class: 'queue__eta' }),
      offline: h('p', { class: 'queue__offline', text: t.nobodyOnline, hidden: true }),
      ticket: h('button', {
        class: 'btn btn--primary', type: 'button', text: t.leaveTicket, hidden: true,
        onclick: () => this.showTicketForm(),
      }),
    };
    const qp = this.queueParts;
    this.queueCard = h('div', { class: 'queue', hidden: true },
      qp.pos, qp.eta, qp.offline,
      h('div', { class: 'row' }, qp.ticket,
        h('button', {
          class: 'btn btn--ghost', type: 'button', text: t.cancelWait,
          onclick: () => this.askEnd(),
        })));
    // The live log is a region around the list: an <ol> given role="log" is no longer a
    // list, and its <li> messages would belong to none.
    this.log = h('ol', { class: 'log' });
    this.scroller = h('div', { class: 'scroll' }, this.queueCard,
      h('div', { id: ids.log, role: 'log', 'aria-live': 'polite', 'aria-label': t.messagesLabel }, this.log));
    this.thread = new ThreadView({
      list: this.log,
      t,
      lang: this.lang,
      isOwn: (m) => m.sender.role === 'customer',
      senderName: (m) => m.sender.name || t.support,
      renderAttachment: (m) => this.renderAttachment(m),
    });
    this.typingLine = h('div', { class: 'typing', 'aria-live': 'polite' });
    this.uploadBox = h('div', { class: 'upload', hidden: true });
    this.notice = h('p', { class: 'notice', role: 'alert', hidden: true });
    this.sheet = h('div', { class: 'sheet', hidden: true });
    this.confirmBar = h('div', { class: 'confirm', hidden: true });

    this.fileInput = h('input', {
      type: 'file', hidden: true, tabIndex: -1,
      accept: 'image/*,.log,.txt,.json,.csv,.xml,.yaml,.yml,.har,.gz,.zip,.tgz,.pdf',
      onchange: () => {
        const f = this.fileInput.files && this.fileInput.files[0];
        this.fileInput.value = '';
        if (f) this.upload(f);
      },
    });
    const hintId = uid();
    this.composerInput = h('textarea', {
      rows: 1, maxLength: 10000, placeholder: t.composerPlaceholder, 'aria-label': t.composer,
      'aria-describedby': hintId,
    });
    this.composerInput.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.submitComposer();
      }
    });
    this.composerInput.addEventListener('input', () => {
      this.autosize();
      this.noteTyping();
    });
    this.composerInput.addEventListener('paste', (e) => {
      const files = [...((e.clipboardData && e.clipboardData.files) || [])];
      if (files.length) {
        e.preventDefault();
        this.upload(files[0]);
      }
    });
    this.attachBtn = h(
      'button',
      {
        class: 'icon-btn', type: 'button', 'aria-label': t.attach, title: t.attach,
        onclick: () => this.fileInput.click(),
      },
      icon(ICON_CLIP),
    );
    this.composer = h(
      'form',
      { class: 'composer' },
      this.attachBtn,
      this.composerInput,
      h('button', { class: 'send', type: 'submit', 'aria-label': t.send, title: t.send }, icon(ICON_SEND)),
      this.fileInput,
    );
    this.composer.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submitComposer();
    });
    this.hint = h('p', { class: 'hint', id: hintId, text: t.composerHint });
    this.endedBox = h('div', { class: 'ended', hidden: true });
    this.tray = h('div', { class: 'tray' },
      this.uploadBox, this.notice, this.sheet, this.confirmBar, this.composer, this.hint);
    return h('div', { class: 'view-chat body', hidden: true },
      this.scroller, this.typingLine, this.tray, this.endedBox);
  }

  // ------------------------------------------------------------------ open / close

  open() {
    this.isOpen = true;
    this.root.classList.add('open');
    show(this.panel, true);
    this.launcher.setAttribute('aria-expanded', 'true');
    this.remember('open', '1');
    this.unread = 0;
    this.updateBadge();
    this.render();
    this.focusFirst();
    this.markRead();
    this.scrollToEnd();
  }

  close() {
    this.isOpen = false;
    this.root.classList.remove('open');
    this.closeMenu(false);
    show(this.panel, false);
    this.launcher.setAttribute('aria-expanded', 'false');
    this.remember('open', '');
    this.launcher.focus();
  }

  focusFirst() {
    const view = this.currentView();
    if (view === 'start') {
      const first = this.cfg.token ? this.topicInput : this.nameInput.value ? this.topicInput : this.nameInput;
      first.focus();
    } else if (view === 'chat' && !this.isEnded()) this.composerInput.focus();
    else if (view === 'ticket') this.ticketTopic.focus();
  }

  updateBadge() {
    show(this.badge, this.unread > 0);
    this.badge.textContent = String(this.unread);
    const label = this.unread > 0
      ? `${this.t.launcher}, ${this.t.newMessages(this.unread)}`
      : this.t.launcher;
    this.launcher.setAttribute('aria-label', label);
  }

  announce(text) {
    // Re-setting the same text is not announced; clear first.
    this.announcer.textContent = '';
    setTimeout(() => (this.announcer.textContent = text), 50);
  }

  // ------------------------------------------------------------------ views

  currentView() {
    if (this.view === 'ticket') return 'ticket';
    return this.session ? 'chat' : 'start';
  }

  isQueued() {
    return !!this.session && (this.session.state === 'waiting' || this.session.state === 'offered');
  }

  isEnded() {
    return !!this.session && (this.session.state === 'ended' || this.session.state === 'abandoned');
  }

  render() {
    const view = this.currentView();
    show(this.startView, view === 'start');
    show(this.ticketView, view === 'ticket');
    show(this.chatView, view === 'chat');
    this.renderMenu();
    if (view === 'chat') this.renderChat();
    this.setSubtitle(this.session);
  }

  setSubtitle(session) {
    const t = this.t;
    clear(this.subtitle);
    if (!session) {
      this.subtitle.append(t.tagline);
      return;
    }
    if (session.state === 'active' && session.engineer) {
      this.subtitle.append(h('span', { class: 'presence on', 'aria-hidden': 'true' }),
        t.connectedWith(session.engineer.name));
    } else if (session.state === 'waiting' || session.state === 'offered') {
      this.subtitle.append(h('span', { class: 'presence', 'aria-hidden': 'true' }), t.waiting);
    } else {
      this.subtitle.append(session.state === 'abandoned' ? t.abandoned : t.ended);
    }
  }

  renderChat() {
    const s = this.session;
    const queued = s.state === 'waiting' || s.state === 'offered';
    show(this.queueCard, queued);
    if (queued) this.renderQueue();
    const ended = this.isEnded();
    show(this.tray, !ended);
    show(this.endedBox, ended);
    if (ended) this.renderEnded();
  }

  renderQueue() {
    const t = this.t;
    const s = this.session;
    const q = this.queueParts;
    q.pos.firstChild.textContent = s.position ? t.position(s.position) : t.waiting;
    q.eta.textContent = waitText(s, this.lang);
    show(q.offline, this.engineersOnline === 0);
    show(q.ticket, this.engineersOnline === 0);
  }

  renderEnded() {
    const t = this.t;
    const s = this.session;
    clear(this.endedBox);
    this.endedBox.append(
      h('p', { class: 'ended__title', text: s.state === 'abandoned' ? t.abandoned : t.ended }),
    );
    const ticket = ticketNumber(s.ticket);
    if (ticket) this.endedBox.append(h('p', {}, h('span', { class: 'ticket-no', text: t.ticket(ticket) })));
    this.endedBox.append(
      h('div', { class: 'row' },
        h('button', {
          class: 'btn btn--ghost', type: 'button', text: t.transcript,
          onclick: () => this.downloadTranscript(),
        }),
        h('button', {
          class: 'btn btn--primary', type: 'button', text: t.newChat,
          onclick: () => this.newChat(),
        })),
    );
  }

  renderMenu() {
    const t = this.t;
    const s = this.session;
    clear(this.menu);
    const open = s && !this.isEnded();
    show(this.menuBtn, !!s);
    if (!s) return;
    const item = (text, fn, cls) => h('li', { role: 'none' },
      h('button', {
        type: 'button', role: 'menuitem', class: cls, text,
        onclick: () => {
          this.closeMenu(false);
          fn();
        },
      }));
    const tier = s.customer && s.customer.tier;
    if (open && (tier === 'premier' || tier === 'concierge')) {
      this.menu.append(item(t.phone, () => this.showEscalation('phone')));
    }
    if (open) this.menu.append(item(t.screenShare, () => this.showEscalation('screen_share')));
    this.menu.append(item(t.transcript, () => this.downloadTranscript()));
    if (open) this.menu.append(item(t.end, () => this.askEnd(), 'danger'));
  }

  toggleMenu() {
    if (this.menu.hidden) {
      show(this.menu, true);
      this.menuBtn.setAttribute('aria-expanded', 'true');
      const first = this.menu.querySelector('button');
      if (first) first.focus();
    } else this.closeMenu(true);
  }

  closeMenu(refocus) {
    show(this.menu, false);
    this.menuBtn.setAttribute('aria-expanded', 'false');
    if (refocus) this.menuBtn.focus();
  }

  menuKeys(e) {
    const items = [...this.menu.querySelectorAll('button')];
    const i = items.indexOf(this.shadow.activeElement);
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const next = (i + (e.key === 'ArrowDown' ? 1 : -1) + items.length) % items.length;
      items[next].focus();
    } else if (e.key === 'Tab') this.closeMenu(false);
  }

  showBanner(text, ok = false) {
    this.banner.textContent = text;
    this.banner.classList.toggle('ok', ok);
    show(this.banner, !!text);
  }

  showNotice(text, info = false) {
    clearTimeout(this.noticeTimer);
    this.notice.textContent = text || '';
    this.notice.classList.toggle('info', info);
    show(this.notice, !!text);
    if (text && info) this.noticeTimer = setTimeout(() => show(this.notice, false), 6000);
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  autosize() {
    const el = this.composerInput;
    el.style.height = 'auto';
    el.style.height = `${Math.min(el.scrollHeight + 2, 140)}px`;
  }

  // ------------------------------------------------------------------ state and storage

  /** Per-tab state (sessionStorage): a reload keeps the panel as it was. */
  remember(key, value) {
    try {
      if (value) sessionStorage.setItem(`chatd:${this.cfg.server}:${key}`, value);
      else sessionStorage.removeItem(`chatd:${this.cfg.server}:${key}`);
    } catch {
      // storage disabled: nothing to remember
    }
  }

  recall(key) {
    try {
      return sessionStorage.getItem(`chatd:${this.cfg.server}:${key}`) || '';
    } catch {
      return '';
    }
  }

  loadGuest() {
    try {
      return JSON.parse(localStorage.getItem(this.keys.guest) || '{}') || {};
    } catch {
      return {};
    }
  }

  saveCreds() {
    try {
      if (!this.creds || Date.now() >= forgetAt(this.creds)) localStorage.removeItem(this.keys.session);
      else localStorage.setItem(this.keys.session, JSON.stringify(this.creds));
    } catch {
      // storage may be disabled (private mode); the chat still works until a reload
    }
  }

  restore() {
    let stored = null;
    try {
      stored = JSON.parse(localStorage.getItem(this.keys.session) || 'null');
    } catch {
      stored = null;
    }
    if (stored && stored.session_id && stored.resume_token) {
      if (Date.now() >= forgetAt(stored)) {
        this.creds = null;
        this.saveCreds();
      } else {
        this.creds = stored;
        this.scheduleForget();
        this.connect();
      }
    }
    this.render();
    if (this.cfg.open || (this.creds && this.recall('open'))) this.open();
  }

  applySession(session) {
    const was = this.session;
    this.session = { ...(was || {}), ...session };
    if (this.isEnded()) {
      const local = Date.now() + ENDED_KEEP_MS;
      const forget = Math.min(Number(this.creds && this.creds.forget_at) || local, local);
      const endedAt = session.ended_at || new Date().toISOString();
      this.creds = { ...this.creds, ended_at: endedAt, forget_at: forget };
      this.saveCreds();
      this.scheduleForget();
      this.showBanner('');
      this.showNotice('');
      show(this.sheet, false);
      show(this.confirmBar, false);
      if (!was || was.state !== this.session.state) this.watchForTicket();
    }
    this.render();
  }

  /** Takes an ended chat's token out of storage when its time is up, also while the page
   * stays open; the chat stays on screen until the page goes. */
  scheduleForget() {
    clearTimeout(this.forgetTimer);
    const at = forgetAt(this.creds);
    if (!Number.isFinite(at)) return;
    this.forgetTimer = setTimeout(() => this.saveCreds(), Math.max(0, at - Date.now()) + 50);
  }

  /** The server refused the chat's resume token over HTTP (expired or unknown): forget it,
   * as when it refuses it on the socket. */
  onTokenRefused(response) {
    if (response.status === 401 && this.creds) this.onConnectError({ data: { code: 'unauthorized' } });
  }

  // ------------------------------------------------------------------ connection

  authPayload() {
    const auth = {};
    if (this.creds) {
      auth.session_id = this.creds.session_id;
      auth.resume_token = this.creds.resume_token;
      if (this.cfg.token) auth.token = this.cfg.token;
      return auth;
    }
    if (this.cfg.token) auth.token = this.cfg.token;
    else if (this.guest) auth.guest = this.guest;
    return auth;
  }

  ensureSocket() {
    if (this.socket) return this.socket;
    this.socket = io(`${this.cfg.server}/customer`, {
      autoConnect: false,
      auth: (cb) => cb(this.authPayload()),
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
      timeout: 10000,
    });
    this.wire(this.socket);
    window.addEventListener('offline', () => this.onBrowserOffline());
    window.addEventListener('online', () => this.onBrowserOnline());
    document.addEventListener('visibilitychange', () => this.markRead());
    return this.socket;
  }

  connect() {
    this.wantConnection = true;
    const s = this.ensureSocket();
    if (!s.connected) s.connect();
  }

  /** Connects (again) with the current credentials; resolves true once connected. */
  reconnectNow() {
    const s = this.ensureSocket();
    return new Promise((resolve) => {
      let timer = null;
      const done = (ok) => {
        clearTimeout(timer);
        s.off('connect', onOk);
        s.off('connect_error', onErr);
        resolve(ok);
      };
      const onOk = () => done(true);
      const onErr = (err) => {
        this.lastConnectError = err;
        if (!s.active) done(false);
      };
      s.on('connect', onOk);
      s.on('connect_error', onErr);
      if (s.connected) s.disconnect();
      this.wantConnection = true;
      s.connect();
      timer = setTimeout(() => done(s.connected), 12_000);
    });
  }

  wire(socket) {
    socket.on('connect', () => this.onConnect());
    socket.on('disconnect', (reason) => this.onDisconnect(reason));
    socket.on('connect_error', (err) => this.onConnectError(err));
    socket.on('message:new', (p) => this.onMessage(p));
    socket.on('queue:board', (b) => this.onBoard(b));
    socket.on('session:assigned', (p) => this.onAssigned(p));
    socket.on('session:ended', (p) => this.onEnded(p));
    socket.on('typing', (p) => this.onTyping(p));
    socket.on('message:read', (p) => this.onRead(p));
    socket.on('status:update', (p) => this.onStatus(p));
    socket.on('session:resync', () => this.onResync());
  }

  onStatus(p) {
    const text = p && typeof p.banner === 'string' ? p.banner : '';
    clear(this.statusNote);
    if (text) {
      this.statusNote.append(h('span', { text }));
      if (p.link && /^https?:\/\//.test(p.link)) {
        this.statusNote.append(' ', h('a', {
          href: p.link, target: '_blank', rel: 'noopener noreferrer', text: this.t.statusLink,
        }));
      }
    }
    show(this.statusNote, !!text);
  }

  async onConnect() {
    const wasReconnecting = this.reconnecting;
    this.connected = true;
    this.reconnecting = false;
    if (wasReconnecting) {
      this.showBanner(this.t.reconnected, true);
      this.announce(this.t.reconnected);
      setTimeout(() => {
        if (this.connected && this.banner.classList.contains('ok')) this.showBanner('');
      }, 2500);
    } else this.showBanner('');
    if (this.creds) {
      await this.resume();
      this.flushOutbox();
    }
  }

  onDisconnect(reason) {
    this.connected = false;
    if (reason === 'io client disconnect' && !this.wantConnection) return;
    if (this.creds && !this.isEnded()) {
      this.reconnecting = true;
      this.showBanner(navigator.onLine === false ? this.t.offline : this.t.reconnecting);
      this.announce(this.t.reconnecting);
    }
  }

  onConnectError(err) {
    const code = connectErrorCode(err);
    if (code === 'unauthorized' || code === 'not_found' || code === 'bad_request') {
      if (this.creds) {
        // The stored chat is gone (or the token was revoked): start afresh.
        this.creds = null;
        this.saveCreds();
        this.session = null;
        this.thread.reset();
        this.showBanner('');
        this.render();
      } else {
        this.startError.textContent = this.t.errorAuth;
        show(this.startError, true);
      }
      return;
    }
    if (code === 'rate_limited' || code === 'internal' || code === 'unavailable') {
      // Refused by the server: the client does not try again by itself. `unavailable` is a
      // process of a cluster while the desk changes hands: sooner.
      setTimeout(() => {
        if (this.wantConnection && !this.socket.connected) this.socket.connect();
      }, code === 'unavailable' ? 1000 : 3000);
    }
    if (this.creds && !this.isEnded()) {
      this.reconnecting = true;
      this.showBanner(navigator.onLine === false ? this.t.offline : this.t.reconnecting);
    }
  }

  /**
   * The server says events on their way here may have been lost (docs/protocol.md#resync):
   * catch up as after a reconnect, with the messages after the last one shown and the place
   * in the queue. A resync that comes while one is running makes one more round, not a
   * second one alongside; the thread shows each message once whatever comes twice. The
   * server may still be finding its way back to the desk: a transient error is tried again
   * a few times, a second more apart each time.
   */
  onResync() {
    this.resync ||= catchUpOnResync(
      () => this.resume(),
      () => !!this.creds && this.connected,
      async () => {
        // The answer's session carries the place and the board number; this also says
        // again how many engineers are online, which the lost boards would have told.
        if (this.isQueued()) await this.askPosition();
        this.flushOutbox();
      },
    );
    return this.resync();
  }

  onBrowserOffline() {
    // The network is gone: say so now, rather than after Engine.IO's ping timeout.
    if (!this.socket || !this.wantConnection) return;
    if (this.socket.connected) this.socket.io.engine.close();
    if (this.creds && !this.isEnded()) {
      this.reconnecting = true;
      this.showBanner(this.t.offline);
    }
  }

  onBrowserOnline() {
    if (!this.socket || !this.wantConnection || this.socket.connected) return;
    // Skip the back-off delay: try at once.
    this.socket.disconnect();
    this.socket.connect();
  }

  /** Fetches what was missed since the last message without a gap, then live ones flow.
   * Resolves false when a transient error (no answer, the desk changing hands) stopped it. */
  async resume() {
    if (!this.creds) return true;
    let after = this.contiguousSeq();
    for (let round = 0; round < 50; round += 1) {
      const res = await call(this.socket, 'session:resume', {
        session_id: this.creds.session_id,
        resume_token: this.creds.resume_token,
        after_seq: after,
      });
      if (!res.ok) {
        const code = res.error && res.error.code;
        if (code === 'rate_limited') {
          // Paging a long chat: each page costs several events' allowance. Wait, go on.
          await new Promise((resolve) => setTimeout(resolve, 1000));
          continue;
        }
        if (code === 'unauthorized' || code === 'not_found') this.onConnectError({ data: { code } });
        return !TRANSIENT.has(code);
      }
      this.applySession(res.session);
      let addedOther = false;
      for (const m of res.messages) {
        if (this.thread.add(m) && m.sender.role !== 'customer') addedOther = true;
      }
      // Read receipts are stored: after a reload, "Read" shows where it did.
      if (res.session.read) {
        this.thread.setRead(res.session.read.engineer);
        this.readSent = Math.max(this.readSent, res.session.read.customer);
      }
      this.afterMessagesAdded(addedOther, res.messages.length > 0);
      if (!res.more || res.messages.length === 0) break;
      after = res.messages[res.messages.length - 1].seq;
    }
    return true;
  }

  contiguousSeq() {
    const seqs = this.thread.seqs;
    let n = 0;
    for (const s of seqs) {
      if (s !== n + 1) break;
      n = s;
    }
    return n;
  }

  // ------------------------------------------------------------------ starting a chat

  validateStart() {
    const t = this.t;
    let firstBad = null;
    const check = (input, ok, msg) => {
      const err = this.shadow.getElementById(`${input.id}-err`);
      input.setAttribute('aria-invalid', ok ? 'false' : 'true');
      err.textContent = ok ? '' : msg;
      show(err, !ok);
      if (!ok && !firstBad) firstBad = input;
    };
    if (!this.cfg.token) {
      check(this.nameInput, this.nameInput.value.trim().length > 0, t.required);
      const email = this.emailInput.value.trim();
      check(this.emailInput, /^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email), email ? t.badEmail : t.required);
    }
    check(this.topicInput, this.topicInput.value.trim().length > 0, t.required);
    if (firstBad) firstBad.focus();
    return !firstBad;
  }

  async startChat() {
    const t = this.t;
    show(this.startError, false);
    if (!this.validateStart()) return;
    if (!this.cfg.token) {
      this.guest = { name: this.nameInput.value.trim(), email: this.emailInput.value.trim() };
      try {
        localStorage.setItem(this.keys.guest, JSON.stringify(this.guest));
      } catch {
        // not kept across reloads then
      }
    }
    this.startBtn.disabled = true;
    this.startBtn.textContent = t.starting;
    try {
      this.creds = null;
      const ok = await this.reconnectNow();
      if (!ok) {
        const code = connectErrorCode(this.lastConnectError);
        this.startError.textContent = code === 'unauthorized' ? t.errorAuth : t.errorGeneric;
        show(this.startError, true);
        return;
      }
      const first = this.firstInput.value.trim();
      // Kept until a request succeeds: a retry of a request whose answer was lost finds
      // the chat it opened (docs/protocol.md, chat:request).
      if (!this.startIds) this.startIds = { request: clientMsgId(), message: clientMsgId() };
      const ask = {
        topic: this.topicInput.value.trim(),
        severity: Number(this.severityInput.value),
        request_id: this.startIds.request,
        ...(first ? { message: first, client_msg_id: this.startIds.message } : {}),
      };
      let res = await call(this.socket, 'chat:request', ask);
      const lost = !res.ok && res.error && ['timeout', 'disconnected'].includes(res.error.code);
      if (lost && (this.socket.connected || (await this.reconnectNow()))) {
        res = await call(this.socket, 'chat:request', ask);
      }
      if (!res.ok) {
        const code = res.error && res.error.code;
        this.startError.textContent = code === 'conflict' ? t.chatOpenElsewhere : t.errorGeneric;
        show(this.startError, true);
        return;
      }
      this.startIds = null;
      this.creds = { session_id: res.session.id, resume_token: res.resume_token };
      this.saveCreds();
      this.engineersOnline = res.engineers_online;
      this.thread.reset();
      this.readSent = 0;
      this.applySession(res.session);
      this.firstInput.value = '';
      this.topicInput.value = '';
      await this.resume();
      // Answered meanwhile (the session is active): onAssigned has said so.
      if (this.isQueued()) this.announce(this.queueStatus());
      this.composerInput.focus();
    } finally {
      this.startBtn.disabled = false;
      this.startBtn.textContent = t.start;
    }
  }

  newChat() {
    clearTimeout(this.ticketTimer);
    this.view = null;
    this.creds = null;
    this.saveCreds();
    this.session = null;
    this.outbox = [];
    this.thread.reset();
    this.showNotice('');
    this.view = null;
    this.render();
    this.focusFirst();
  }

  // ------------------------------------------------------------------ events

  onMessage(p) {
    if (!this.creds || p.session_id !== this.creds.session_id) return;
    const m = p.message;
    const added = this.thread.add(m);
    if (!added) return;
    if (m.kind === 'system' && m.event && m.event.type === 'requeued') {
      this.session = { ...this.session, state: 'waiting', engineer: undefined };
      this.render();
      this.askPosition();
    }
    this.afterMessagesAdded(m.sender.role !== 'customer', true);
    if (m.sender.role !== 'customer' && m.kind !== 'system') this.hideOtherTyping();
  }

  afterMessagesAdded(fromOther, any) {
    if (!any) return;
    const nearBottom = this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < 120;
    if (nearBottom || !fromOther) this.scrollToEnd();
    if (fromOther) {
      if (!this.isOpen) {
        this.unread += 1;
        this.updateBadge();
      }
      this.markRead();
    }
  }

  /**
   * The queue board, sent to every waiting customer at once (docs/protocol.md#queueboard):
   * what changed ahead since the last board, and the waits by position. The widget keeps its
   * own place from it and picks its own line; after a missed board it asks its place.
   */
  onBoard(b) {
    const s = this.session;
    if (!s || !b || s.position == null || s.board == null) return;
    if (s.state !== 'waiting' && s.state !== 'offered') return;
    if (b.v !== s.board + 1) {
      if (b.v > s.board + 1) this.askPosition();
      return;
    }
    const [skipLeft, skipBack] = Array.isArray(s.board_seen) ? s.board_seen : [0, 0];
    const ahead = (list) => (Array.isArray(list) ? list.filter((a) => a < s.arrival).length : 0);
    const position = s.position
      - ahead((b.left || []).slice(skipLeft)) + ahead((b.back || []).slice(skipBack));
    const w = b.waits;
    let i = -1;
    if (w && Array.isArray(w.positions)) {
      for (let k = 0; k < w.positions.length && w.positions[k] <= position; k += 1) i = k;
    }
    this.onPosition({
      session_id: s.id,
      position,
      board: b.v,
      board_seen: [0, 0],
      engineers_online: b.engineers_online,
      estimated_wait_seconds: i >= 0 ? w.seconds[i] : null,
      estimated_wait_low_seconds: i >= 0 ? w.low[i] : null,
      estimated_wait_high_seconds: i >= 0 ? w.high[i] : null,
    });
  }

  /** Ask the server where this chat stands (after a missed board, or back in the queue). */
  async askPosition() {
    if (this.askingPosition || !this.session) return;
    this.askingPosition = true;
    try {
      const res = await call(this.socket, 'queue:position', { session_id: this.session.id });
      if (res.ok && res.position != null) this.onPosition(res);
    } finally {
      this.askingPosition = false;
    }
  }

  onPosition(p) {
    if (!this.session || p.session_id !== this.session.id) return;
    const before = this.session;
    this.engineersOnline = p.engineers_online;
    this.session = {
      ...this.session,
      position: p.position,
      board: p.board,
      board_seen: p.board_seen,
      ...(p.arrival != null ? { arrival: p.arrival } : {}),
      estimated_wait_seconds: p.estimated_wait_seconds,
      estimated_wait_low_seconds: p.estimated_wait_low_seconds,
      estimated_wait_high_seconds: p.estimated_wait_high_seconds,
    };
    if (this.currentView() === 'chat' && !this.isEnded()) this.renderQueue();
    // Read out a new place in the queue, or a wait that became known or unknown; not every
    // small move of the estimate, which would talk over the chat.
    const known = (s) => s.estimated_wait_seconds != null;
    if (before.position !== p.position || known(before) !== known(this.session)) {
      this.announce(this.queueStatus());
    }
  }

  /** Place in the queue and the wait, as a screen reader says them. */
  queueStatus() {
    const t = this.t;
    const s = this.session;
    const position = s.position ? t.position(s.position) : t.waiting;
    return t.queueStatus(position, waitText(s, this.lang, true));
  }

  onAssigned(p) {
    if (!this.session || p.session_id !== this.session.id) return;
    this.applySession({ state: 'active', engineer: p.engineer });
    this.announce(this.t.connectedWith(p.engineer.name));
  }

  onEnded(p) {
    if (!this.session || p.session_id !== this.session.id) return;
    const state = p.reason === 'cancelled' || p.reason === 'abandoned' ? 'abandoned' : 'ended';
    this.applySession({ state, ticket: p.ticket || this.session.ticket, ended_at: new Date().toISOString() });
    this.hideOtherTyping();
    this.announce(state === 'abandoned' ? this.t.abandoned : this.t.ended);
  }

  onTyping(p) {
    if (!this.session || p.session_id !== this.session.id || p.role === 'customer') return;
    if (!p.typing) {
      this.hideOtherTyping();
      return;
    }
    const name = (this.session.engineer && this.session.engineer.name) || this.t.support;
    this.typingLine.textContent = this.t.typing(name);
    clearTimeout(this.otherTypingTimer);
    // A lost "stopped typing" must not leave the line up for ever.
    this.otherTypingTimer = setTimeout(() => this.hideOtherTyping(), 8000);
  }

  hideOtherTyping() {
    clearTimeout(this.otherTypingTimer);
    this.typingLine.textContent = '';
  }

  onRead(p) {
    if (!this.session || p.session_id !== this.session.id || p.role === 'customer') return;
    this.thread.setRead(p.seq);
  }

  markRead() {
    if (!this.isOpen || document.visibilityState !== 'visible' || !this.session || this.isEnded()) return;
    let seq = 0;
    for (const m of this.thread.messages()) if (m.sender.role !== 'customer') seq = m.seq;
    if (seq > this.readSent && this.connected) {
      this.readSent = seq;
      call(this.socket, 'message:read', { session_id: this.session.id, seq });
    }
  }

  noteTyping() {
    if (!this.session || this.isEnded() || !this.connected) return;
    const now = Date.now();
    if (now - this.typingSentAt > 3000) {
      this.typingSentAt = now;
      call(this.socket, 'typing', { session_id: this.session.id, typing: true });
    }
    clearTimeout(this.typingIdle);
    this.typingIdle = setTimeout(() => this.stopTyping(), 4000);
  }

  stopTyping() {
    clearTimeout(this.typingIdle);
    if (!this.typingSentAt || !this.session || !this.connected) return;
    this.typingSentAt = 0;
    call(this.socket, 'typing', { session_id: this.session.id, typing: false });
  }

  // ------------------------------------------------------------------ sending

  submitComposer() {
    const body = this.composerInput.value;
    if (!body.trim() || !this.session || this.isEnded()) return;
    this.composerInput.value = '';
    this.autosize();
    this.stopTyping();
    const cid = clientMsgId();
    this.outbox.push({ cid, body });
    this.thread.addPending(cid, body);
    if (!this.connected) this.thread.setPendingStatus(cid, this.t.failed);
    this.scrollToEnd();
    this.flushOutbox();
  }

  /** Sends queued messages one at a time, in order; a retry reuses its client_msg_id. */
  async flushOutbox() {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.outbox.length && this.connected && this.session) {
        const item = this.outbox[0];
        const res = await call(this.socket, 'message:send', {
          session_id: this.session.id, client_msg_id: item.cid, body: item.body,
        });
        if (res.ok) {
          this.outbox.shift();
          this.thread.add(res.message);
          continue;
        }
        const code = res.error && res.error.code;
        if (TRANSIENT.has(code)) {
          this.thread.setPendingStatus(item.cid, this.t.failed, true);
          // Sent again after a pause: also `unavailable`, which a process of a cluster
          // answers while the desk changes hands, its connection staying up.
          if (code === 'rate_limited' || code === 'internal' || code === 'unavailable') {
            setTimeout(() => this.flushOutbox(), code === 'unavailable' ? 1000 : 1500);
          }
          break;
        }
        this.outbox.shift();
        this.thread.setPendingStatus(item.cid, (res.error && res.error.message) || this.t.errorGeneric, true);
      }
    } finally {
      this.flushing = false;
    }
  }

  // ------------------------------------------------------------------ ending, escalation

  askEnd() {
    const t = this.t;
    const queued = this.session && (this.session.state === 'waiting' || this.session.state === 'offered');
    clear(this.confirmBar);
    const yes = h('button', {
      class: 'btn btn--danger', type: 'button', text: queued ? t.cancelWait : t.endYes,
      onclick: () => this.endChat(),
    });
    this.confirmBar.append(
      h('span', { text: queued ? `${t.cancelWait}?` : t.endConfirm }),
      yes,
      h('button', {
        class: 'btn btn--ghost', type: 'button', text: t.cancel,
        onclick: () => {
          show(this.confirmBar, false);
          this.composerInput.focus();
        },
      }),
    );
    show(this.confirmBar, true);
    yes.focus();
  }

  async endChat() {
    show(this.confirmBar, false);
    if (!this.session) return;
    const res = await call(this.socket, 'session:end', { session_id: this.session.id });
    if (res.ok) this.applySession(res.session);
    else if (res.error && res.error.code === 'session_closed') this.resume();
    else this.showNotice(this.t.errorGeneric);
  }

  showEscalation(kind) {
    const t = this.t;
    clear(this.sheet);
    const phone = h('input', { class: 'input', type: 'tel', autocomplete: 'tel', maxLength: 40 });
    const note = h('textarea', { class: 'input', rows: 2, maxLength: 2000 });
    const form = h(
      'form',
      { noValidate: true },
      h('h3', { text: kind === 'phone' ? t.phone : t.screenShare }),
      kind === 'phone' ? this.field(t.phoneNumber, phone) : null,
      this.field(t.note, note),
      h('div', { class: 'row' },
        h('button', { class: 'btn btn--primary', type: 'submit', text: t.request }),
        h('button', {
          class: 'btn btn--ghost', type: 'button', text: t.cancel,
          onclick: () => {
            show(this.sheet, false);
            this.composerInput.focus();
          },
        })),
    );
    form.style.paddingBottom = '10px';
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (kind === 'phone' && !/^[0-9+()\-. ]{3,40}$/.test(phone.value.trim())) {
        phone.setAttribute('aria-invalid', 'true');
        phone.focus();
        return;
      }
      const payload = { session_id: this.session.id, kind };
      if (kind === 'phone') payload.phone = phone.value.trim();
      if (note.value.trim()) payload.note = note.value.trim();
      const res = await call(this.socket, 'escalation:request', payload);
      if (res.ok) {
        show(this.sheet, false);
        this.showNotice(t.escalationSent, true);
        this.announce(t.escalationSent);
        this.composerInput.focus();
      } else this.showNotice((res.error && res.error.message) || t.errorGeneric);
    });
    this.sheet.append(form);
    show(this.sheet, true);
    (kind === 'phone' ? phone : note).focus();
  }

  /** After the end, the ticket number arrives when the handoff is done: look a few times. */
  watchForTicket() {
    clearTimeout(this.ticketTimer);
    const delays = [2000, 5000, 15000, 30000];
    const step = async (i) => {
      if (!this.session || ticketNumber(this.session.ticket) || i >= delays.length) return;
      if (this.connected && this.creds) {
        const res = await call(this.socket, 'session:resume', {
          session_id: this.creds.session_id, resume_token: this.creds.resume_token,
          after_seq: this.thread.lastSeq,
        });
        if (res.ok && this.session && res.session.id === this.session.id) {
          for (const m of res.messages) this.thread.add(m);
          if (res.session.ticket) {
            this.session = { ...this.session, ...res.session };
            this.render();
            return;
          }
        }
      }
      this.ticketTimer = setTimeout(() => step(i + 1), delays[i]);
    };
    this.ticketTimer = setTimeout(() => step(0), delays[0]);
  }

  // ------------------------------------------------------------------ HTTP: files, transcript, ticket

  authHeaders() {
    return this.creds ? { Authorization: `Bearer ${this.creds.resume_token}` } : {};
  }

  absolute(url) {
    return new URL(url, `${this.cfg.server}/`).href;
  }

  async downloadTranscript() {
    if (!this.creds) return;
    const url = this.absolute(
      `/api/sessions/${encodeURIComponent(this.creds.session_id)}/transcript?format=text`,
    );
    try {
      const r = await fetch(url, { headers: this.authHeaders() });
      this.onTokenRefused(r);
      if (!r.ok) throw new Error(String(r.status));
      const blob = await r.blob();
      saveBlob(blob, `chat-transcript-${this.creds.session_id.slice(0, 8)}.txt`, this.root);
    } catch {
      this.showNotice(this.t.errorGeneric);
    }
  }

  setupDrop() {
    let depth = 0;
    const canDrop = () => this.session && !this.isEnded();
    this.panel.addEventListener('dragenter', (e) => {
      if (!canDrop() || !hasFiles(e)) return;
      e.preventDefault();
      depth += 1;
      show(this.dropZone, true);
    });
    this.panel.addEventListener('dragover', (e) => {
      if (!canDrop() || !hasFiles(e)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = 'copy';
    });
    this.panel.addEventListener('dragleave', () => {
      depth = Math.max(0, depth - 1);
      if (!depth) show(this.dropZone, false);
    });
    this.panel.addEventListener('drop', (e) => {
      depth = 0;
      show(this.dropZone, false);
      if (!canDrop() || !hasFiles(e)) return;
      e.preventDefault();
      const f = e.dataTransfer.files[0];
      if (f) this.upload(f);
    });
  }

  async upload(file) {
    const t = this.t;
    if (!this.session || this.isEnded()) return;
    let name = file.name;
    if (!name || name === 'image.png') {
      const ext = (file.type.split('/')[1] || 'png').replace('jpeg', 'jpg');
      name = `screenshot-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}.${ext}`;
      file = new File([file], name, { type: file.type });
    }
    this.showNotice('');
    clear(this.uploadBox);
    const bar = h('progress', { max: 1, value: 0, 'aria-label': t.uploading(name) });
    let preview = null;
    if (file.type.startsWith('image/')) {
      preview = URL.createObjectURL(file);
    }
    this.uploadBox.append(
      preview ? h('img', { src: preview, alt: t.imageOf(name) }) : h('span', { class: 'file__icon', text: 'FILE' }),
      h('div', { class: 'upload__info' },
        h('span', { class: 'upload__name', text: t.uploading(name) }),
        bar),
    );
    show(this.uploadBox, true);
    const url = this.absolute(`/api/sessions/${encodeURIComponent(this.session.id)}/attachments`);
    const res = await uploadFileRetrying(url, file, {
      headers: this.authHeaders(),
      onProgress: (f) => (bar.value = f),
    });
    show(this.uploadBox, false);
    clear(this.uploadBox);
    if (preview) URL.revokeObjectURL(preview);
    if (res.status === 200 || res.status === 201) {
      const msg = res.body && res.body.message;
      if (msg && msg.seq) this.thread.add(msg);
      this.scrollToEnd();
      return;
    }
    const err = (res.body && res.body.error) || {};
    if (res.status === 413 || err.code === 'too_large') {
      const limit = err.details && err.details.limit ? formatBytes(err.details.limit) : '';
      this.showNotice(t.tooLarge(limit));
    } else if (res.status === 415 || err.code === 'unsupported_type') {
      this.showNotice(this.lang === 'en' && err.message ? err.message : t.badType);
    } else {
      this.showNotice(t.uploadFailed);
    }
  }

  async blobUrl(url) {
    if (this.blobUrls.has(url)) return this.blobUrls.get(url);
    const r = await fetch(this.absolute(url), { headers: this.authHeaders() });
    this.onTokenRefused(r);
    if (!r.ok) throw new Error(String(r.status));
    const blobUrl = URL.createObjectURL(await r.blob());
    this.blobUrls.set(url, blobUrl);
    return blobUrl;
  }

  renderAttachment(msg) {
    const t = this.t;
    const a = msg.attachment;
    const name = a.filename || 'file';
    if (String(a.content_type || '').startsWith('image/')) {
      const img = h('img', { alt: t.imageOf(name) });
      this.blobUrl(a.thumbnail_url || a.url).then((u) => (img.src = u)).catch(() => {
        img.alt = name;
      });
      return h('button', {
        class: 'thumb', type: 'button', title: name, 'aria-label': `${t.open}: ${name}`,
        onclick: () => this.openLightbox(a),
      }, img);
    }
    const ext = (name.split('.').pop() || '').slice(0, 4).toUpperCase();
    return h('div', { class: 'file' },
      h('span', { class: 'file__icon', 'aria-hidden': 'true', text: ext || 'FILE' }),
      h('div', {},
        h('span', { class: 'file__name', text: name }),
        h('span', { class: 'file__size', text: formatBytes(a.size || 0) }),
        ' ',
        h('button', {
          class: 'linkish', type: 'button', text: t.download,
          onclick: async () => {
            try {
              const r = await fetch(this.absolute(a.url), { headers: this.authHeaders() });
              this.onTokenRefused(r);
              if (!r.ok) throw new Error(String(r.status));
              saveBlob(await r.blob(), name, this.root);
            } catch {
              this.showNotice(t.errorGeneric);
            }
          },
        })));
  }

  async openLightbox(a) {
    clear(this.lightbox);
    const img = h('img', { alt: this.t.imageOf(a.filename || '') });
    const closeBtn = h('button', {
      class: 'icon-btn', type: 'button', 'aria-label': this.t.close, onclick: () => this.closeLightbox(),
    }, icon(ICON_X));
    this.lightbox.setAttribute('aria-label', a.filename || '');
    this.lightbox.append(closeBtn, img);
    show(this.lightbox, true);
    closeBtn.focus();
    try {
      img.src = await this.blobUrl(a.url);
    } catch {
      img.alt = this.t.errorGeneric;
    }
  }

  closeLightbox() {
    show(this.lightbox, false);
    clear(this.lightbox);
    this.composerInput.focus();
  }

  showTicketForm() {
    this.view = 'ticket';
    show(this.ticketFields, true);
    show(this.ticketDone, false);
    show(this.ticketError, false);
    if (this.session) {
      this.ticketTopic.value = this.session.topic || '';
      this.ticketSeverity.value = String(this.session.severity || 3);
    }
    const firstOwn = this.thread.messages().find((m) => m.sender.role === 'customer' && m.kind === 'text');
    if (firstOwn && !this.ticketBody.value) this.ticketBody.value = firstOwn.body;
    this.render();
    this.ticketTopic.focus();
  }

  async sendTicket() {
    const t = this.t;
    const topic = this.ticketTopic.value.trim();
    const body = this.ticketBody.value.trim();
    this.ticketTopic.setAttribute('aria-invalid', topic ? 'false' : 'true');
    this.ticketBody.setAttribute('aria-invalid', body ? 'false' : 'true');
    if (!topic || !body) {
      (topic ? this.ticketBody : this.ticketTopic).focus();
      return;
    }
    const guest = this.guest || this.loadGuest();
    const payload = { topic, severity: Number(this.ticketSeverity.value), description: body };
    const headers = {};
    if (this.cfg.token) headers.Authorization = `Bearer ${this.cfg.token}`;
    const queued = this.session && (this.session.state === 'waiting' || this.session.state === 'offered');
    if (queued && this.creds) {
      // Lets the queued chat's files go with the ticket; it does not say who we are.
      payload.session_id = this.creds.session_id;
      payload.resume_token = this.creds.resume_token;
    }
    if (!this.cfg.token) {
      payload.guest = {
        name: guest.name || this.nameInput.value.trim(),
        email: guest.email || this.emailInput.value.trim(),
      };
    }
    const res = await requestJson(this.absolute('/api/tickets'), { method: 'POST', body: payload, headers });
    if (res.status !== 200 && res.status !== 201) {
      const err = res.body && res.body.error;
      this.ticketError.textContent = (err && this.lang === 'en' && err.message) || t.ticketFailed;
      show(this.ticketError, true);
      return;
    }
    if (queued) {
      // The ticket replaces the wait: leave the queue.
      const end = await call(this.socket, 'session:end', { session_id: this.session.id });
      if (end.ok) this.applySession(end.session);
    }
    const ticketCreds = { session_id: res.body.session.id, resume_token: res.body.resume_token };
    show(this.ticketFields, false);
    this.renderTicketDone(ticketNumber(res.body.session.ticket));
    this.watchTicketNumber(ticketCreds);
  }

  renderTicketDone(number) {
    const t = this.t;
    clear(this.ticketDone);
    this.ticketDone.append(
      h('p', { class: 'intro', text: number ? t.ticketDone(number) : t.ticketDoneNoNumber }),
      number ? h('p', {}, h('span', { class: 'ticket-no', text: t.ticket(number) })) : null,
      h('button', {
        class: 'btn btn--ghost', type: 'button', text: t.newChat,
        onclick: () => {
          this.ticketBody.value = '';
          this.newChat();
        },
      }),
    );
    show(this.ticketDone, true);
    this.announce(number ? t.ticketDone(number) : t.ticketDoneNoNumber);
  }

  /** The handoff files the ticket in the background; its number shows up when known. */
  watchTicketNumber(creds) {
    clearTimeout(this.ticketTimer);
    const delays = [1000, 2000, 4000, 8000, 15000];
    const step = async (i) => {
      if (i >= delays.length || this.view !== 'ticket') return;
      if (this.connected) {
        const res = await call(this.socket, 'session:resume', { ...creds, after_seq: 0 });
        const number = res.ok && ticketNumber(res.session.ticket);
        if (number) {
          this.renderTicketDone(number);
          return;
        }
      }
      this.ticketTimer = setTimeout(() => step(i + 1), delays[i]);
    };
    this.ticketTimer = setTimeout(() => step(0), delays[0]);
  }

  // ------------------------------------------------------------------ public API

  api() {
    return {
      open: () => this.open(),
      close: () => this.close(),
      setToken: (token) => {
        this.cfg.token = token || '';
      },
    };
  }
}

function hasFiles(e) {
  return !!e.dataTransfer && [...e.dataTransfer.types].includes('Files');
}

function ticketNumber(ticket) {
  if (!ticket || typeof ticket !== 'object') return '';
  return String(ticket.number || ticket.key || ticket.id || '');
}
