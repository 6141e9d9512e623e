// One chat's messages, shown in seq order whatever order they arrive in (live events, a
// resume after a reconnect, a retried send), each exactly once. Messages still being sent
// stay below the stored ones until the server gives them their seq.
import { h, clear } from './dom.js';
import { renderBody } from './text.js';
import { clockTime } from './i18n.js';

export class ThreadView {
  /**
   * @param {object} o
   * @param {HTMLElement} o.list        the <ol> that holds the messages
   * @param {(msg: object) => boolean} o.isOwn
   * @param {(msg: object) => string} o.senderName
   * @param {(msg: object) => Node} o.renderAttachment
   * @param {object} o.t                the strings of the page's language (`t.system(msg)`,
   *                                     when given, says a system message in that language)
   * @param {string} o.lang
   */
  constructor(o) {
    this.o = o;
    this.list = o.list;
    this.seqs = []; // sorted seqs of the stored messages on screen
    this.bySeq = new Map(); // seq -> {msg, el}
    this.ids = new Set();
    this.pending = new Map(); // client_msg_id -> {body, el, failed}
    this.readSeq = 0; // the other side has read up to here
  }

  get lastSeq() {
    return this.seqs.length ? this.seqs[this.seqs.length - 1] : 0;
  }

  reset() {
    clear(this.list);
    this.seqs = [];
    this.bySeq.clear();
    this.ids.clear();
    this.pending.clear();
    this.readSeq = 0;
  }

  messages() {
    return this.seqs.map((s) => this.bySeq.get(s).msg);
  }

  /** Adds a stored message; returns false when it is already shown. */
  add(msg) {
    if (this.ids.has(msg.id) || this.bySeq.has(msg.seq)) return false;
    this.ids.add(msg.id);
    const pend = msg.client_msg_id ? this.pending.get(msg.client_msg_id) : undefined;
    if (pend) {
      pend.el.remove();
      this.pending.delete(msg.client_msg_id);
    }
    const el = this.render(msg);
    // Find the first shown seq greater than this one (usually none: the message is newest).
    let i = this.seqs.length;
    while (i > 0 && this.seqs[i - 1] > msg.seq) i -= 1;
    const before = i < this.seqs.length ? this.bySeq.get(this.seqs[i]).el : this.firstPendingEl();
    this.seqs.splice(i, 0, msg.seq);
    this.bySeq.set(msg.seq, { msg, el });
    if (before) this.list.insertBefore(el, before);
    else this.list.append(el);
    this.refreshStatus();
    return true;
  }

  firstPendingEl() {
    for (const p of this.pending.values()) return p.el;
    return null;
  }

  addPending(clientMsgId, body) {
    const msg = { kind: 'text', body, ts: new Date().toISOString(), own: true };
    const el = this.render(msg, true);
    el.classList.add('msg--pending');
    this.pending.set(clientMsgId, { body, el, failed: false });
    this.list.append(el);
    this.setPendingStatus(clientMsgId, this.o.t.sending);
    return el;
  }

  setPendingStatus(clientMsgId, text, failed = false) {
    const p = this.pending.get(clientMsgId);
    if (!p) return;
    p.failed = failed;
    p.el.classList.toggle('msg--failed', failed);
    p.el.querySelector('.msg__status').textContent = text;
  }

  setRead(seq) {
    if (seq <= this.readSeq) return;
    this.readSeq = seq;
    this.refreshStatus();
  }

  /** "Sent" or "Read" under the newest own stored message only: one receipt, not a wall. */
  refreshStatus() {
    let lastOwn = null;
    for (let i = this.seqs.length - 1; i >= 0; i -= 1) {
      const item = this.bySeq.get(this.seqs[i]);
      if (item.msg.kind !== 'system' && this.o.isOwn(item.msg)) {
        lastOwn = item;
        break;
      }
    }
    for (const s of this.list.querySelectorAll('.msg--stored .msg__status')) {
      s.textContent = '';
      s.parentElement.classList.remove('msg--read');
    }
    if (lastOwn) {
      const read = lastOwn.msg.seq <= this.readSeq;
      lastOwn.el.querySelector('.msg__status').textContent = read ? this.o.t.read : this.o.t.sent;
      lastOwn.el.classList.toggle('msg--read', read);
    }
  }

  render(msg, pending = false) {
    const { t, lang } = this.o;
    const time = h('time', { dateTime: msg.ts, text: clockTime(msg.ts, lang) });
    if (msg.kind === 'system') {
      return h(
        'li',
        { class: 'msg msg--system msg--stored', dataset: { seq: msg.seq } },
        // The server writes the sentence in English; `event` lets a page say it in its own.
        h('span', { class: 'msg__body', text: (t.system && t.system(msg)) || msg.body }),
        ' ',
        time,
      );
    }
    const own = pending || this.o.isOwn(msg);
    const body = h('div', { class: 'msg__body' });
    if (msg.kind === 'attachment' && msg.attachment) body.append(this.o.renderAttachment(msg));
    else body.append(renderBody(msg.body || ''));
    const li = h(
      'li',
      {
        class: `msg ${own ? 'msg--own' : 'msg--other'}${pending ? '' : ' msg--stored'}`,
        dataset: pending ? {} : { seq: msg.seq, role: msg.sender.role },
      },
      h(
        'div',
        { class: 'msg__meta' },
        h('span', { class: 'msg__sender', text: own ? t.you : this.o.senderName(msg) }),
        ' ',
        time,
      ),
      body,
      own ? h('div', { class: 'msg__status', 'aria-live': 'off' }) : null,
    );
    return li;
  }
}
