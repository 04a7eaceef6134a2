// The organiser's personal seat links: N numbered student links (no names) to hand out,
// for example through the school's learning platform. A seat is one place; a session a
// surveillant ends on it stays ended (docs/PROTOCOL.md, `seat_links`).

import { $ } from '/common/dom.js';
import { t } from '/common/i18n.js';
import { errorText, setResult } from '/common/staff.js';

const SEATS_MAX = 500;

/** Wire the seat-links form; `signalling()` returns the page's current Signalling. */
export function wireSeatLinks(signalling) {
  $('seats-form').addEventListener('submit', (event) => {
    event.preventDefault();
    makeSeatLinks(signalling());
  });
}

async function makeSeatLinks(sig) {
  const input = $('seats-count');
  const count = Number(input.value);
  if (!Number.isInteger(count) || count < 1 || count > SEATS_MAX) {
    setResult('seats-result', () => t('organise.seats.invalid', { max: SEATS_MAX }), 'error');
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  input.removeAttribute('aria-invalid');
  setResult('seats-result', () => t('organise.add.sending'), 'pending');
  try {
    const reply = await sig.request('seat_links', { count });
    const links = Array.isArray(reply.links) ? reply.links.filter((link) => typeof link === 'string') : [];
    $('seats-list').value = links.join('\n');
    $('seats-box').hidden = false;
    setResult('seats-result', () => t('organise.seats.done', { count: links.length }));
  } catch (error) {
    setResult('seats-result', () => errorText(error), 'error');
  }
}
