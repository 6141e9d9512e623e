// The engineer console: log in, take offers, run several chats in tabs, end or transfer
// them. One Socket.IO connection to /engineer, authenticated by the HttpOnly login cookie.
import { io } from 'socket.io-client';
import { h, clear, show, uid, clientMsgId, icon, ICON_CLIP } from '../shared/dom.js';
import { clockTime } from '../shared/i18n.js';
import { pageLanguage, applyLanguage, errorText, minutesText } from '../shared/i18n-desk.js';
import { CONSOLE_STRINGS } from '../shared/i18n-console.js';
import { formatBytes } from '../shared/text.js';
import { ThreadView } from '../shared/thread.js';
import { showSignIn } from '../shared/signin.js';
import {
  uploadFileRetrying, requestJson, connectErrorCode, call, TRANSIENT, catchUpOnResync,
} from '../shared/http.js';

// The console's language: `data-chatd-lang` on <html>, else the browser's (docs/console.md).
const LANG = pageLanguage();
const T = CONSOLE_STRINGS[LANG];
const TEXTUAL = /^(text\/|application\/(json|xml|x-ndjson|yaml|x-yaml|har\+json))/;
const TEXT_EXT = /\.(log|txt|json|csv|xml|ya?ml|har)$/i;

function mmss(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const m = Math.floor(s / 60);
  if (m >= 60) return `${Math.floor(m / 60)}:${String(m % 60).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
  return `${m}:${String(s % 60).padStart(2, '0')}`;
}

// queue:alert levels the bar shows, from the earliest sign to the worst: the desk predicts a
// wait past the target, a customer has waited past the warning, past the target.
const ALERT_LEVELS = ['predicted', 'warning', 'breach'];
// Chats whose history the console asks for at once: a session:resume costs 5 of the 60
// events a connection may send at once, and a refusal past them is one of the few a
// connection may hear in a row (docs/protocol.md#limits).
const RESUMES_AT_ONCE = 4;
// queue:snapshot and session:resume rounds after a session:resync (docs/protocol.md#resync).

/** A threshold in words: "5 min", "1 min 30 s", "45 s". */
function minutes(seconds) {
  return minutesText(T, seconds);
}

/** A predicted wait, to the minute: "about 7 min" ("about 40 s" under a minute). */
function approxMinutes(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return T.about(s < 60 ? T.seconds(s) : T.minutes(Math.round(s / 60)));
}

function tierName(tier) {
  return T.tiers[tier || 'standard'] || tier;
}

function tierPill(tier) {
  return h('span', { class: `pill pill--tier-${tier || 'standard'}`, text: tierName(tier) });
}

function severityPill(sev) {
  return h('span', { class: `pill pill--sev-${sev}`, text: `S${sev} · ${T.severities[sev] || ''}` });
}

function ticketText(ticket) {
  if (!ticket || typeof ticket !== 'object') return '';
  return String(ticket.number || ticket.key || ticket.id || '');
}

class Chat {
  constructor(app, session) {
    this.app = app;
    this.session = session;
    this.id = session.id;
    this.unread = 0;
    this.outbox = [];
    this.flushing = false;
    this.readSent = 0;
    this.typingSentAt = 0;
    this.closed = null; // why the chat is no longer ours: 'ended' | 'transferred' | 'requeued'
    this.build();
  }

  build() {
    const app = this.app;
    const paneId = uid('pane');
    this.unreadBadge = h('span', { class: 'tab__unread', hidden: true });
    this.tabLabel = h('span', { class: 'tab__name' });
    this.tabState = h('span', { class: 'tab__state' });
    this.tab = h('button', {
      class: 'tab', type: 'button', role: 'tab', 'aria-selected': 'false', 'aria-controls': paneId,
      tabIndex: -1, onclick: () => app.activate(this.id),
    }, this.tabLabel, this.tabState, this.unreadBadge);
    this.tab.addEventListener('keydown', (e) => app.tabKeys(e, this));

    this.title = h('h2', { class: 'pane__title' });
    this.meta = h('p', { class: 'pane__meta' });
    this.transferBtn = h('button', {
      class: 'btn btn--ghost', type: 'button', text: T.transfer, onclick: () => app.transferDialog(this),
    });
    this.endBtn = h('button', {
      class: 'btn btn--danger-ghost', type: 'button', text: T.endChat, onclick: () => app.endDialog(this),
    });
    // The live log is a region around the list: an <ol> given role="log" is no longer a
    // list, and its <li> messages would belong to none.
    this.list = h('ol', { class: 'log' });
    this.scroller = h('div', { class: 'pane__scroll' },
      h('div', { role: 'log', 'aria-live': 'polite', 'aria-label': T.messagesLabel }, this.list));
    this.thread = new ThreadView({
      list: this.list,
      t: T,
      lang: LANG,
      isOwn: (m) => m.sender.id === app.me.id,
      senderName: (m) => (m.sender.role === 'customer' ? m.sender.name : T.senderName(m.sender.name, T.roles[m.sender.role] || m.sender.role)),
      renderAttachment: (m) => app.renderAttachment(m),
    });
    this.typingLine = h('div', { class: 'typing', 'aria-live': 'polite' });
    this.uploadBox = h('div', { class: 'upload', hidden: true });
    this.notice = h('p', { class: 'notice', role: 'status', hidden: true });
    this.fileInput = h('input', {
      type: 'file', hidden: true, tabIndex: -1,
      onchange: () => {
        const f = this.fileInput.files && this.fileInput.files[0];
        this.fileInput.value = '';
        if (f) this.upload(f);
      },
    });
    this.input = h('textarea', {
      rows: 2, maxLength: 10000, placeholder: T.replyPlaceholder,
      'aria-label': T.reply,
    });
    this.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.submit();
      }
    });
    this.input.addEventListener('input', () => this.noteTyping());
    this.input.addEventListener('paste', (e) => {
      const files = [...((e.clipboardData && e.clipboardData.files) || [])];
      if (files.length) {
        e.preventDefault();
        this.upload(files[0]);
      }
    });
    this.composer = h('form', { class: 'composer' },
      h('button', {
        class: 'icon-btn', type: 'button', title: T.attach, 'aria-label': T.attach,
        onclick: () => this.fileInput.click(),
      }, icon(ICON_CLIP)),
      this.input,
      h('button', { class: 'btn btn--primary', type: 'submit', text: T.send }),
      this.fileInput);
    this.composer.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
    this.endedBox = h('div', { class: 'ended', hidden: true });
    this.pane = h('section', {
      class: 'pane', id: paneId, role: 'tabpanel', hidden: true, 'aria-label': T.chatLabel,
    },
    h('header', { class: 'pane__head' },
      h('div', { class: 'pane__titles' }, this.title, this.meta),
      h('div', { class: 'pane__actions' }, this.transferBtn, this.endBtn)),
    this.scroller, this.typingLine, this.uploadBox, this.notice, this.endedBox, this.composer);
    this.pane.addEventListener('dragover', (e) => {
      if (this.isOpen() && e.dataTransfer && [...e.dataTransfer.types].includes('Files')) e.preventDefault();
    });
    this.pane.addEventListener('drop', (e) => {
      if (!this.isOpen() || !e.dataTransfer || !e.dataTransfer.files.length) return;
      e.preventDefault();
      this.upload(e.dataTransfer.files[0]);
    });
    this.refresh();
  }

  isOpen() {
    return !this.closed && this.session.state === 'active';
  }

  refresh() {
    const s = this.session;
    const c = s.customer || {};
    this.tabLabel.textContent = c.name || T.customerFallback;
    this.tabState.textContent = this.closed ? ` · ${T.closedState[this.closed]}` : '';
    this.tab.classList.toggle('tab--closed', !!this.closed);
    this.title.textContent = s.topic || '';
    clear(this.meta);
    this.meta.append(c.name || '', c.account ? ` · ${c.account}` : '', ' ', tierPill(c.tier), ' ',
      severityPill(s.severity));
    const open = this.isOpen();
    show(this.composer, open);
    this.transferBtn.disabled = !open;
    this.endBtn.disabled = !open;
    show(this.endedBox, !!this.closed);
    if (this.closed) this.renderEnded();
    this.updateUnread();
  }

  renderEnded() {
    const s = this.session;
    clear(this.endedBox);
    const why = T.endedWhy[this.closed] ? T.endedWhy[this.closed](s.engineer && s.engineer.name) : T.closedWhy;
    this.endedBox.append(h('p', { class: 'ended__title', text: why }));
    if (s.resolution) this.endedBox.append(h('p', {}, h('strong', { text: T.resolution }), s.resolution));
    const ticket = ticketText(s.ticket);
    if (ticket) {
      const url = s.ticket.url;
      this.endedBox.append(h('p', { class: 'ticket' }, T.ticket,
        url && /^https?:/.test(url)
          ? h('a', { href: url, target: '_blank', rel: 'noopener noreferrer', text: ticket })
          : h('strong', { text: ticket })));
    } else if (this.closed === 'ended') {
      this.endedBox.append(h('p', { class: 'muted', text: T.handingOff }));
    }
    this.endedBox.append(h('div', { class: 'row' },
      this.app.transcriptLinks(this.id),
      h('button', { class: 'btn btn--ghost', type: 'button', text: T.closeTab, onclick: () => this.app.closeChat(this.id) })));
  }

  setClosed(why, patch = {}) {
    this.session = { ...this.session, ...patch };
    if (!this.closed) this.closed = why;
    this.typingLine.textContent = '';
    this.refresh();
    this.app.renderCustomer();
    if (why === 'ended') this.watchForTicket();
  }

  updateUnread() {
    show(this.unreadBadge, this.unread > 0);
    this.unreadBadge.textContent = String(this.unread);
    this.tab.setAttribute('aria-label',
      T.tabLabel(this.tabLabel.textContent, this.closed ? T.closedState[this.closed] : '', this.unread));
    this.app.updateTitle();
  }

  add(msg, live) {
    if (!this.thread.add(msg)) return;
    const fromCustomer = msg.sender.role === 'customer';
    if (fromCustomer && msg.kind !== 'system') this.typingLine.textContent = '';
    const nearBottom = this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < 160;
    if (nearBottom || !fromCustomer) this.scroller.scrollTop = this.scroller.scrollHeight;
    if (msg.event && msg.event.type === 'escalation') {
      this.app.renderCustomer();
      if (live) this.app.toast(T.escalationToast(this.session.customer.name, msg.event.kind));
    }
    if (fromCustomer && live) {
      if (this.app.activeId !== this.id || !document.hasFocus()) {
        this.unread += 1;
        this.updateUnread();
      }
      this.markRead();
    }
  }

  markRead() {
    if (this.app.activeId !== this.id || document.visibilityState !== 'visible' || !this.isOpen()) return;
    let seq = 0;
    for (const m of this.thread.messages()) if (m.sender.role === 'customer') seq = m.seq;
    if (seq > this.readSent && this.app.connected) {
      this.readSent = seq;
      call(this.app.socket, 'message:read', { session_id: this.id, seq });
    }
  }

  contiguousSeq() {
    let n = 0;
    for (const s of this.thread.seqs) {
      if (s !== n + 1) break;
      n = s;
    }
    return n;
  }

  /** Fetches what was missed since the last message without a gap. Resolves false when a
   * transient error (no answer, the desk changing hands) stopped it. A call while one is
   * under way runs it once more after it; the console pages a few chats at a time
   * (ConsoleApp.paced), so that catching up on many chats never sends a burst of
   * session:resume past the connection's allowance (docs/protocol.md#limits). */
  resume() {
    if (this.resuming) {
      this.resumeAgain = true;
      return this.resuming;
    }
    this.resuming = (async () => {
      let ok = true;
      do {
        this.resumeAgain = false;
        ok = await this.app.paced(() => this.resumeOnce());
      } while (ok && this.resumeAgain);
      return ok;
    })().finally(() => {
      this.resuming = null;
    });
    return this.resuming;
  }

  async resumeOnce() {
    let after = this.contiguousSeq();
    for (let round = 0; round < 50; round += 1) {
      const res = await call(this.app.socket, 'session:resume', { session_id: this.id, after_seq: after });
      if (!res.ok) {
        const code = res.error && res.error.code;
        if (code === 'rate_limited') {
          // Paging a long chat: each page costs several events' allowance. Wait, go on.
          await new Promise((resolve) => setTimeout(resolve, 1000));
          continue;
        }
        if (code === 'forbidden') this.setClosed('transferred');
        return !TRANSIENT.has(code);
      }
      this.applySession(res.session);
      for (const m of res.messages) this.add(m, false);
      if (!res.more || !res.messages.length) break;
      after = res.messages[res.messages.length - 1].seq;
    }
    this.flush();
    return true;
  }

  applySession(session) {
    this.session = { ...this.session, ...session };
    // Read receipts are stored: after a reload, "Read" shows where it did.
    if (session.read) {
      this.thread.setRead(session.read.customer);
      this.readSent = Math.max(this.readSent, session.read.engineer);
    }
    const me = this.app.me.id;
    if (session.state === 'ended' || session.state === 'abandoned') this.setClosed('ended');
    else if (session.state === 'active' && session.engineer && session.engineer.id !== me) this.setClosed('transferred');
    else if (session.state === 'waiting' || session.state === 'offered') this.setClosed('requeued');
    else this.refresh();
    this.app.renderCustomer();
  }

  watchForTicket() {
    clearTimeout(this.ticketTimer);
    const delays = [1500, 4000, 10000, 30000];
    const step = async (i) => {
      if (ticketText(this.session.ticket) || i >= delays.length || !this.app.chats.has(this.id)) return;
      const res = await call(this.app.socket, 'session:resume', { session_id: this.id, after_seq: this.thread.lastSeq });
      if (res.ok) {
        for (const m of res.messages) this.add(m, false);
        if (res.session.ticket) {
          this.session = { ...this.session, ...res.session };
          this.refresh();
          this.app.renderCustomer();
          return;
        }
      }
      this.ticketTimer = setTimeout(() => step(i + 1), delays[i]);
    };
    this.ticketTimer = setTimeout(() => step(0), delays[0]);
  }

  submit() {
    const body = this.input.value;
    if (!body.trim() || !this.isOpen()) return;
    this.input.value = '';
    this.stopTyping();
    const cid = clientMsgId();
    this.outbox.push({ cid, body });
    this.thread.addPending(cid, body);
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.flush();
  }

  async flush() {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.outbox.length && this.app.connected && this.isOpen()) {
        const item = this.outbox[0];
        const res = await call(this.app.socket, 'message:send', {
          session_id: this.id, client_msg_id: item.cid, body: item.body,
        });
        if (res.ok) {
          this.outbox.shift();
          this.add(res.message, false);
          continue;
        }
        const code = res.error && res.error.code;
        if (TRANSIENT.has(code)) {
          this.thread.setPendingStatus(item.cid, T.failed, true);
          // `unavailable` too: a process of a cluster answers it while the desk changes
          // hands, its connection staying up (docs/scaling.md#running-several-processes).
          if (code === 'rate_limited' || code === 'internal' || code === 'unavailable') {
            setTimeout(() => this.flush(), code === 'unavailable' ? 1000 : 1500);
          }
          break;
        }
        this.outbox.shift();
        this.thread.setPendingStatus(item.cid, errorText(T, res.error, T.notSent), true);
      }
    } finally {
      this.flushing = false;
    }
  }

  noteTyping() {
    if (!this.isOpen() || !this.app.connected) return;
    const now = Date.now();
    if (now - this.typingSentAt > 3000) {
      this.typingSentAt = now;
      call(this.app.socket, 'typing', { session_id: this.id, typing: true });
    }
    clearTimeout(this.typingIdle);
    this.typingIdle = setTimeout(() => this.stopTyping(), 4000);
  }

  stopTyping() {
    clearTimeout(this.typingIdle);
    if (!this.typingSentAt || !this.app.connected) return;
    this.typingSentAt = 0;
    call(this.app.socket, 'typing', { session_id: this.id, typing: false });
  }

  onTyping(p) {
    clearTimeout(this.typingTimer);
    if (!p.typing) {
      this.typingLine.textContent = '';
      return;
    }
    this.typingLine.textContent = T.typing(this.session.customer.name);
    this.typingTimer = setTimeout(() => (this.typingLine.textContent = ''), 8000);
  }

  async upload(file) {
    if (!this.isOpen()) return;
    let name = file.name;
    if (!name || name === 'image.png') {
      name = `screenshot-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}.png`;
      file = new File([file], name, { type: file.type });
    }
    clear(this.uploadBox);
    const bar = h('progress', { max: 1, value: 0, 'aria-label': T.uploading(name) });
    const preview = file.type.startsWith('image/') ? URL.createObjectURL(file) : null;
    // (the DOM's own append writes a null as the text "null")
    this.uploadBox.append(
      ...(preview ? [h('img', { src: preview, alt: '' })] : []),
      h('div', { class: 'upload__info' }, h('span', { text: T.uploading(name) }), bar),
    );
    show(this.uploadBox, true);
    show(this.notice, false);
    const res = await uploadFileRetrying(`/api/sessions/${encodeURIComponent(this.id)}/attachments`, file, {
      withCredentials: true,
      onProgress: (f) => (bar.value = f),
    });
    show(this.uploadBox, false);
    if (preview) URL.revokeObjectURL(preview);
    if (res.status === 200 || res.status === 201) {
      if (res.body && res.body.message && res.body.message.seq) this.add(res.body.message, false);
      return;
    }
    const err = (res.body && res.body.error) || {};
    this.notice.textContent = errorText(T, err.code || err.message ? err : null,
      res.status === 413 ? T.fileTooLarge : T.uploadFailed);
    this.notice.classList.add('notice--error');
    show(this.notice, true);
  }
}

class ConsoleApp {
  constructor(root) {
    this.root = root;
    this.me = null;
    this.presence = null;
    this.socket = null;
    this.connected = false;
    this.chats = new Map();
    // session:resume rounds under way, and those waiting for a place (paced).
    this.pacedNow = 0;
    this.pacedWaiting = [];
    this.order = [];
    this.activeId = null;
    this.offers = new Map();
    this.queue = [];
    this.queueAt = Date.now();
    this.stats = null;
    this.engineers = [];
    this.audio = null;
  }

  async init() {
    const r = await requestJson('/api/me', { credentials: 'same-origin' });
    if (r.status === 200 && r.body && r.body.engineer) this.start(r.body.engineer);
    else this.showLogin();
  }

  // ------------------------------------------------------------------ login

  showLogin(message) {
    document.title = T.title;
    showSignIn(this.root, {
      t: T,
      title: T.signInTitle,
      intro: T.signInIntro,
      message,
      onSubmit: () => this.ensureAudio(),
      onSignedIn: (engineer) => this.start(engineer),
    });
  }

  // ------------------------------------------------------------------ the desk

  start(engineer) {
    this.me = engineer;
    this.buildDesk();
    this.connect();
    clearInterval(this.ticker);
    this.ticker = setInterval(() => this.tick(), 500);
    document.addEventListener('click', () => this.ensureAudio(), { once: true });
    window.addEventListener('focus', () => this.markActiveRead());
    // Say at once that the network is gone, rather than after Engine.IO's ping timeout.
    window.addEventListener('offline', () => {
      if (this.socket && this.socket.connected) this.socket.io.engine.close();
    });
    window.addEventListener('online', () => {
      if (this.socket && !this.socket.connected) {
        this.socket.disconnect();
        this.socket.connect();
      }
    });
    document.addEventListener('visibilitychange', () => this.markActiveRead());
  }

  buildDesk() {
    clear(this.root);
    this.connPill = h('span', { class: 'conn', role: 'status', text: T.connecting });
    this.statusSwitch = h('button', {
      class: 'switch', type: 'button', role: 'switch', 'aria-checked': 'false',
      onclick: () => this.setStatus(this.presence && this.presence.status === 'available' ? 'away' : 'available'),
    }, h('span', { class: 'switch__knob', 'aria-hidden': 'true' }), h('span', { class: 'switch__label', text: T.away }));
    this.capacitySelect = h('select', { class: 'input input--small', id: 'capacity', 'aria-label': T.capacity },
      [1, 2, 3, 4, 5, 6, 8, 10].map((n) => h('option', { value: String(n), text: T.atOnce(n) })));
    this.capacitySelect.value = '3';
    this.capacitySelect.addEventListener('change', () => this.setStatus(null, Number(this.capacitySelect.value)));
    this.notifyBtn = h('button', {
      class: 'btn btn--ghost btn--small', type: 'button', text: T.desktopAlerts,
      hidden: !('Notification' in window) || Notification.permission !== 'default',
      onclick: async () => {
        await Notification.requestPermission();
        show(this.notifyBtn, Notification.permission === 'default');
      },
    });
    this.queueSummary = h('span', { class: 'summary' });
    const header = h('header', { class: 'bar' },
      h('div', { class: 'brand' }, h('span', { class: 'brand__mark', 'aria-hidden': 'true' }), 'chatd', h('span', { class: 'brand__sub', text: T.brandSub })),
      this.queueSummary,
      h('div', { class: 'bar__spacer' }),
      this.connPill,
      this.notifyBtn,
      h('label', { class: 'bar__field' }, h('span', { class: 'sr-only', text: T.availability }), this.statusSwitch),
      this.capacitySelect,
      h('span', { class: 'me' }, h('span', { class: 'avatar', 'aria-hidden': 'true', text: initials(this.me.name) }),
        h('span', {}, h('span', { class: 'me__name', text: this.me.name }), h('span', { class: 'me__role', text: T.roles[this.me.role] || this.me.role }))),
      h('button', { class: 'btn btn--ghost btn--small', type: 'button', text: T.signOut, onclick: () => this.logout() }));
    this.banner = h('div', { class: 'banner', role: 'status', hidden: true });
    // The desk's wait alert (queue:alert), beside the status banner.
    this.alertBar = h('div', { class: 'alert-bar', role: 'alert', hidden: true });
    this.offersList = h('ul', { class: 'offers', 'aria-label': T.offersLabel });
    this.queueList = h('ol', { class: 'queue', 'aria-label': T.queueLabel });
    this.queueCount = h('span', { class: 'count' });
    this.queueStats = h('p', { class: 'queue-stats' });
    const side = h('aside', { class: 'side', 'aria-label': T.sideLabel },
      h('section', { class: 'side__offers', 'aria-live': 'assertive' }, this.offersList),
      h('section', { class: 'side__queue' },
        h('h2', { class: 'side__title' }, `${T.queueTitle} `, this.queueCount),
        this.queueStats,
        this.queueList));
    this.tabs = h('div', { class: 'tabs', role: 'tablist', 'aria-label': T.chatsLabel });
    this.panes = h('div', { class: 'panes' });
    this.empty = h('div', { class: 'empty' },
      h('p', { class: 'empty__title', text: T.emptyTitle }),
      h('p', { class: 'muted', text: T.emptyHint }));
    const work = h('main', { class: 'work' }, this.tabs, this.panes, this.empty);
    this.customerPanel = h('aside', { class: 'customer', 'aria-label': T.customerLabel });
    this.live = h('div', { class: 'sr-only', 'aria-live': 'polite' });
    this.toasts = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' });
    this.dialog = h('dialog', { class: 'dialog' });
    this.root.append(header, this.alertBar, this.banner, h('div', { class: 'grid' }, side, work, this.customerPanel),
      this.live, this.toasts, this.dialog);
    this.renderQueue();
    this.renderCustomer();
    this.renderPresence();
    this.updateEmpty();
  }

  connect() {
    if (this.socket) this.socket.disconnect();
    const socket = io('/engineer', {
      withCredentials: true,
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
    });
    this.socket = socket;
    socket.on('connect', () => this.onConnect());
    socket.on('disconnect', (reason) => {
      this.connected = false;
      this.connPill.textContent = T.reconnecting;
      this.connPill.className = 'conn conn--down';
      if (reason === 'io server disconnect') {
        // The server closed us (logged out or disabled elsewhere): check the login.
        this.checkLogin();
      }
    });
    socket.on('connect_error', (err) => {
      const code = connectErrorCode(err);
      this.connPill.textContent = T.reconnecting;
      this.connPill.className = 'conn conn--down';
      if (code === 'unauthorized') this.loggedOut(T.expired);
      else if (!socket.active) setTimeout(() => socket.connect(), 3000);
    });
    socket.on('engineer:status', (p) => this.onPresence(p));
    socket.on('queue:update', (p) => this.onQueueUpdate(p));
    socket.on('offer:new', (p) => this.onOffer(p));
    socket.on('offer:revoked', (p) => this.onOfferRevoked(p));
    socket.on('session:assigned', (p) => this.onAssigned(p));
    socket.on('session:ended', (p) => this.onEnded(p));
    socket.on('session:requeued', (p) => this.onRequeued(p));
    socket.on('transfer:failed', (p) => this.onTransferFailed(p));
    socket.on('message:new', (p) => {
      const chat = this.chats.get(p.session_id);
      if (chat) chat.add(p.message, true);
    });
    socket.on('typing', (p) => {
      const chat = this.chats.get(p.session_id);
      if (chat && p.role === 'customer') chat.onTyping(p);
    });
    socket.on('message:read', (p) => {
      const chat = this.chats.get(p.session_id);
      if (chat && p.role === 'customer') chat.thread.setRead(p.seq);
    });
    socket.on('status:update', (p) => this.showBanner(p && p.banner ? String(p.banner) : ''));
    socket.on('queue:alert', (p) => this.showAlert(p));
    socket.on('session:resync', () => this.onResync());
  }

  async checkLogin() {
    const r = await requestJson('/api/me', { credentials: 'same-origin' });
    if (r.status === 401) this.loggedOut(T.signedOutElsewhere);
    else if (this.socket && !this.socket.connected) this.socket.connect();
  }

  loggedOut(message) {
    if (this.socket) {
      this.socket.disconnect();
      this.socket = null;
    }
    clearInterval(this.ticker);
    this.chats.clear();
    this.order = [];
    this.offers.clear();
    this.showLogin(message);
  }

  async logout() {
    await requestJson('/api/logout', { method: 'POST', credentials: 'same-origin' });
    this.loggedOut(T.signedOut);
  }

  /** Runs ``fn`` when fewer than RESUMES_AT_ONCE others are running. */
  async paced(fn) {
    while (this.pacedNow >= RESUMES_AT_ONCE) {
      await new Promise((resolve) => this.pacedWaiting.push(resolve));
    }
    this.pacedNow += 1;
    try {
      return await fn();
    } finally {
      this.pacedNow -= 1;
      const next = this.pacedWaiting.shift();
      if (next) next();
    }
  }

  async onConnect() {
    this.connected = true;
    this.connPill.textContent = T.connected;
    this.connPill.className = 'conn conn--up';
    await this.catchUp();
  }

  /** Reads again what events would have told meanwhile: the queue, this engineer's status
   * and offers (queue:snapshot), new chats of theirs, and each open chat's messages.
   * Resolves false when a transient error left some of it unread. */
  async catchUp() {
    const snapshot = await this.refreshSnapshot();
    const mine = new Set((this.snapshotSessions || []).map((s) => s.id));
    for (const s of this.snapshotSessions || []) {
      if (!this.chats.has(s.id)) this.openChat(s, [], false);
    }
    const resumed = [];
    for (const chat of this.chats.values()) {
      if (!chat.closed || mine.has(chat.id)) resumed.push(chat.resume());
    }
    if (!this.activeId && this.order.length) this.activate(this.order[0]);
    return snapshot && (await Promise.all(resumed)).every(Boolean);
  }

  /**
   * The server says events on their way here may have been lost (docs/protocol.md#resync):
   * catch up as after a reconnect. A resync that comes while one is running makes one more
   * round, not a second one alongside; each chat shows a message once whatever comes twice.
   * The server may still be finding its way back to the desk: a transient error is tried
   * again a few times, a second more apart each time.
   */
  onResync() {
    this.resync ||= catchUpOnResync(() => this.catchUp(), () => this.connected);
    return this.resync();
  }

  /** Resolves false when the snapshot could not be read. */
  async refreshSnapshot() {
    const snap = await call(this.socket, 'queue:snapshot', {});
    if (!snap.ok) return false;
    this.queue = snap.queue || [];
    this.queueAt = Date.now();
    this.engineers = snap.engineers || [];
    this.snapshotSessions = snap.sessions || [];
    this.stats = snap;
    this.showAlert(snap.alert);
    if (snap.me) this.onPresence(snap.me);
    const live = new Set();
    for (const o of snap.offers || []) {
      live.add(o.session_id);
      if (!this.offers.has(o.session_id)) this.onOffer(o, false);
    }
    for (const id of [...this.offers.keys()]) if (!live.has(id)) this.removeOffer(id);
    this.renderQueue();
    return true;
  }

  scheduleSnapshot() {
    if (this.snapTimer) return;
    this.snapTimer = setTimeout(() => {
      this.snapTimer = null;
      if (this.connected) this.refreshSnapshot();
    }, 300);
  }

  // ------------------------------------------------------------------ presence

  async setStatus(status, capacity) {
    const payload = { status: status || (this.presence ? this.presence.status : 'away') };
    if (capacity) payload.capacity = capacity;
    else payload.capacity = Number(this.capacitySelect.value);
    const res = await call(this.socket, 'engineer:status', payload);
    if (res.ok) this.onPresence(res.engineer);
    else this.toast(errorText(T, res.error, T.statusFailed));
  }

  onPresence(p) {
    if (!p || (this.me && p.id && p.id !== this.me.id)) return;
    this.presence = { ...(this.presence || {}), ...p };
    if (p.reason === 'offer_expired') {
      this.showBanner(T.awayBanner);
    } else if (p.status === 'available') this.showBanner('');
    this.renderPresence();
  }

  renderPresence() {
    const p = this.presence || { status: 'away', capacity: 3 };
    const on = p.status === 'available';
    this.statusSwitch.setAttribute('aria-checked', on ? 'true' : 'false');
    this.statusSwitch.querySelector('.switch__label').textContent = on ? T.available : T.away;
    this.statusSwitch.classList.toggle('switch--on', on);
    if (p.capacity) {
      const value = String(p.capacity);
      if (![...this.capacitySelect.options].some((o) => o.value === value)) {
        this.capacitySelect.append(h('option', { value, text: T.atOnce(value) }));
      }
      this.capacitySelect.value = value;
    }
  }

  showAlert(p) {
    const level = p && ALERT_LEVELS.includes(p.level) ? p.level : null;
    this.alertBar.className = 'alert-bar' + (level ? ' ' + level : '');
    let text = '';
    if (level === 'breach') {
      text = T.alertBreach(Math.round(p.threshold_seconds));
    } else if (level === 'warning') {
      text = T.alertWarning(Math.round(p.threshold_seconds));
    } else if (level === 'predicted') {
      // Nobody has waited long yet; the desk predicts someone will wait past the target
      // (no figure: customers wait and no engineer is available or expected back).
      const why = p.predicted_wait_seconds != null
        ? T.longestPredicted(approxMinutes(p.predicted_wait_seconds))
        : T.noEngineer;
      text = T.alertPredicted(minutes(p.target_seconds || 300), why);
    }
    // The bar is an alert region: the same text set again would be read out again.
    if (this.alertBar.textContent !== text) this.alertBar.textContent = text;
    show(this.alertBar, !!level);
  }

  showBanner(text) {
    this.banner.textContent = text;
    show(this.banner, !!text);
  }

  toast(text) {
    const el = h('div', { class: 'toast', text });
    this.toasts.append(el);
    setTimeout(() => el.remove(), 6000);
  }

  // ------------------------------------------------------------------ queue

  onQueueUpdate(p) {
    this.stats = { ...(this.stats || {}), ...p };
    this.renderQueueSummary();
    this.scheduleSnapshot();
  }

  renderQueue() {
    clear(this.queueList);
    this.queueCount.textContent = String(this.queue.length);
    for (const item of this.queue) {
      const wait = h('span', { class: 'wait', dataset: { waited: item.waited_seconds } });
      const offered = item.state === 'offered';
      this.queueList.append(h('li', { class: 'qitem', dataset: { session: item.id } },
        h('div', { class: 'qitem__top' },
          h('span', { class: 'qitem__pos', text: `#${item.position}` }),
          h('span', { class: 'qitem__name', text: item.customer.name }),
          wait),
        h('div', { class: 'qitem__topic', text: item.topic }),
        h('div', { class: 'qitem__meta' },
          item.customer.account ? h('span', { text: item.customer.account }) : null,
          tierPill(item.customer.tier),
          severityPill(item.severity),
          offered ? h('span', { class: 'pill pill--offered', text: T.offered }) : null)));
    }
    if (!this.queue.length) this.queueList.append(h('li', { class: 'muted qempty', text: T.nobodyWaiting }));
    this.renderQueueSummary();
    this.tick();
  }

  renderQueueSummary() {
    const s = this.stats || {};
    const len = s.length || 0;
    clear(this.queueSummary);
    this.queueSummary.append(...T.waitingCount(len).map((part) => (part === String(len) ? h('strong', { text: part }) : part)));
    if (len) this.queueSummary.append(` · ${T.oldest} `, h('span', { class: 'wait wait--summary', dataset: { oldest: s.oldest_wait_seconds || 0 } }));
    this.summaryAt = Date.now();
    this.tick();
    const online = s.engineers_online;
    clear(this.queueStats);
    this.queueStats.append(
      T.queueTargets(mmss(s.target_seconds || 300), mmss(s.warning_seconds || 240)),
      online != null ? ` · ${T.engineersOnline(online)}` : '',
    );
  }

  tick() {
    const s = this.stats || {};
    const warn = s.warning_seconds || 240;
    const target = s.target_seconds || 300;
    const since = (Date.now() - this.queueAt) / 1000;
    for (const el of this.queueList.querySelectorAll('.wait')) {
      const waited = Number(el.dataset.waited) + since;
      el.textContent = mmss(waited);
      el.classList.toggle('wait--warn', waited >= warn && waited < target);
      el.classList.toggle('wait--late', waited >= target);
      el.closest('.qitem').classList.toggle('qitem--late', waited >= target);
      el.closest('.qitem').classList.toggle('qitem--warn', waited >= warn && waited < target);
    }
    const oldest = this.queueSummary.querySelector('.wait');
    if (oldest) {
      const waited = Number(oldest.dataset.oldest) + (Date.now() - this.summaryAt) / 1000;
      oldest.textContent = mmss(waited);
      oldest.classList.toggle('wait--warn', waited >= warn && waited < target);
      oldest.classList.toggle('wait--late', waited >= target);
    }
    const now = Date.now();
    for (const offer of this.offers.values()) {
      const left = Math.max(0, (offer.deadline - now) / 1000);
      offer.countdown.textContent = T.seconds(Math.ceil(left));
      offer.bar.value = left;
      offer.el.classList.toggle('offer--urgent', left <= 10);
    }
  }

  // ------------------------------------------------------------------ offers

  onOffer(p, alert = true) {
    this.removeOffer(p.session_id);
    const c = p.customer || {};
    const countdown = h('span', { class: 'offer__countdown', 'aria-hidden': 'true' });
    const bar = h('progress', { class: 'offer__bar', max: p.expires_in_seconds || 30, value: p.expires_in_seconds || 30, 'aria-hidden': 'true' });
    const accept = h('button', { class: 'btn btn--primary', type: 'button', text: T.accept, onclick: () => this.accept(p.session_id) });
    const decline = h('button', { class: 'btn btn--ghost', type: 'button', text: T.decline, onclick: () => this.decline(p.session_id) });
    const el = h('li', { class: 'offer', dataset: { session: p.session_id }, 'aria-label': T.offerLabel(c.name, p.topic) },
      h('div', { class: 'offer__head' },
        h('span', { class: 'offer__kind', text: p.transfer_from ? T.transferFrom(p.transfer_from.name) : T.newChat }),
        countdown),
      bar,
      h('div', { class: 'offer__name', text: c.name }),
      h('div', { class: 'offer__meta' }, c.account ? h('span', { text: c.account }) : null, tierPill(c.tier), severityPill(p.severity)),
      h('div', { class: 'offer__topic', text: p.topic }),
      h('div', { class: 'offer__waited', text: T.waited(mmss(p.waited_seconds || 0)) }),
      h('div', { class: 'row' }, accept, decline));
    this.offers.set(p.session_id, { p, el, countdown, bar, deadline: Date.now() + (p.expires_in_seconds || 30) * 1000 });
    this.offersList.append(el);
    this.tick();
    this.updateTitle();
    if (alert) {
      this.live.textContent = T.offerAnnounce(c.name, p.topic);
      this.chime();
      this.notify(p);
      if (!this.dialog.open && !this.isTyping()) accept.focus();
    }
  }

  isTyping() {
    const a = document.activeElement;
    return !!a && (a.tagName === 'TEXTAREA' || a.tagName === 'INPUT');
  }

  removeOffer(sessionId) {
    const o = this.offers.get(sessionId);
    if (!o) return;
    o.el.remove();
    this.offers.delete(sessionId);
    this.updateTitle();
  }

  onOfferRevoked(p) {
    const had = this.offers.has(p.session_id);
    this.removeOffer(p.session_id);
    if (had && p.reason !== 'declined') this.toast(T.revoked[p.reason] || T.revokedOther);
  }

  async accept(sessionId) {
    const o = this.offers.get(sessionId);
    if (o) for (const b of o.el.querySelectorAll('button')) b.disabled = true;
    const res = await call(this.socket, 'offer:accept', { session_id: sessionId });
    this.removeOffer(sessionId);
    if (!res.ok) {
      this.toast(errorText(T, res.error, T.acceptFailed));
      return;
    }
    const existing = this.chats.get(sessionId);
    if (existing) {
      existing.closed = null;
      existing.applySession(res.session);
      for (const m of res.messages) existing.add(m, false);
      this.activate(sessionId);
    } else this.openChat(res.session, res.messages, true);
    // The answer carries one page of history (a long chat's text is paged): fetch the rest.
    const chat = this.chats.get(sessionId);
    if (chat) await chat.resume();
  }

  async decline(sessionId) {
    const res = await call(this.socket, 'offer:decline', { session_id: sessionId });
    this.removeOffer(sessionId);
    if (!res.ok && res.error && res.error.code !== 'conflict') this.toast(errorText(T, res.error, T.revokedOther));
  }

  ensureAudio() {
    if (this.audio || !window.AudioContext) return;
    try {
      this.audio = new AudioContext();
    } catch {
      this.audio = null;
    }
  }

  chime() {
    const ctx = this.audio;
    if (!ctx) return;
    if (ctx.state === 'suspended') ctx.resume();
    const now = ctx.currentTime;
    for (const [i, freq] of [[0, 880], [1, 1175]]) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = 'sine';
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, now + i * 0.18);
      gain.gain.exponentialRampToValueAtTime(0.25, now + i * 0.18 + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.18 + 0.35);
      osc.connect(gain).connect(ctx.destination);
      osc.start(now + i * 0.18);
      osc.stop(now + i * 0.18 + 0.4);
    }
  }

  notify(p) {
    if (!('Notification' in window) || Notification.permission !== 'granted') return;
    try {
      const c = p.customer || {};
      const n = new Notification(T.notifyTitle(c.name, c.account), {
        body: `${p.topic} · S${p.severity} ${T.severities[p.severity] || ''} · ${tierName(c.tier)}`,
        tag: `chatd-offer-${p.session_id}`,
        requireInteraction: true,
      });
      n.onclick = () => {
        window.focus();
        n.close();
      };
    } catch {
      // some browsers allow notifications only from a service worker
    }
  }

  // ------------------------------------------------------------------ chats and tabs

  openChat(session, messages, focus) {
    let chat = this.chats.get(session.id);
    if (!chat) {
      chat = new Chat(this, session);
      this.chats.set(session.id, chat);
      this.order.push(session.id);
      this.tabs.append(chat.tab);
      this.panes.append(chat.pane);
    }
    for (const m of messages) chat.add(m, false);
    if (focus || !this.activeId) this.activate(session.id);
    if (!messages.length) chat.resume();
    this.updateEmpty();
    return chat;
  }

  closeChat(id) {
    const chat = this.chats.get(id);
    if (!chat) return;
    chat.tab.remove();
    chat.pane.remove();
    clearTimeout(chat.ticketTimer);
    this.chats.delete(id);
    const i = this.order.indexOf(id);
    this.order.splice(i, 1);
    if (this.activeId === id) {
      this.activeId = null;
      const next = this.order[Math.min(i, this.order.length - 1)];
      if (next) this.activate(next);
    }
    this.updateEmpty();
    this.renderCustomer();
    this.updateTitle();
  }

  updateEmpty() {
    show(this.empty, this.chats.size === 0);
    show(this.tabs, this.chats.size > 0);
  }

  activate(id) {
    const chat = this.chats.get(id);
    if (!chat) return;
    this.activeId = id;
    for (const c of this.chats.values()) {
      const on = c === chat;
      c.tab.setAttribute('aria-selected', on ? 'true' : 'false');
      c.tab.tabIndex = on ? 0 : -1;
      c.tab.classList.toggle('tab--active', on);
      show(c.pane, on);
    }
    chat.unread = 0;
    chat.updateUnread();
    chat.scroller.scrollTop = chat.scroller.scrollHeight;
    chat.markRead();
    this.renderCustomer();
    if (chat.isOpen()) chat.input.focus();
  }

  tabKeys(e, chat) {
    const i = this.order.indexOf(chat.id);
    let next = null;
    if (e.key === 'ArrowRight') next = this.order[(i + 1) % this.order.length];
    else if (e.key === 'ArrowLeft') next = this.order[(i - 1 + this.order.length) % this.order.length];
    else if (e.key === 'Home') next = this.order[0];
    else if (e.key === 'End') next = this.order[this.order.length - 1];
    if (next) {
      e.preventDefault();
      this.activate(next);
      this.chats.get(next).tab.focus();
    }
  }

  markActiveRead() {
    const chat = this.chats.get(this.activeId);
    if (!chat) return;
    if (document.hasFocus() && chat.unread) {
      chat.unread = 0;
      chat.updateUnread();
    }
    chat.markRead();
  }

  updateTitle() {
    let n = this.offers.size;
    for (const c of this.chats.values()) n += c.unread;
    document.title = n ? T.titleCount(n) : T.title;
  }

  onAssigned(p) {
    const chat = this.chats.get(p.session_id);
    if (p.engineer.id === this.me.id) {
      if (!chat) {
        this.openChat({ id: p.session_id, state: 'active', topic: '', severity: 3, customer: { name: '' } }, [], false);
      } else if (chat.closed) {
        chat.closed = null;
        chat.resume();
      }
    } else if (chat) {
      chat.setClosed('transferred', { engineer: p.engineer });
      this.toast(T.movedTo(chat.session.customer.name, p.engineer.name));
    }
  }

  onEnded(p) {
    const chat = this.chats.get(p.session_id);
    if (!chat) return;
    chat.setClosed('ended', {
      state: 'ended', ended_by: p.ended_by, end_reason: p.reason,
      resolution: p.resolution || chat.session.resolution,
      ticket: p.ticket || chat.session.ticket,
    });
    if (p.ended_by === 'customer') this.toast(T.customerEnded(chat.session.customer.name));
  }

  onRequeued(p) {
    const chat = this.chats.get(p.session_id);
    if (chat) chat.setClosed('requeued', { state: 'waiting' });
  }

  onTransferFailed(p) {
    const chat = this.chats.get(p.session_id);
    const who = (this.engineers.find((e) => e.id === p.to_engineer_id) || {}).name || T.theEngineer;
    this.toast(T.transferDeclined(who, T.transferReasons[p.reason] || p.reason));
    if (chat) {
      chat.notice.textContent = '';
      show(chat.notice, false);
    }
  }

  // ------------------------------------------------------------------ customer panel

  renderCustomer() {
    const panel = this.customerPanel;
    clear(panel);
    const chat = this.chats.get(this.activeId);
    if (!chat) {
      panel.append(h('p', { class: 'muted', text: T.customerEmpty }));
      return;
    }
    const s = chat.session;
    const c = s.customer || {};
    const row = (label, value) => (value ? [h('dt', { text: label }), h('dd', {}, value)] : null);
    panel.append(
      h('div', { class: 'customer__head' },
        h('span', { class: 'avatar avatar--big', 'aria-hidden': 'true', text: initials(c.name || '?') }),
        h('div', {}, h('h2', { class: 'customer__name', text: c.name || '' }),
          c.email ? h('a', { href: `mailto:${c.email}`, text: c.email }) : null)),
      h('dl', { class: 'facts' },
        row(T.facts.account, c.account || '—'),
        row(T.facts.tier, tierPill(c.tier)),
        row(T.facts.severity, severityPill(s.severity)),
        row(T.facts.topic, s.topic),
        row(T.facts.waited, s.created_at && s.assigned_at
          ? mmss((Date.parse(s.assigned_at) - Date.parse(s.created_at)) / 1000) : null),
        row(T.facts.started, s.created_at ? clockTime(s.created_at, LANG) : null),
        row(T.facts.ticket, ticketText(s.ticket)
          ? (s.ticket.url && /^https?:/.test(s.ticket.url)
            ? h('a', { href: s.ticket.url, target: '_blank', rel: 'noopener noreferrer', text: ticketText(s.ticket) })
            : ticketText(s.ticket))
          : null)),
    );
    const escalations = chat.thread.messages().filter((m) => m.event && m.event.type === 'escalation');
    panel.append(h('h3', { class: 'customer__sub', text: T.escalations }));
    if (!escalations.length) panel.append(h('p', { class: 'muted', text: T.none }));
    else {
      panel.append(h('ul', { class: 'escalations' }, escalations.map((m) => h('li', { class: 'escalation' },
        h('strong', { text: m.event.kind === 'phone' ? T.phoneCall : T.screenShare }),
        m.event.phone ? h('span', {}, ' · ', h('a', { href: `tel:${m.event.phone}`, text: m.event.phone })) : null,
        h('span', { class: 'muted', text: ` · ${clockTime(m.ts, LANG)}` }),
        m.event.note ? h('p', { text: m.event.note }) : null))));
    }
    panel.append(h('h3', { class: 'customer__sub', text: T.transcript }), this.transcriptLinks(chat.id));
  }

  transcriptLinks(id) {
    const base = `/api/sessions/${encodeURIComponent(id)}/transcript?format=`;
    return h('span', { class: 'links' },
      h('a', { href: `${base}text`, download: '', text: T.transcriptText }), ' · ',
      h('a', { href: `${base}html`, target: '_blank', rel: 'noopener', text: 'HTML' }), ' · ',
      h('a', { href: `${base}json`, download: '', text: 'JSON' }));
  }

  // ------------------------------------------------------------------ attachments

  renderAttachment(msg) {
    const a = msg.attachment;
    const name = a.filename || T.file;
    const type = String(a.content_type || '');
    if (type.startsWith('image/')) {
      return h('button', {
        class: 'thumb', type: 'button', title: `${name} · ${formatBytes(a.size || 0)}`, 'aria-label': T.enlarge(name),
        onclick: () => this.imageDialog(a),
      }, h('img', { src: a.thumbnail_url || a.url, alt: name, loading: 'lazy' }));
    }
    const textual = TEXTUAL.test(type) || TEXT_EXT.test(name);
    return h('div', { class: 'file' },
      h('span', { class: 'file__icon', 'aria-hidden': 'true', text: (name.split('.').pop() || 'file').slice(0, 4).toUpperCase() }),
      h('div', {},
        h('span', { class: 'file__name', text: name }),
        h('span', { class: 'file__size', text: formatBytes(a.size || 0) }),
        h('span', { class: 'file__actions' },
          textual ? h('button', { class: 'linkish', type: 'button', text: T.view, onclick: () => this.logDialog(a) }) : null,
          textual ? ' · ' : null,
          h('a', { href: a.url, download: name, text: T.download }))));
  }

  openDialog(title, ...content) {
    const d = this.dialog;
    clear(d);
    const titleId = uid('dlg');
    d.setAttribute('aria-labelledby', titleId);
    d.append(h('div', { class: 'dialog__head' },
      h('h2', { id: titleId, text: title }),
      h('button', { class: 'icon-btn', type: 'button', 'aria-label': T.close, onclick: () => d.close() }, icon('M6 6l12 12M18 6L6 18'))),
    ...content);
    if (!d.open) d.showModal();
    return d;
  }

  imageDialog(a) {
    this.openDialog(a.filename || T.image,
      h('img', { class: 'dialog__image', src: a.url, alt: a.filename || '' }),
      h('p', {}, h('a', { href: a.url, download: a.filename || '', text: T.download })));
  }

  async logDialog(a) {
    const pre = h('pre', { class: 'viewer', tabIndex: 0, text: T.loading });
    const note = h('p', { class: 'muted' });
    this.openDialog(a.filename || T.log, note, pre,
      h('p', {}, h('a', { href: a.url, download: a.filename || '', text: T.downloadWhole(formatBytes(a.size || 0)) })));
    try {
      const r = await fetch(a.url, { credentials: 'same-origin', headers: { Range: 'bytes=0-262143' } });
      if (!r.ok && r.status !== 206) throw new Error(String(r.status));
      const text = await r.text();
      const lines = text.split('\n');
      const shown = lines.slice(0, 500);
      pre.textContent = shown.join('\n');
      note.textContent = lines.length > 500 || (a.size || 0) > text.length
        ? T.firstLines(shown.length)
        : T.lines(shown.length);
    } catch {
      pre.textContent = T.loadFailed;
    }
  }

  // ------------------------------------------------------------------ end and transfer

  endDialog(chat) {
    const resolution = h('textarea', { class: 'input', id: uid('res'), rows: 4, maxLength: 4000, placeholder: T.resolutionPlaceholder });
    const form = h('form', { method: 'dialog' },
      h('label', { class: 'field' }, h('span', { class: 'field__label', text: T.resolutionLabel }), resolution),
      h('div', { class: 'row row--end' },
        h('button', { class: 'btn btn--ghost', type: 'button', text: T.cancel, onclick: () => this.dialog.close() }),
        h('button', { class: 'btn btn--danger', type: 'submit', text: T.endChat })));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const payload = { session_id: chat.id };
      if (resolution.value.trim()) payload.resolution = resolution.value.trim();
      const res = await call(this.socket, 'session:end', payload);
      this.dialog.close();
      if (res.ok) chat.setClosed('ended', res.session);
      else this.toast(errorText(T, res.error, T.endFailed));
    });
    this.openDialog(T.endTitle(chat.session.customer.name), form);
    resolution.focus();
  }

  async transferDialog(chat) {
    await this.refreshSnapshot();
    const others = this.engineers.filter((e) => e.id !== this.me.id && e.online);
    const form = h('form', { method: 'dialog' });
    const name = `to-${uid()}`;
    const choices = others.map((e) => {
      const free = e.status === 'available' && e.active + e.offers < e.capacity;
      return h('label', { class: `choice${free ? '' : ' choice--off'}` },
        h('input', { type: 'radio', name, value: e.id, disabled: !free }),
        h('span', { class: 'choice__name', text: e.name }),
        h('span', { class: 'muted', text: T.engineerLine(T.statuses[e.status] || e.status, e.active, e.capacity) }));
    });
    if (!choices.length) form.append(h('p', { class: 'muted', text: T.noOtherEngineer }));
    form.append(h('fieldset', { class: 'choices' }, h('legend', { text: T.offerTo }), choices),
      h('div', { class: 'row row--end' },
        h('button', { class: 'btn btn--ghost', type: 'button', text: T.cancel, onclick: () => this.dialog.close() }),
        h('button', { class: 'btn btn--primary', type: 'submit', text: T.offerTransfer, disabled: !choices.length })));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const picked = form.querySelector('input[type=radio]:checked');
      if (!picked) return;
      const res = await call(this.socket, 'session:transfer', { session_id: chat.id, to_engineer_id: picked.value });
      this.dialog.close();
      if (res.ok) {
        const who = (others.find((x) => x.id === picked.value) || {}).name;
        chat.notice.textContent = T.transferOffered(who);
        chat.notice.classList.remove('notice--error');
        show(chat.notice, true);
      } else this.toast(errorText(T, res.error, T.transferFailed));
    });
    this.openDialog(T.transferTitle(chat.session.customer.name), form);
    const first = form.querySelector('input:not([disabled])');
    if (first) first.focus();
  }
}

function initials(name) {
  return String(name || '?').split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join('');
}

applyLanguage(LANG);
document.title = T.title;
const app = new ConsoleApp(document.getElementById('app'));
app.init();
