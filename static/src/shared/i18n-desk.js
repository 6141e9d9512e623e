// What the engineers' pages (the console and the monitor) say in both of them: sign-in,
// connection, severities, tiers, roles, statuses, error codes and the units of a duration.
// The language is chosen as the widget's is (i18n.js): the page's `data-chatd-lang`
// attribute on <html> when set, else the browser's languages; anything but Japanese is
// English.
import { pickLanguage } from './i18n.js';

export const DESK_STRINGS = {
  en: {
    locale: 'en',
    email: 'Email',
    password: 'Password',
    signIn: 'Sign in',
    signInFailed: 'Sign-in failed.',
    signOut: 'Sign out',
    signedOut: 'You are signed out.',
    expired: 'Your sign-in has expired. Please sign in again.',
    connecting: 'Connecting…',
    reconnecting: 'Reconnecting…',
    severities: { 1: 'Critical', 2: 'High', 3: 'Medium', 4: 'Low' },
    tiers: { standard: 'standard', premier: 'premier', concierge: 'concierge' },
    roles: { engineer: 'engineer', lead: 'lead' },
    statuses: { available: 'available', away: 'away', offline: 'offline' },
    seconds: (n) => `${n} s`,
    minutes: (n) => `${n} min`,
    minutesSeconds: (m, s) => `${m} min ${s} s`,
    errors: {},
  },
  ja: {
    locale: 'ja-JP',
    email: 'メールアドレス',
    password: 'パスワード',
    signIn: 'サインイン',
    signInFailed: 'サインインできませんでした。メールアドレスとパスワードをご確認ください。',
    signOut: 'サインアウト',
    signedOut: 'サインアウトしました。',
    expired: 'サインインの有効期限が切れました。もう一度サインインしてください。',
    connecting: '接続中…',
    reconnecting: '再接続中…',
    severities: { 1: '緊急', 2: '高', 3: '中', 4: '低' },
    tiers: { standard: 'スタンダード', premier: 'プレミア', concierge: 'コンシェルジュ' },
    roles: { engineer: 'エンジニア', lead: 'リーダー' },
    statuses: { available: '対応可能', away: '離席中', offline: 'オフライン' },
    seconds: (n) => `${n}秒`,
    minutes: (n) => `${n}分`,
    minutesSeconds: (m, s) => `${m}分${s}秒`,
    // The server's error messages are English: a Japanese page says what the code means.
    errors: {
      bad_request: '入力内容を受け付けられませんでした。',
      unauthorized: 'サインインが必要です。',
      forbidden: 'この操作は許可されていません。',
      not_found: '対象が見つかりませんでした。',
      conflict: 'ほかの操作がすでに行われています。',
      session_closed: 'このチャットはすでに終了しています。',
      rate_limited: '操作が多すぎます。少し待ってからお試しください。',
      too_large: 'サイズが上限を超えています。',
      internal: 'サーバーでエラーが発生しました。',
      unavailable: '現在ご利用いただけません。少し待ってからお試しください。',
      timeout: 'サーバーから応答がありませんでした。',
      disconnected: 'サーバーに接続していません。',
    },
  },
};

/** The page's language: `data-chatd-lang` on <html>, else the browser's. */
export function pageLanguage() {
  return pickLanguage(document.documentElement.dataset.chatdLang);
}

/** Puts the language on <html> (screen readers and fonts follow it). */
export function applyLanguage(lang) {
  document.documentElement.lang = lang;
}

/**
 * What to show for a refused request: the server's own message on an English page (it is
 * English and the most precise), the meaning of its code on a Japanese one, else `fallback`.
 */
export function errorText(t, error, fallback) {
  if (!error) return fallback;
  if (t.locale === 'en') return error.message || fallback;
  return (error.code && t.errors[error.code]) || fallback;
}

/** A duration in words: "45 s", "5 min", "1 min 30 s" (「45秒」「5分」「1分30秒」). */
export function minutesText(t, seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return t.seconds(s);
  return s % 60 ? t.minutesSeconds(Math.floor(s / 60), s % 60) : t.minutes(s / 60);
}

/** A clock time in the page's language ("14:05:09"; with `seconds` false, "14:05"). */
export function clockText(t, ms, seconds = true) {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return '';
  const opts = { hour: '2-digit', minute: '2-digit' };
  if (seconds) opts.second = '2-digit';
  return d.toLocaleTimeString(t.locale === 'en' ? [] : t.locale, opts);
}
