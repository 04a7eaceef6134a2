// What the staff pages (the surveillant's desk, the organiser's page) share: the top bar,
// a server error in words, the result shown next to an action, and the connection status.

import { $, h } from './dom.js';
import { LANGUAGES, localize, t } from './i18n.js';

/** Fills <header class="topbar">: brand, the page's role, #exam-title, #connection and the language buttons. */
export function renderTopbar(roleKey) {
  document.querySelector('header.topbar').replaceChildren(
    h('div', { class: 'topbar-title' },
      h('span', { class: 'brand', text: 'Invigil' }),
      h('span', { class: 'role', 'data-i18n': roleKey }),
      h('span', { id: 'exam-title', class: 'exam-title' })),
    h('p', { id: 'connection', class: 'connection', role: 'status', 'data-state': 'idle' }),
    h('div', { class: 'lang-switch', role: 'group', 'data-i18n-aria-label': 'common.language' },
      ...LANGUAGES.map((lang) => h('button', {
        type: 'button', 'data-lang': lang, lang, 'aria-pressed': 'false', text: lang.toUpperCase(),
      }))));
}

/** The words for a server `error` (its own NL/EN message, else the catalogue's text for its code). */
export function errorText(error) {
  if (error && typeof error.message === 'object' && error.message !== null) {
    const text = localize(error.message);
    if (text) return text;
  }
  if (error && typeof error.code === 'string') {
    const key = `common.error_${error.code}`;
    const text = t(key);
    if (text !== key) return text;
  }
  return t('common.error_unknown');
}

// Results say what just happened; `say` is a function so a language switch can say it again.
const results = new Map();

/** Shows `say` (text, or a function giving it) in the result element `id`, as ok, pending or error. */
export function setResult(id, say, kind = 'ok') {
  const node = $(id);
  if (!node) return;
  results.set(id, say);
  node.textContent = typeof say === 'function' ? say() : say;
  node.dataset.kind = kind;
}

/** Says every result again, in the current language. */
export function renderResults() {
  for (const [id, say] of results) {
    if (typeof say === 'function' && $(id)) $(id).textContent = say();
  }
}

/** #connection in the top bar follows the signalling state (nothing before the first connect). */
export function renderConnection(sig) {
  const node = $('connection');
  const sigState = sig?.state ?? 'idle';
  node.dataset.state = sigState;
  node.textContent = sigState === 'idle' ? '' : t(`common.state_${sigState}`);
}
