// The engineers' sign-in form, shared by the console and the monitor page.

import { h, clear, show } from './dom.js';
import { requestJson } from './http.js';
import { DESK_STRINGS, errorText } from './i18n-desk.js';

/**
 * Shows the sign-in form in `root` and signs in with POST /api/login.
 *
 * - `t`: the page's strings (`email`, `password`, `signIn`, `signInFailed`, `locale`,
 *   `errors`: i18n-desk.js); English when not given.
 * - `title`, `intro`: the heading and the line under it.
 * - `message`: shown at once (why the form is back: signed out, not a lead...).
 * - `refuse(engineer)`: a message when this engineer may not use the page, else null.
 * - `onSubmit()`: runs on each submit, first (the console unlocks its sound there).
 * - `onSignedIn(engineer)`: called once an engineer the page accepts has signed in.
 */
export function showSignIn(root, { t = DESK_STRINGS.en, title, intro, message, refuse = () => null, onSubmit = () => {}, onSignedIn }) {
  clear(root);
  const email = h('input', { class: 'input', id: 'login-email', type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { class: 'input', id: 'login-password', type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { class: 'form-error', role: 'alert', hidden: !message, text: message || '' });
  const button = h('button', { class: 'btn btn--primary btn--block', type: 'submit', text: t.signIn });
  const form = h('form', { class: 'login__card', 'aria-labelledby': 'login-title' },
    h('div', { class: 'brand brand--big' }, h('span', { class: 'brand__mark', 'aria-hidden': 'true' }), 'chatd'),
    h('h1', { id: 'login-title', text: title }),
    h('p', { class: 'muted', text: intro }),
    error,
    h('label', { class: 'field' }, h('span', { class: 'field__label', text: t.email }), email),
    h('label', { class: 'field' }, h('span', { class: 'field__label', text: t.password }), password),
    button);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    onSubmit();
    button.disabled = true;
    const res = await requestJson('/api/login', {
      method: 'POST', credentials: 'same-origin',
      body: { email: email.value.trim(), password: password.value },
    });
    button.disabled = false;
    const engineer = res.status === 200 && res.body && res.body.engineer;
    const refusal = engineer ? refuse(engineer) : null;
    if (engineer && !refusal) {
      onSignedIn(engineer);
      return;
    }
    const err = res.body && res.body.error;
    // A refused login in Japanese: wrong credentials, unless the server said to slow down.
    error.textContent = refusal || (t.locale === 'en' || (err && err.code === 'rate_limited')
      ? errorText(t, err, t.signInFailed) : t.signInFailed);
    show(error, true);
    password.select();
  });
  root.append(h('main', { class: 'login' }, form));
  email.focus();
}
