// The support lead's monitor: the queue, the wait against the five-minute promise, the
// service level, engineers and chats in progress, live. It polls GET /api/stats and listens
// on /engineer (queue:update, queue:alert, status:update) with the console's login cookie.
import { io } from 'socket.io-client';
import { h, clear, show } from '../shared/dom.js';
import { requestJson, connectErrorCode } from '../shared/http.js';
import { showSignIn } from '../shared/signin.js';
import { pageLanguage, applyLanguage, errorText, clockText } from '../shared/i18n-desk.js';
import { MONITOR_STRINGS } from '../shared/i18n-monitor.js';
import { TimeChart } from './chart.js';

// The page's language: `data-chatd-lang` on <html>, else the browser's (docs/monitoring.md).
const LANG = pageLanguage();
const T = MONITOR_STRINGS[LANG];

const POLL_MS = 5000;
const HISTORY_SECONDS = 6 * 3600;
// The objective the Prometheus rules burn against (deploy/prometheus/alerts.yml): 90% of
// chats answered within the target. The page marks it on the service-level bars.
const OBJECTIVE = 0.9;
const RANGES = [900, 3600, HISTORY_SECONDS].map((seconds) => [T.ranges[seconds], seconds]);
const LEVEL_TEXT = T.levels;
const HORIZONS = ['now', 'next_hour'].map((key) => [key, T.horizons[key]]);
const COLORS = { queue: '#2450d8', wait: '#6b3fd4', warning: '#d48806', target: '#c0362c' };

function dur(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return '–';
  const s = Math.max(0, Math.floor(seconds));
  const m = Math.floor(s / 60);
  if (m >= 60) return `${Math.floor(m / 60)}:${String(m % 60).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
  return `${m}:${String(s % 60).padStart(2, '0')}`;
}

/** Seconds in words, to the minute from a minute up: "5 min", "45 s". */
function mins(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return s < 60 ? T.seconds(s) : T.minutes(Math.round(s / 60));
}

/** Why a `predicted` alert was raised: the longest predicted wait, or (no figure) that
 * customers wait with no engineer available or expected back. */
function predictedWhy(alert) {
  return alert.predicted_wait_seconds != null
    ? T.longestPredicted(dur(alert.predicted_wait_seconds))
    : T.noEngineer;
}

function pct(x) {
  if (x == null) return '–';
  const v = x * 100;
  return `${v >= 99.95 || v === 0 ? v.toFixed(0) : v.toFixed(1)}%`;
}

function clock(ms) {
  return clockText(T, ms);
}

function initials(name) {
  return String(name || '?').split(/\s+/).filter(Boolean).slice(0, 2).map((p) => p[0].toUpperCase()).join('');
}

function severityPill(sev) {
  return h('span', { class: `pill pill--sev-${sev}`, text: `S${sev} · ${T.severities[sev] || ''}` });
}

function tierPill(tier) {
  return h('span', { class: `pill pill--tier-${tier || 'standard'}`, text: T.tiers[tier || 'standard'] || tier });
}

function panel(title, body, { extra, cls } = {}) {
  return h('section', { class: `panel${cls ? ` ${cls}` : ''}`, 'aria-label': title },
    h('header', { class: 'panel__head' }, h('h2', { class: 'panel__title', text: title }), extra || null),
    body);
}

class MonitorApp {
  constructor(root) {
    this.root = root;
    this.me = null;
    this.socket = null;
    this.stats = null;
    this.offset = 0; // server clock minus this browser's, from the last poll
    this.live = []; // {t, length, wait} seen since the last history sample
    this.oldestCreated = null; // ms, the head of the queue
    this.queueLength = 0;
    this.alert = null;
    this.alertLog = [];
    this.alertAt = 0; // server ms of the last level change applied
    this.range = 3600;
    this.polling = false;
    this.again = false;
  }

  serverNow() {
    return Date.now() + this.offset;
  }

  async init() {
    const r = await requestJson('/api/me', { credentials: 'same-origin' });
    const engineer = r.status === 200 && r.body && r.body.engineer;
    if (engineer && engineer.role === 'lead') this.start(engineer);
    else if (engineer) this.showLogin(this.notLead(engineer));
    else this.showLogin();
  }

  notLead(engineer) {
    return T.notLead(engineer.name);
  }

  // ------------------------------------------------------------------ login

  showLogin(message) {
    this.stop();
    document.title = T.title;
    showSignIn(this.root, {
      t: T,
      title: T.signInTitle,
      intro: T.signInIntro,
      message,
      refuse: (engineer) => (engineer.role === 'lead' ? null : this.notLead(engineer)),
      onSignedIn: (engineer) => this.start(engineer),
    });
  }

  loggedOut(message) {
    this.showLogin(message);
  }

  async logout() {
    await requestJson('/api/logout', { method: 'POST', credentials: 'same-origin' });
    this.loggedOut(T.signedOut);
  }

  stop() {
    if (this.socket) {
      this.socket.disconnect();
      this.socket = null;
    }
    clearTimeout(this.pollTimer);
    clearTimeout(this.soonTimer);
    clearInterval(this.ticker);
    this.stats = null;
  }

  // ------------------------------------------------------------------ the page

  start(engineer) {
    this.me = engineer;
    this.alert = null;
    this.alertAt = 0;
    this.alertLog = [];
    this.live = [];
    this.build();
    this.connect();
    this.poll();
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  build() {
    clear(this.root);
    this.connPill = h('span', { class: 'conn', role: 'status', text: T.connecting });
    this.updated = h('span', { class: 'updated muted' });
    const header = h('header', { class: 'bar' },
      h('div', { class: 'brand' }, h('span', { class: 'brand__mark', 'aria-hidden': 'true' }), 'chatd',
        h('span', { class: 'brand__sub', text: T.brandSub })),
      h('div', { class: 'bar__spacer' }),
      this.updated,
      this.connPill,
      h('a', { class: 'btn btn--ghost btn--small', href: '/console/', text: T.console }),
      h('span', { class: 'me' }, h('span', { class: 'avatar', 'aria-hidden': 'true', text: initials(this.me.name) }),
        h('span', {}, h('span', { class: 'me__name', text: this.me.name }), h('span', { class: 'me__role', text: T.roles[this.me.role] || this.me.role }))),
      h('button', { class: 'btn btn--ghost btn--small', type: 'button', text: T.signOut, onclick: () => this.logout() }));

    // The alert bar: its headline changes only on transitions (read out once); the ticking
    // detail sits outside the live region.
    this.alertHead = h('strong', { class: 'alertbar__head' });
    this.alertDetail = h('span', { class: 'alertbar__detail' });
    this.alertBar = h('section', { class: 'alertbar', id: 'alert', dataset: { level: 'ok' }, 'aria-label': T.queueAlert },
      h('span', { class: 'alertbar__dot', 'aria-hidden': 'true' }),
      h('span', { class: 'alertbar__live', role: 'status', 'aria-live': 'assertive' }, this.alertHead),
      this.alertDetail);
    this.bannerNow = h('div', { class: 'statusline', hidden: true });

    this.kpi = {
      waiting: this.card(T.kpi.waiting, 'kpi-waiting'),
      oldest: this.card(T.kpi.oldest, 'kpi-oldest'),
      sl1h: this.card(T.kpi.sl1h, 'kpi-sl-1h', true),
      sl24h: this.card(T.kpi.sl24h, 'kpi-sl-24h', true),
      engineers: this.card(T.kpi.engineers, 'kpi-engineers'),
      active: this.card(T.kpi.active, 'kpi-active'),
    };
    const kpis = h('div', { class: 'kpis' }, Object.values(this.kpi).map((c) => c.el));

    this.rangeButtons = RANGES.map(([label, seconds]) => h('button', {
      class: 'seg__btn', type: 'button', text: label, 'aria-pressed': String(seconds === this.range),
      onclick: () => this.setRange(seconds),
    }));
    this.queueCaption = h('span', { class: 'chart__caption', id: 'queue-caption' });
    this.waitCaption = h('span', { class: 'chart__caption', id: 'wait-caption' });
    const queueHost = h('div', { class: 'chart', id: 'queue-chart' });
    const waitHost = h('div', { class: 'chart', id: 'wait-chart' });
    this.queueChart = new TimeChart(queueHost, {
      label: T.waitingSeries, timeLabel: T.time, locale: T.locale, color: COLORS.queue, fill: 'rgba(36, 80, 216, .10)', step: true, floor: 4,
      format: (v) => String(Math.round(v)), incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    });
    this.waitChart = new TimeChart(waitHost, {
      label: T.oldestWait, timeLabel: T.time, locale: T.locale, color: COLORS.wait, fill: 'rgba(107, 63, 212, .08)', floor: 10,
      format: dur, incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200],
    });
    const seg = h('div', { class: 'seg', role: 'group', 'aria-label': T.chartRange }, this.rangeButtons);
    const charts = h('div', { class: 'charts' },
      panel(T.queueLength, h('div', {}, this.queueCaption, queueHost), { extra: seg }),
      panel(T.oldestWait, h('div', {}, this.waitCaption, waitHost)));

    this.engineersBody = h('tbody');
    this.queueBody = h('tbody');
    this.sessionsBody = h('tbody');
    this.queueCount = h('span', { class: 'count' });
    this.sessionsCount = h('span', { class: 'count' });
    const table = (heads, body, label) => h('div', { class: 'table-wrap' },
      h('table', { class: 'table', 'aria-label': label },
        h('thead', {}, h('tr', {}, heads.map((t) => h('th', { scope: 'col', text: t })))), body));
    const left = h('div', { class: 'stack' },
      panel(T.engineersTitle, table(T.engineerHeads, this.engineersBody, T.engineersTitle), { cls: 'panel--engineers' }),
      this.buildForecast(),
      panel(T.queueTitle, table(T.queueHeads, this.queueBody, T.queueTitle), { extra: this.queueCount, cls: 'panel--queue' }),
      panel(T.sessionsTitle, table(T.sessionHeads, this.sessionsBody, T.sessionsTitle), { extra: this.sessionsCount, cls: 'panel--sessions' }));

    this.handoffs = h('dl', { class: 'facts', id: 'handoffs' });
    this.alertList = h('ol', { class: 'alerts', id: 'alert-log', 'aria-label': T.alertsTitle });
    const right = h('div', { class: 'stack' },
      this.buildBannerForm(),
      panel(T.handoffsTitle, this.handoffs, { cls: 'panel--handoffs' }),
      panel(T.alertsTitle, this.alertList, { cls: 'panel--alerts' }));

    this.toasts = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' });
    this.root.append(header, this.alertBar, this.bannerNow,
      h('main', { class: 'dash' }, kpis, charts, h('div', { class: 'cols' }, left, right)),
      this.toasts);
    this.renderAlert();
    this.renderAlertLog();
  }

  card(title, id, serviceLevel = false) {
    const value = h('p', { class: 'kpi__value', text: '–' });
    const sub = h('p', { class: 'kpi__sub' });
    const extra = [];
    let bar = null;
    let fill = null;
    if (serviceLevel) {
      fill = h('span', { class: 'meter__fill' });
      const mark = h('span', { class: 'meter__mark', title: T.objective(pct(OBJECTIVE)) });
      mark.style.left = `${OBJECTIVE * 100}%`;
      bar = h('span', { class: 'meter', 'aria-hidden': 'true' }, fill, mark);
      extra.push(bar);
    }
    const more = h('p', { class: 'kpi__more' });
    const el = h('section', { class: 'kpi', id, 'aria-label': title },
      h('h2', { class: 'kpi__title', text: title }), value, ...extra, sub, more);
    return { el, value, sub, more, fill };
  }

  // The staffing forecast (/api/stats `forecast`): capacity slots and engineers needed now
  // and over the next hour for the service-level objective, against those online.
  buildForecast() {
    this.forecastBody = h('tbody');
    this.forecastNote = h('p', { class: 'forecast__note', id: 'forecast-note' });
    const heads = T.forecastHeads;
    const table = h('div', { class: 'table-wrap' },
      h('table', { class: 'table table--forecast', 'aria-label': T.forecastTitle, 'aria-describedby': 'forecast-note' },
        h('thead', {}, h('tr', {}, heads.map((t) => h('th', { scope: 'col', text: t })))), this.forecastBody));
    this.forecastPanel = panel(T.forecastTitle, h('div', { id: 'forecast' }, table, this.forecastNote), { cls: 'panel--forecast' });
    return this.forecastPanel;
  }

  buildBannerForm() {
    this.bannerText = h('textarea', { class: 'input', id: 'banner-text', rows: 3, maxLength: 500,
      placeholder: T.bannerPlaceholder });
    this.bannerLink = h('input', { class: 'input', id: 'banner-link', type: 'url', maxLength: 2000,
      placeholder: 'https://status.example.com/incidents/…', autocomplete: 'off' });
    this.bannerError = h('p', { class: 'form-error', role: 'alert', hidden: true });
    this.bannerCurrent = h('div', { class: 'banner-current', id: 'banner-current' });
    this.bannerPost = h('button', { class: 'btn btn--primary', type: 'submit', text: T.postBanner });
    this.bannerClear = h('button', { class: 'btn btn--danger-ghost', type: 'button', text: T.clearBanner,
      disabled: true, onclick: () => this.postBanner(null, null) });
    const count = h('span', { class: 'field__hint', text: '0 / 500' });
    this.bannerText.addEventListener('input', () => { count.textContent = `${this.bannerText.value.length} / 500`; });
    const form = h('form', { class: 'banner-form', 'aria-label': T.bannerTitle },
      this.bannerCurrent,
      h('label', { class: 'field' },
        h('span', { class: 'field__label' }, T.bannerMessage, count), this.bannerText),
      h('label', { class: 'field' },
        h('span', { class: 'field__label', text: T.bannerLink }), this.bannerLink),
      this.bannerError,
      h('div', { class: 'row row--end' }, this.bannerClear, this.bannerPost));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const text = this.bannerText.value.trim();
      if (!text) {
        this.bannerError.textContent = T.bannerEmptyText;
        show(this.bannerError, true);
        return;
      }
      this.postBanner(text, this.bannerLink.value.trim() || null);
    });
    return panel(T.bannerTitle, form, { cls: 'panel--banner' });
  }

  async postBanner(text, link) {
    show(this.bannerError, false);
    this.bannerPost.disabled = true;
    this.bannerClear.disabled = true;
    const res = await requestJson('/api/status', {
      method: 'POST', credentials: 'same-origin', body: { banner: text, link },
    });
    this.bannerPost.disabled = false;
    if (res.status === 200 && res.body && res.body.ok) {
      this.renderBanner(res.body);
      if (text) {
        this.bannerText.value = '';
        this.bannerLink.value = '';
        this.bannerText.dispatchEvent(new Event('input'));
      }
      this.toast(text ? T.bannerPosted : T.bannerCleared);
      return;
    }
    if (res.status === 401) {
      this.loggedOut(T.expired);
      return;
    }
    this.renderBanner(this.banner);
    this.bannerError.textContent = errorText(T, res.body && res.body.error, T.bannerFailed);
    show(this.bannerError, true);
  }

  renderBanner(b) {
    this.banner = b && b.banner ? b : null;
    clear(this.bannerCurrent);
    clear(this.bannerNow);
    this.bannerClear.disabled = !this.banner;
    this.bannerCurrent.classList.toggle('banner-current--up', !!this.banner);
    if (!this.banner) {
      this.bannerCurrent.append(h('p', { class: 'muted', text: T.noBanner }));
      show(this.bannerNow, false);
      return;
    }
    const link = this.banner.link && /^https?:\/\//.test(this.banner.link)
      ? h('a', { href: this.banner.link, target: '_blank', rel: 'noopener noreferrer', text: this.banner.link })
      : null;
    const since = this.banner.updated_at ? clock(Date.parse(this.banner.updated_at)) : '';
    this.bannerCurrent.append(
      h('p', { class: 'banner-current__label', text: T.shownSince(since) }),
      h('p', { class: 'banner-current__text', text: this.banner.banner }),
      // (the DOM's own append writes a null as the text "null")
      ...(link ? [h('p', { class: 'banner-current__link' }, link)] : []));
    this.bannerNow.append(h('strong', { text: T.bannerUp }), this.banner.banner);
    show(this.bannerNow, true);
  }

  toast(text) {
    const el = h('div', { class: 'toast', text });
    this.toasts.append(el);
    setTimeout(() => el.remove(), 4000);
  }

  // ------------------------------------------------------------------ live data

  connect() {
    // watch: listen to the desk-wide events without counting as an engineer on the desk
    const socket = io('/engineer', { withCredentials: true, auth: { watch: true }, reconnectionDelay: 500, reconnectionDelayMax: 5000 });
    this.socket = socket;
    socket.on('connect', () => {
      this.setConn(true);
      this.refreshSoon();
    });
    socket.on('disconnect', (reason) => {
      this.setConn(false);
      if (reason === 'io server disconnect') this.poll();
    });
    socket.on('connect_error', (err) => {
      this.setConn(false);
      if (connectErrorCode(err) === 'unauthorized') this.loggedOut(T.expired);
      else if (!socket.active) setTimeout(() => socket.connect(), 3000);
    });
    socket.on('queue:update', (p) => this.onQueueUpdate(p));
    socket.on('queue:alert', (p) => this.onAlert(p, true));
    socket.on('status:update', (p) => this.renderBanner(p));
    // Events on their way here may have been lost (docs/protocol.md#resync): the stats
    // answer has the queue, the alert and the banner as they are now.
    socket.on('session:resync', () => this.refreshSoon());
  }

  setConn(up) {
    this.socketUp = up;
    this.renderConn();
  }

  renderConn() {
    const ok = this.socketUp && this.pollOk !== false;
    this.connPill.textContent = ok ? T.live : this.pollOk === false ? T.offlineRetrying : T.reconnecting;
    this.connPill.className = `conn ${ok ? 'conn--up' : 'conn--down'}`;
  }

  refreshSoon() {
    clearTimeout(this.soonTimer);
    this.soonTimer = setTimeout(() => this.poll(), 250);
  }

  async poll() {
    clearTimeout(this.pollTimer);
    if (this.polling) {
      this.again = true;
      return;
    }
    this.polling = true;
    const sent = Date.now();
    const res = await requestJson('/api/stats', { credentials: 'same-origin' });
    this.polling = false;
    if (!this.me || !this.connPill.isConnected) return; // signed out meanwhile
    if (res.status === 401) {
      this.loggedOut(T.expired);
      return;
    }
    if (res.status === 403) {
      this.showLogin(this.notLead(this.me));
      return;
    }
    this.pollOk = res.status === 200 && !!res.body;
    this.renderConn();
    if (this.pollOk) {
      this.offset = Date.parse(res.body.now) - (sent + Date.now()) / 2;
      this.apply(res.body);
      // The server closed the socket but still knows us (a restart, say): reconnect.
      if (this.socket && !this.socket.connected && !this.socket.active) this.socket.connect();
    }
    if (this.again) {
      this.again = false;
      this.refreshSoon();
    }
    this.pollTimer = setTimeout(() => this.poll(), POLL_MS);
  }

  apply(stats) {
    const first = !this.stats;
    this.stats = stats;
    const q = stats.queue || { length: 0, waiting: [] };
    this.queueLength = q.length;
    this.oldestCreated = q.waiting && q.waiting.length ? Date.parse(q.waiting[0].created_at) : null;
    this.observe(Date.parse(stats.now) / 1000, q.length, q.oldest_wait_seconds);
    // The poll catches up a page that missed an event (or opened during an alert), unless
    // an event newer than this answer already moved the level.
    const level = stats.alert ? stats.alert.level : null;
    const mine = this.alert ? this.alert.level : null;
    if (level !== mine && Date.parse(stats.now) > this.alertAt) {
      this.onAlert(stats.alert || { level: 'clear', at: stats.now }, !first);
    }
    this.updated.textContent = T.updated(clock(Date.parse(stats.now)));
    if (!this.bannerPost.disabled || first) this.renderBanner(stats.status_banner);
    this.renderKpis();
    this.renderEngineers();
    this.renderQueue();
    this.renderSessions();
    this.renderHandoffs();
    this.renderForecast();
    this.renderCharts();
    this.renderAlert();
  }

  observe(t, length, wait) {
    this.live.push({ t, length, wait });
    // Only what the server's history does not have yet is worth keeping.
    const hist = (this.stats && this.stats.history) || [];
    const covered = hist.length ? Date.parse(hist[hist.length - 1].t) / 1000 : t - HISTORY_SECONDS;
    while (this.live.length && this.live[0].t <= covered) this.live.shift();
  }

  onQueueUpdate(p) {
    if (!p) return;
    this.queueLength = p.length;
    this.oldestCreated = p.oldest_created_at ? Date.parse(p.oldest_created_at) : null;
    this.observe(this.serverNow() / 1000, p.length, p.oldest_wait_seconds || 0);
    this.renderKpis();
    this.renderCharts();
    this.renderAlert();
    this.refreshSoon();
  }

  onAlert(p, live) {
    if (!p || !p.level) return;
    const level = p.level === 'clear' ? null : p.level;
    if ((this.alert && this.alert.level) === level && level !== null) return;
    const was = this.alert;
    this.alert = level ? p : null;
    this.alertAt = p.at ? Date.parse(p.at) : this.serverNow();
    if (level || was) {
      // A clear says what it ends: a wait past the warning, or only a prediction.
      const from = was ? was.level : null;
      this.alertLog.unshift({ ...p, from, at: p.at || new Date(this.serverNow()).toISOString(), live });
      this.alertLog.length = Math.min(this.alertLog.length, 30);
    }
    this.renderAlert();
    this.renderAlertLog();
    if (live) this.refreshSoon();
  }

  oldestWait() {
    if (!this.queueLength || this.oldestCreated == null) return 0;
    return Math.max(0, (this.serverNow() - this.oldestCreated) / 1000);
  }

  tick() {
    if (!this.stats) return;
    this.renderKpis();
    this.renderAlert();
    for (const el of this.root.querySelectorAll('[data-since]')) {
      el.textContent = dur((this.serverNow() - Number(el.dataset.since)) / 1000);
    }
    this.renderWaitColors();
    this.renderCharts();
  }

  // ------------------------------------------------------------------ rendering

  thresholds() {
    const s = this.stats || {};
    return { warning: s.warning_seconds || 240, target: s.target_seconds || 300 };
  }

  waitClass(seconds) {
    const { warning, target } = this.thresholds();
    if (seconds >= target) return 'breach';
    if (seconds >= warning) return 'warning';
    return 'ok';
  }

  renderAlert() {
    const { warning, target } = this.thresholds();
    const wait = this.oldestWait();
    const level = this.alert ? this.alert.level : this.queueLength ? 'ok' : 'empty';
    this.alertBar.dataset.level = level;
    let head;
    if (level === 'breach') head = T.headBreach(dur(target));
    else if (level === 'warning') head = T.headWarning(dur(warning));
    else if (level === 'predicted') head = T.headPredicted(dur(target), predictedWhy(this.alert));
    else if (level === 'ok') head = T.headOk;
    else head = T.headEmpty;
    if (this.alertHead.textContent !== head) this.alertHead.textContent = head;
    const online = this.stats ? (this.stats.engineers_by_status || {}).available || 0 : 0;
    const parts = [];
    if (this.queueLength) parts.push(T.oldestWaitIs(dur(wait)), T.waitingN(this.queueLength));
    parts.push(T.availableN(online));
    parts.push(T.thresholds(dur(warning), dur(target)));
    if (this.alert && this.alert.at) parts.push(T.since(clock(Date.parse(this.alert.at))));
    this.alertDetail.textContent = parts.join(' · ');
    document.title = T.titleFlag(this.queueLength, LEVEL_TEXT[level] || '');
  }

  renderAlertLog() {
    clear(this.alertList);
    if (!this.alertLog.length) {
      this.alertList.append(h('li', { class: 'alerts__empty muted', text: T.noAlerts }));
      return;
    }
    for (const a of this.alertLog) {
      const waiting = a.queue_length || 0;
      let detail;
      if (a.level === 'clear') {
        detail = a.from === 'predicted' ? T.clearedPredicted : T.clearedWait;
      } else if (a.level === 'predicted') {
        detail = T.logPredicted(predictedWhy(a), dur(a.threshold_seconds), dur(a.oldest_wait_seconds), waiting);
      } else {
        detail = T.logWait(dur(a.oldest_wait_seconds), dur(a.threshold_seconds), waiting);
      }
      this.alertList.append(h('li', { class: `alerts__item alerts__item--${a.level}`, dataset: { level: a.level } },
        h('span', { class: 'alerts__time', text: clock(Date.parse(a.at)) }),
        h('span', { class: `pill pill--${a.level}`, text: LEVEL_TEXT[a.level] || a.level }),
        h('span', { class: 'alerts__text', text: detail })));
    }
  }

  renderKpis() {
    const s = this.stats;
    if (!s) return;
    const k = this.kpi;
    const { warning, target } = this.thresholds();
    const wait = this.oldestWait();
    k.waiting.value.textContent = String(this.queueLength);
    const onOffer = (s.queue.waiting || []).filter((w) => w.state === 'offered').length;
    k.waiting.sub.textContent = onOffer ? T.onOffer(onOffer) : this.queueLength ? T.noneOnOffer : T.queueEmpty;
    const est = s.estimate || {};
    k.waiting.more.textContent = T.capacityHandle(est.online_capacity || 0, dur(est.average_handle_seconds));

    k.oldest.value.textContent = dur(wait);
    k.oldest.el.dataset.level = this.queueLength ? this.waitClass(wait) : 'ok';
    k.oldest.sub.textContent = T.thresholds(dur(warning), dur(target));
    const w1 = (s.service_level || {})['1h'] || {};
    k.oldest.more.textContent = T.longestAnswered(dur(w1.max_wait_seconds));

    for (const [card, key] of [[k.sl1h, '1h'], [k.sl24h, '24h']]) {
      const w = (s.service_level || {})[key] || {};
      const sl = w.service_level;
      card.value.textContent = pct(sl);
      card.el.dataset.level = sl == null ? 'none' : sl >= OBJECTIVE ? 'ok' : 'breach';
      card.fill.style.width = `${Math.round((sl || 0) * 100)}%`;
      const counted = (w.answered || 0) + (w.abandoned || 0) - (w.abandoned_short || 0);
      card.sub.textContent = counted
        ? T.answeredWithin(w.answered_within_target, counted, dur(w.target_seconds || target))
        : T.noChatsYet;
      card.more.textContent = T.slMore(dur(w.average_wait_seconds), dur(w.p90_wait_seconds), pct(w.abandon_rate), dur(w.average_handle_seconds));
    }

    const by = s.engineers_by_status || {};
    // Chats the available engineers could still take: none while customers wait is the
    // staffing problem behind every alert.
    const free = (s.engineers || [])
      .filter((e) => e.online && e.status === 'available')
      .reduce((a, e) => a + Math.max(0, (e.capacity || 0) - e.load), 0);
    k.engineers.value.textContent = String(by.available || 0);
    k.engineers.el.dataset.level = this.queueLength && !free ? 'warning' : 'ok';
    k.engineers.sub.textContent = T.awayOffline(by.away || 0, (s.engineers || []).filter((e) => !e.online).length);
    k.engineers.more.textContent = free ? T.roomFor(free) : T.noRoom;

    k.active.value.textContent = String(s.sessions_active || 0);
    const load = (s.engineers || []).reduce((a, e) => a + (e.online ? e.load : 0), 0);
    k.active.sub.textContent = T.loadOf(load, est.online_capacity || 0);
    const cc = s.connected_clients || {};
    k.active.more.textContent = T.endedConnected(w1.ended || 0, cc.customer || 0);
  }

  renderEngineers() {
    clear(this.engineersBody);
    const rows = this.stats.engineers || [];
    if (!rows.length) {
      this.engineersBody.append(h('tr', {}, h('td', { colSpan: 6, class: 'empty-row', text: T.noEngineers })));
      return;
    }
    for (const e of rows) {
      const cap = e.capacity || 0;
      const fill = h('span', { class: 'meter__fill' });
      fill.style.width = `${cap ? Math.min(100, Math.round((e.load / cap) * 100)) : 0}%`;
      this.engineersBody.append(h('tr', { dataset: { engineer: e.id, status: e.status } },
        h('td', {}, h('span', { class: 'who' },
          h('span', { class: 'avatar', 'aria-hidden': 'true', text: initials(e.name) }),
          h('span', {}, h('span', { class: 'who__name', text: e.name }),
            e.role === 'lead' ? h('span', { class: 'who__role', text: T.roles.lead }) : null))),
        h('td', {}, h('span', { class: `pill pill--${e.status}`, text: T.statuses[e.status] || e.status })),
        h('td', { class: 'load' }, e.online
          ? [h('span', { class: 'load__text', text: `${e.load} / ${cap}` }), h('span', { class: 'meter meter--small', 'aria-hidden': 'true' }, fill)]
          : h('span', { class: 'muted', text: '–' })),
        h('td', { class: 'num', text: String(e.sessions_handled_1h || 0) }),
        h('td', { class: 'num', text: String(e.sessions_handled_24h || 0) }),
        h('td', { class: 'num', text: dur(e.average_handle_seconds_24h) })));
    }
  }

  renderQueue() {
    const waiting = this.stats.queue.waiting || [];
    this.queueCount.textContent = String(waiting.length);
    clear(this.queueBody);
    if (!waiting.length) {
      this.queueBody.append(h('tr', {}, h('td', { colSpan: 6, class: 'empty-row', text: T.nobodyWaiting })));
      return;
    }
    const names = new Map((this.stats.engineers || []).map((e) => [e.id, e.name]));
    for (const w of waiting) {
      const since = Date.parse(w.created_at);
      this.queueBody.append(h('tr', { dataset: { session: w.id } },
        h('td', { class: 'num', text: String(w.position) }),
        h('td', {}, h('span', { class: 'cust__name', text: w.customer.name }),
          h('span', { class: 'cust__meta' }, w.customer.account ? `${w.customer.account} ` : '', tierPill(w.customer.tier))),
        h('td', { class: 'topic', text: w.topic }),
        h('td', {}, severityPill(w.severity)),
        h('td', { class: 'wait num', dataset: { since: String(since), wait: 'yes' }, text: dur((this.serverNow() - since) / 1000) }),
        h('td', { text: w.offered_to ? names.get(w.offered_to) || T.anEngineer : '–' })));
    }
    this.renderWaitColors();
  }

  renderWaitColors() {
    for (const el of this.queueBody.querySelectorAll('[data-wait]')) {
      el.dataset.level = this.waitClass((this.serverNow() - Number(el.dataset.since)) / 1000);
    }
  }

  renderSessions() {
    const sessions = this.stats.sessions || [];
    this.sessionsCount.textContent = String(sessions.length);
    clear(this.sessionsBody);
    if (!sessions.length) {
      this.sessionsBody.append(h('tr', {}, h('td', { colSpan: 5, class: 'empty-row', text: T.noSessions })));
      return;
    }
    for (const s of sessions) {
      const since = Date.parse(s.assigned_at || s.created_at);
      this.sessionsBody.append(h('tr', { dataset: { session: s.id } },
        h('td', {}, h('span', { class: 'cust__name', text: s.customer.name }),
          h('span', { class: 'cust__meta' }, s.customer.account ? `${s.customer.account} ` : '', tierPill(s.customer.tier))),
        h('td', { class: 'topic', text: s.topic }),
        h('td', {}, severityPill(s.severity)),
        h('td', { text: s.engineer ? s.engineer.name : '–' }),
        h('td', { class: 'num', dataset: { since: String(since) }, text: dur((this.serverNow() - since) / 1000) })));
    }
  }

  renderHandoffs() {
    const ho = this.stats.handoffs || {};
    clear(this.handoffs);
    const item = (label, value, level) => h('div', { class: 'fact', dataset: { level } },
      h('dt', { text: label }), h('dd', { text: String(value || 0) }));
    this.handoffs.append(
      item(T.handoffs.pending, ho.pending, ho.pending ? 'warning' : 'ok'),
      item(T.handoffs.failed, ho.failed, ho.failed ? 'breach' : 'ok'),
      item(T.handoffs.delivered, ho.delivered, 'ok'));
  }

  renderForecast() {
    const f = this.stats.forecast;
    show(this.forecastPanel, !!f); // a server without the forecast
    if (!f) return;
    clear(this.forecastBody);
    const num = (v) => h('td', { class: 'num', text: v == null ? '–' : String(v) });
    const perHour = (v) => (v == null ? null : v >= 10 ? Math.round(v) : Math.round(v * 10) / 10);
    for (const [key, label] of HORIZONS) {
      const part = f[key] || {};
      const row = h('tr', { dataset: { horizon: key } }, h('th', { scope: 'row', text: label }));
      if (part.arrivals_per_hour == null) {
        row.dataset.level = 'none';
        row.append(h('td', { colSpan: 4, class: 'muted', text: T.notEnoughData }));
      } else {
        const { text, level } = this.staffingGap(part.slots, f);
        row.dataset.level = level;
        row.append(num(perHour(part.arrivals_per_hour)), num(part.slots), num(part.engineers),
          h('td', { class: 'gap' }, h('span', { class: `pill pill--gap-${level}`, text })));
      }
      this.forecastBody.append(row);
    }
    this.forecastBody.append(h('tr', { dataset: { horizon: 'online' } },
      h('th', { scope: 'row', text: T.online }), num(null), num(f.slots_online), num(f.engineers_online), h('td')));
    const model = f.model === 'erlang_a' && f.patience_seconds != null
      ? T.erlangA(mins(f.patience_seconds))
      : T.erlangC;
    const objective = `${Math.round((f.objective || 0) * 1000) / 10}%`;
    this.forecastNote.textContent = T.forecastNote(objective, mins(f.target_seconds), model,
      mins(f.handle_seconds), f.default_capacity || 1);
  }

  /** Needed slots against those online, in words (the colour only repeats it). */
  staffingGap(slots, f) {
    if (slots == null) return { text: T.beyondModel, level: 'short' };
    const short = slots - (f.slots_online || 0);
    if (short <= 0) return { text: short < 0 ? T.enoughSpare(-short) : T.enough, level: 'ok' };
    const engineers = Math.ceil(short / (f.default_capacity || 1));
    return { text: T.short(short, engineers), level: 'short' };
  }

  setRange(seconds) {
    this.range = seconds;
    for (const [i, b] of this.rangeButtons.entries()) b.setAttribute('aria-pressed', String(RANGES[i][1] === seconds));
    this.renderCharts();
  }

  series() {
    const hist = (this.stats && this.stats.history) || [];
    const points = hist.map((p) => ({ t: Date.parse(p.t) / 1000, length: p.length, wait: p.oldest_wait_seconds }));
    const last = points.length ? points[points.length - 1].t : -Infinity;
    for (const p of this.live) if (p.t > last) points.push(p);
    points.sort((a, b) => a.t - b.t);
    const now = this.serverNow() / 1000;
    if (!points.length || points[points.length - 1].t < now) {
      points.push({ t: now, length: this.queueLength, wait: this.oldestWait() });
    }
    return { points, now };
  }

  renderCharts() {
    if (!this.stats) return;
    const { points, now } = this.series();
    const first = points.length ? points[0].t : now;
    // The history restarts with the server: show what there is rather than an empty hour.
    const from = Math.min(Math.max(now - this.range, first), now - 60);
    const shown = points.filter((p) => p.t >= from - 10);
    const { warning, target } = this.thresholds();
    this.waitChart.setThresholds([
      { label: T.warning, value: warning, color: COLORS.warning },
      { label: T.target, value: target, color: COLORS.target },
    ]);
    this.queueChart.update(shown.map((p) => ({ t: p.t, v: p.length })), from, now);
    this.waitChart.update(shown.map((p) => ({ t: p.t, v: p.wait })), from, now);
    const peakLen = Math.max(0, ...shown.map((p) => p.length));
    const peakWait = Math.max(0, ...shown.map((p) => p.wait));
    // After a restart the history is short: say from when it runs.
    const span = first > now - this.range ? T.since(clock(first * 1000)) : T.lastRange(RANGES.find((r) => r[1] === this.range)[0]);
    this.queueCaption.textContent = T.caption(this.queueLength, peakLen, span);
    this.waitCaption.textContent = T.caption(dur(this.oldestWait()), dur(peakWait), span);
  }
}

applyLanguage(LANG);
document.title = T.title;
const root = document.getElementById('app');
if (root) new MonitorApp(root).init();
