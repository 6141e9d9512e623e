// English and Japanese. The language comes from a data attribute when the page sets one,
// else from the browser; anything but Japanese falls back to English.

export const STRINGS = {
  en: {
    launcher: 'Chat with an engineer',
    title: 'Technical support',
    close: 'Minimize chat',
    newMessages: (n) => (n === 1 ? '1 new message' : `${n} new messages`),
    intro: 'Tell us what is wrong and an engineer will join you here.',
    tagline: 'Talk to our support engineers',
    name: 'Your name',
    email: 'Email',
    topic: 'What do you need help with?',
    topicPlaceholder: 'e.g. Deployments fail with error 502',
    severity: 'How badly are you affected?',
    severities: {
      1: 'Critical: production is down',
      2: 'High: a major feature is broken',
      3: 'Medium: partial or minor impact',
      4: 'Low: a question',
    },
    severityShort: { 1: 'Critical', 2: 'High', 3: 'Medium', 4: 'Low' },
    firstMessage: 'Details (optional)',
    firstMessagePlaceholder: 'What did you try? What did you expect?',
    start: 'Start chat',
    starting: 'Connecting…',
    required: 'Please fill in this field.',
    badEmail: 'Please enter a valid email address.',
    position: (n) => (n === 1 ? 'You are next in the queue' : `You are number ${n} in the queue`),
    estimate: (s) => `Estimated wait: ${duration(s, 'en')}`,
    estimateRange: (range) => `Estimated wait: ${range}`,
    noEstimate: 'Waiting for an engineer to become available.',
    // Position and wait, read out together (the wait as spoken words, not "3–7 min").
    queueStatus: (position, wait) => `${position}. ${wait}`,
    waiting: 'Waiting for an engineer',
    nobodyOnline: 'No engineer is online right now. You can keep waiting, or leave a ticket and we will answer by email.',
    leaveTicket: 'Leave a ticket',
    cancelWait: 'Leave the queue',
    joined: (name) => `${name} joined the chat`,
    connectedWith: (name) => `You are chatting with ${name}`,
    composer: 'Message',
    composerPlaceholder: 'Type a message…',
    composerHint: 'Enter to send, Shift+Enter for a new line. Use ``` for code.',
    send: 'Send',
    attach: 'Attach a file',
    dropHere: 'Drop a file to attach it',
    typing: (name) => `${name} is typing…`,
    you: 'You',
    support: 'Support',
    sending: 'Sending…',
    sent: 'Sent',
    read: 'Read',
    failed: 'Not sent yet: will retry when connected',
    reconnecting: 'Reconnecting…',
    reconnected: 'Connected again',
    statusLink: 'Status page',
    offline: 'Reconnecting… You are offline; messages will be sent when the connection is back.',
    menu: 'More actions',
    phone: 'Request a phone call',
    screenShare: 'Request a screen share',
    phoneNumber: 'Phone number',
    note: 'Note (optional)',
    request: 'Send request',
    cancel: 'Cancel',
    escalationSent: 'Your request was sent to the engineer.',
    end: 'End chat',
    endConfirm: 'End this chat?',
    endYes: 'Yes, end it',
    ended: 'This chat has ended.',
    abandoned: 'You left the queue.',
    ticket: (n) => `Ticket ${n}`,
    transcript: 'Download transcript',
    newChat: 'Start a new chat',
    uploading: (name) => `Uploading ${name}…`,
    uploadFailed: 'The upload failed. Please try again.',
    tooLarge: (limit) => `This file is too large${limit ? ` (the limit is ${limit})` : ''}.`,
    badType: 'This type of file is not accepted. Allowed: screenshots (PNG, JPEG, GIF, WebP), text logs, .gz, .zip, .tar.gz and PDF.',
    download: 'Download',
    open: 'Open',
    imageOf: (name) => `Image: ${name}`,
    ticketTitle: 'Leave a ticket',
    ticketIntro: 'Describe the problem and we will reply by email.',
    ticketBody: 'Describe the problem',
    ticketSend: 'Send ticket',
    ticketDone: (n) => `Thank you. Your ticket number is ${n}.`,
    ticketDoneNoNumber: 'Thank you. Your ticket was created; we will reply by email.',
    ticketFailed: 'The ticket could not be sent. Please try again.',
    back: 'Back',
    errorGeneric: 'Something went wrong. Please try again.',
    errorAuth: 'Your chat session could not be verified. Please reload the page.',
    chatOpenElsewhere: 'You already have an open chat in another window.',
    systemName: 'chatd',
    dialogLabel: 'Chat with technical support',
    messagesLabel: 'Messages',
    statusLabel: 'Chat status',
  },
  ja: {
    launcher: 'エンジニアとチャット',
    title: 'テクニカルサポート',
    close: 'チャットを最小化',
    newMessages: (n) => `新着メッセージ ${n} 件`,
    intro: '問題の内容を入力してください。エンジニアがこちらで対応します。',
    tagline: 'サポートエンジニアに相談できます',
    name: 'お名前',
    email: 'メールアドレス',
    topic: 'お問い合わせ内容',
    topicPlaceholder: '例: デプロイがエラー 502 で失敗する',
    severity: '影響度',
    severities: {
      1: '緊急: 本番環境が停止している',
      2: '高: 主要な機能が使えない',
      3: '中: 一部または軽微な影響',
      4: '低: 質問',
    },
    severityShort: { 1: '緊急', 2: '高', 3: '中', 4: '低' },
    firstMessage: '詳細 (任意)',
    firstMessagePlaceholder: '試したこと、期待した動作など',
    start: 'チャットを開始',
    starting: '接続中…',
    required: 'この項目を入力してください。',
    badEmail: '有効なメールアドレスを入力してください。',
    position: (n) => (n === 1 ? '次にご案内します' : `待ち順: ${n} 番目`),
    estimate: (s) => `推定待ち時間: ${duration(s, 'ja')}`,
    estimateRange: (range) => `推定待ち時間: ${range}`,
    noEstimate: '対応可能なエンジニアをお待ちください。',
    queueStatus: (position, wait) => `${position}。${wait}`,
    waiting: 'エンジニアを待っています',
    nobodyOnline: '現在オンラインのエンジニアがいません。このままお待ちいただくか、チケットを残していただければメールで回答します。',
    leaveTicket: 'チケットを残す',
    cancelWait: '待ち行列を離れる',
    joined: (name) => `${name} がチャットに参加しました`,
    connectedWith: (name) => `${name} と接続中`,
    composer: 'メッセージ',
    composerPlaceholder: 'メッセージを入力…',
    composerHint: 'Enter で送信、Shift+Enter で改行。コードは ``` で囲みます。',
    send: '送信',
    attach: 'ファイルを添付',
    dropHere: 'ここにファイルをドロップして添付',
    typing: (name) => `${name} が入力中…`,
    you: 'あなた',
    support: 'サポート',
    sending: '送信中…',
    sent: '送信済み',
    read: '既読',
    failed: '未送信: 接続が戻ると再送します',
    reconnecting: '再接続中…',
    reconnected: '再接続しました',
    statusLink: 'ステータスページ',
    offline: '再接続中… オフラインです。接続が戻るとメッセージを送信します。',
    menu: 'その他の操作',
    phone: '電話での対応を依頼',
    screenShare: '画面共有を依頼',
    phoneNumber: '電話番号',
    note: 'メモ (任意)',
    request: '依頼を送信',
    cancel: 'キャンセル',
    escalationSent: '依頼をエンジニアに送信しました。',
    end: 'チャットを終了',
    endConfirm: 'このチャットを終了しますか?',
    endYes: '終了する',
    ended: 'チャットは終了しました。',
    abandoned: '待ち行列を離れました。',
    ticket: (n) => `チケット番号 ${n}`,
    transcript: '会話記録をダウンロード',
    newChat: '新しいチャットを開始',
    uploading: (name) => `${name} をアップロード中…`,
    uploadFailed: 'アップロードに失敗しました。もう一度お試しください。',
    tooLarge: (limit) => `ファイルが大きすぎます${limit ? ` (上限 ${limit})` : ''}。`,
    badType: 'この種類のファイルは添付できません。添付できるもの: スクリーンショット (PNG、JPEG、GIF、WebP)、テキストログ、.gz、.zip、.tar.gz、PDF。',
    download: 'ダウンロード',
    open: '開く',
    imageOf: (name) => `画像: ${name}`,
    ticketTitle: 'チケットを残す',
    ticketIntro: '問題の内容をお書きください。メールで回答します。',
    ticketBody: '問題の内容',
    ticketSend: 'チケットを送信',
    ticketDone: (n) => `ありがとうございます。チケット番号は ${n} です。`,
    ticketDoneNoNumber: 'ありがとうございます。チケットを作成しました。メールで回答します。',
    ticketFailed: 'チケットを送信できませんでした。もう一度お試しください。',
    back: '戻る',
    errorGeneric: '問題が発生しました。もう一度お試しください。',
    errorAuth: 'チャットを確認できませんでした。ページを再読み込みしてください。',
    chatOpenElsewhere: '別のウィンドウで開いているチャットがあります。',
    systemName: 'chatd',
    dialogLabel: 'テクニカルサポートとのチャット',
    messagesLabel: 'メッセージ',
    statusLabel: 'チャットの状態',
    system: (m) => systemJa(m, {
      assigned: (e) => `${e} がチャットに参加しました`,
      transferred: (from, to) => `担当が ${from} から ${to} に代わりました`,
      requeued: (e) => `${e || 'エンジニア'} との接続が切れました。待ち行列の先頭に戻りましたので、次のエンジニアが対応します。`,
      ended: {
        customer_ended: 'チャットを終了しました',
        engineer_ended: 'エンジニアがチャットを終了しました',
        cancelled: '待ち行列を離れました',
        abandoned: 'エンジニアが対応する前に待ち行列を離れました',
      },
      phone: (phone) => `電話での対応を依頼しました (${phone})`,
      screenShare: '画面共有を依頼しました',
    }),
  },
};

/**
 * A system message in Japanese from its `event` (docs/protocol.md#message), with the
 * sentences of one page (`s`); null when the event is not one it knows (the English body
 * is shown then).
 */
export function systemJa(m, s) {
  const e = (m && m.event) || {};
  const name = (ref) => (ref && ref.name) || '';
  let text = null;
  if (e.type === 'assigned') text = s.assigned(name(e.engineer));
  else if (e.type === 'transferred') text = s.transferred(name(e.from) || '—', name(e.to));
  else if (e.type === 'requeued') text = s.requeued(name(e.engineer));
  else if (e.type === 'ended') text = s.ended[e.reason] || null;
  else if (e.type === 'escalation') {
    text = e.kind === 'phone' ? s.phone(e.phone || '') : e.kind === 'screen_share' ? s.screenShare : null;
    if (text && e.note) text += `: ${e.note}`;
  }
  return text;
}

export function pickLanguage(explicit) {
  const wanted = [explicit, ...(navigator.languages || [navigator.language])].filter(Boolean);
  for (const tag of wanted) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (base in STRINGS) return base;
  }
  return 'en';
}

export function duration(seconds, lang) {
  const s = Math.max(0, Math.round(seconds));
  if (lang === 'ja') {
    if (s < 60) return '1 分未満';
    const m = Math.round(s / 60);
    if (m < 60) return `約 ${m} 分`;
    return `約 ${Math.floor(m / 60)} 時間 ${m % 60} 分`;
  }
  if (s < 60) return 'under a minute';
  const m = Math.round(s / 60);
  if (m < 60) return `about ${m} min`;
  return `about ${Math.floor(m / 60)} h ${m % 60} min`;
}

// The predicted wait as a range of whole minutes (the server's low and high bound, which
// hold about 80% of real waits). Rounded outward, the low bound down and the high bound
// up, so that the minutes shown hold at least what the server's seconds do. `spoken` is
// for screen readers: words instead of "3–7 min".
const RANGE_TEXT = {
  en: {
    underMinute: () => 'less than a minute',
    upTo: (n, spoken) => (spoken ? `up to ${n} ${n === 1 ? 'minute' : 'minutes'}` : `up to ${n} min`),
    about: (n, spoken) => (spoken ? `about ${n} ${n === 1 ? 'minute' : 'minutes'}` : `about ${n} min`),
    between: (lo, hi, spoken) => (spoken ? `about ${lo} to ${hi} minutes` : `about ${lo}–${hi} min`),
  },
  ja: {
    underMinute: () => '1分以内',
    upTo: (n) => `最大${n}分`,
    about: (n) => `約${n}分`,
    between: (lo, hi, spoken) => (spoken ? `約${lo}分から${hi}分` : `約${lo}〜${hi}分`),
  },
};

export function waitRange(low, high, lang, spoken = false) {
  const r = RANGE_TEXT[lang] || RANGE_TEXT.en;
  const lowS = Math.max(0, Math.min(low, high));
  const highS = Math.max(0, low, high);
  if (highS < 60) return r.underMinute(spoken);
  const hi = Math.ceil(highS / 60);
  if (lowS < 60) return r.upTo(hi, spoken);
  const lo = Math.floor(lowS / 60);
  return lo === hi ? r.about(hi, spoken) : r.between(lo, hi, spoken);
}

// What a waiting customer is told of their wait, from a session, a queue board line or
// queue:position: the
// range when the server sends one, the single estimate from a server that does not, or
// that nobody can say yet (no engineer available).
export function waitText(s, lang, spoken = false) {
  const t = STRINGS[lang] || STRINGS.en;
  const low = s && s.estimated_wait_low_seconds;
  const high = s && s.estimated_wait_high_seconds;
  if (Number.isFinite(low) && Number.isFinite(high)) return t.estimateRange(waitRange(low, high, lang, spoken));
  const single = s && s.estimated_wait_seconds;
  if (Number.isFinite(single)) return t.estimate(single);
  return t.noEstimate;
}

export function clockTime(iso, lang) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return new Intl.DateTimeFormat(lang === 'ja' ? 'ja-JP' : undefined, {
    hour: '2-digit',
    minute: '2-digit',
  }).format(d);
}
