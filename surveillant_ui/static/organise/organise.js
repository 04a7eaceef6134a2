// The organiser's page: create an exam from a creator link, hand out its links, and keep
// it running (surveillants, queue, cap, end). Counts only: the organiser never sees media.

import { Signalling, tokenFromFragment } from '/common/signalling.js';
import { keepTokenOnSkipLinks, reloadOnNewLink } from '/common/fragment.js';
import { $, h } from '/common/dom.js';
import { t, currentLanguage, locale, setLanguage, setVariant, wireLanguageButtons } from '/common/i18n.js';
import { errorText, renderConnection, renderResults, renderTopbar, setResult } from '/common/staff.js';
import { wireSeatLinks } from './seats.js';

const DEFAULT_CAP = { written: 8, oral: 1 };
// An oral examiner checks identity while talking; a written exam checks before it starts.
const DEFAULT_ID_CHECK = { written: true, oral: false };
const DEFAULT_SCREEN_REQUIRED = { written: true, oral: false };
const DEFAULT_DURATION_MS = 2 * 60 * 60 * 1000;
const CAP_MIN = 1;
const CAP_MAX = 50;

const state = {
  sig: null,
  welcome: null,
  exam: null,
  overview: null,
  links: [], // { labelKey, vars, url } in the order shown
  surveillantCount: 0,
  ended: false,
  notice: null,
};

// --- helpers --------------------------------------------------------------------

function show(...ids) {
  if (ids.includes('overview')) ids.push('overview-head');
  for (const id of ['loading', 'notice', 'create', 'overview-head', 'links', 'overview']) $(id).hidden = !ids.includes(id);
}

function fragmentOf(link) {
  try {
    return new URL(link, location.href).hash.replace(/^#/, '');
  } catch {
    return '';
  }
}

function formatTime(unixSeconds) {
  if (typeof unixSeconds !== 'number') return '';
  return new Date(unixSeconds * 1000).toLocaleString(locale(), {
    weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit',
  });
}

// The value a datetime-local input wants: local time, minutes precision.
function localInputValue(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`
    + `T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function showNotice(headingKey, text) {
  state.notice = { headingKey, text };
  renderNotice();
  show('notice', ...(state.links.length > 0 ? ['links'] : []));
  $('notice-heading').focus();
}

function renderNotice() {
  if (!state.notice) return;
  $('notice-heading').textContent = t(state.notice.headingKey);
  const text = state.notice.text;
  $('notice-text').textContent = typeof text === 'string' ? t(text) : errorText(text);
}

// --- connection -------------------------------------------------------------------

async function connectWith(token) {
  const previous = state.sig;
  const sig = new Signalling({ token });
  state.sig = sig;
  state.welcome = null;
  previous?.close();
  sig.addEventListener('state', () => {
    if (sig !== state.sig) return;
    renderConnection(state.sig);
    if (sig.state === 'closed' && state.welcome && !state.ended) onClosed(sig.closeCode);
  });
  sig.on('welcome', (welcome) => { if (sig === state.sig) onWelcome(welcome); });
  sig.on('overview', (overview) => { if (sig === state.sig) onOverview(overview); });
  sig.on('exam_ended', () => { if (sig === state.sig) onEnded(); });
  sig.on('error', (error) => {
    if (sig !== state.sig) return;
    if (error.code === 'exam_ended') onEnded();
    else if (['link_invalid', 'link_expired'].includes(error.code)) showNotice('organise.notice.refused_heading', error);
  });
  renderConnection(state.sig);
  try {
    await sig.connect();
  } catch (error) {
    if (sig !== state.sig) return;
    if (error.code === 'exam_ended') onEnded();
    else showNotice('organise.notice.refused_heading', error);
  }
}

function onClosed(code) {
  if (code === 4000) onEnded();
  else if (code === 4003) showNotice('organise.notice.replaced_heading', 'organise.notice.replaced');
  else if (code === 4001) showNotice('organise.notice.refused_heading', 'organise.notice.refused');
  else showNotice('organise.notice.closed_heading', 'organise.notice.closed');
}

function onWelcome(welcome) {
  const first = state.welcome === null;
  state.welcome = welcome;
  if (!first) return; // a reconnect: the next overview push brings us up to date
  if (welcome.role !== 'organiser') {
    state.sig.close();
    showNotice('organise.notice.wrong_role_heading', 'organise.notice.wrong_role');
    return;
  }
  if (!welcome.exam) {
    showCreate();
    return;
  }
  state.exam = welcome.exam;
  if (Number.isInteger(welcome.cap)) state.exam = { ...welcome.exam, cap: welcome.cap };
  setVariant(state.exam?.kind === 'oral' ? 'oral' : null); // an oral exam says "examiner"
  if (state.links.length === 0 && welcome.links) {
    // After a reload: the exam's own links come back from the server (surveillant seats don't).
    state.links = [
      { labelKey: 'organise.links.organiser', hintKey: 'organise.links.organiser_hint', url: welcome.links.organiser },
      { labelKey: 'organise.links.student', hintKey: 'organise.links.student_hint', url: welcome.links.student },
    ];
    renderLinks();
  }
  renderExam();
  show('overview', ...(state.links.length > 0 ? ['links'] : []));
  renderOverview();
  if (state.links.length === 0) $('overview-heading').focus();
}

function onEnded() {
  if (state.ended) return;
  state.ended = true;
  if ($('end-dialog').open) $('end-dialog').close();
  state.sig?.close();
  state.links = [];
  renderLinks();
  showNotice('organise.notice.ended_heading', 'organise.notice.ended');
}

// --- creating an exam ----------------------------------------------------------------

function showCreate() {
  const ends = $('ends-input');
  ends.value = localInputValue(new Date(Date.now() + DEFAULT_DURATION_MS));
  ends.min = localInputValue(new Date());
  syncCapToKind();
  show('create');
  $('exam-title-input').focus();
}

function selectedKind() {
  return document.querySelector('input[name="kind"]:checked')?.value ?? 'written';
}

function syncCapToKind() {
  const kind = selectedKind();
  const cap = $('cap-input');
  cap.value = String(DEFAULT_CAP[kind]);
  // An oral exam is one student at a time: the cap is fixed at 1.
  cap.readOnly = kind === 'oral';
  cap.setAttribute('aria-readonly', String(kind === 'oral'));
  $('id-check-input').checked = DEFAULT_ID_CHECK[kind];
  $('screen-required-input').checked = DEFAULT_SCREEN_REQUIRED[kind];
}

function fieldError(inputId, errorId, key, vars = {}) {
  const input = $(inputId);
  const error = $(errorId);
  if (key) {
    error.textContent = t(key, vars);
    input.setAttribute('aria-invalid', 'true');
  } else {
    error.textContent = '';
    input.removeAttribute('aria-invalid');
  }
  return !key;
}

function readCreateForm() {
  const title = $('exam-title-input').value.trim();
  const kind = selectedKind();
  const cap = Number($('cap-input').value);
  const contact = $('contact-input').value.trim();
  const note = $('note-input').value.trim();
  const endsAt = new Date($('ends-input').value);
  const endsAtSeconds = Math.floor(endsAt.getTime() / 1000);
  const checks = [
    fieldError('exam-title-input', 'exam-title-error', title.length === 0 ? 'organise.create.title_required' : null),
    fieldError('cap-input', 'cap-error',
      Number.isInteger(cap) && cap >= CAP_MIN && cap <= CAP_MAX ? null : 'organise.create.cap_invalid',
      { min: CAP_MIN, max: CAP_MAX }),
    fieldError('ends-input', 'ends-error',
      Number.isNaN(endsAt.getTime()) ? 'organise.create.ends_required'
        : endsAt.getTime() <= Date.now() ? 'organise.create.ends_past' : null),
    fieldError('contact-input', 'contact-error', contact.length === 0 ? 'organise.create.contact_required' : null),
    fieldError('note-input', 'note-error', null),
  ];
  if (checks.includes(false)) {
    const firstInvalid = document.querySelector('#create-form [aria-invalid="true"]');
    firstInvalid?.focus();
    return null;
  }
  const idCheck = $('id-check-input').checked;
  const screenRequired = $('screen-required-input').checked;
  return {
    title, kind, cap: kind === 'oral' ? 1 : cap, note, contact, ends_at: endsAtSeconds, id_check: idCheck,
    screen_required: screenRequired,
  };
}

async function createExam() {
  $('create-error').textContent = '';
  const fields = readCreateForm();
  if (!fields) return;
  const submit = $('create-form').querySelector('button[type="submit"]');
  submit.disabled = true;
  try {
    const created = await state.sig.request('create_exam', fields);
    state.exam = created.exam;
    setVariant(state.exam?.kind === 'oral' ? 'oral' : null); // an oral exam says "examiner"
    state.links = [
      { labelKey: 'organise.links.organiser', hintKey: 'organise.links.organiser_hint', url: created.organiser_link },
      { labelKey: 'organise.links.student', hintKey: 'organise.links.student_hint', url: created.student_link },
    ];
    state.surveillantCount = 0;
    for (const link of created.surveillant_links ?? []) addSurveillantLink(link);
    renderLinks();
    renderExam();
    // Keep the exam across a reload: the page's address becomes the exam's organiser link.
    const fragment = fragmentOf(created.organiser_link);
    if (fragment) {
      history.replaceState(null, '', `#${fragment}`);
      show('links');
      $('links-heading').focus();
      await connectWith(fragment);
    }
  } catch (error) {
    $('create-error').textContent = errorText(error);
  } finally {
    submit.disabled = false;
  }
}

// --- links ----------------------------------------------------------------------

function addSurveillantLink(url) {
  state.surveillantCount += 1;
  state.links.push({
    labelKey: 'organise.links.surveillant',
    vars: { number: state.surveillantCount },
    hintKey: 'organise.links.surveillant_hint',
    url,
  });
}

function renderLinks() {
  const list = $('link-list');
  const rows = state.links.map((link, index) => {
    const inputId = `link-${index}`;
    const hintId = `link-hint-${index}`;
    const input = h('input', {
      id: inputId, type: 'text', class: 'link-input', readonly: true, value: link.url,
      'aria-describedby': hintId, spellcheck: 'false', autocomplete: 'off',
    });
    input.addEventListener('focus', () => input.select());
    const copy = h('button', { type: 'button', class: 'copy', text: t('organise.links.copy') });
    copy.setAttribute('aria-label', t('organise.links.copy_label', { what: t(link.labelKey, link.vars ?? {}) }));
    copy.addEventListener('click', () => copyLink(link, input));
    return h('div', { class: 'link-row' },
      h('dt', {}, h('label', { for: inputId, text: t(link.labelKey, link.vars ?? {}) })),
      h('dd', {},
        h('div', { class: 'link-field' }, input, copy),
        h('p', { id: hintId, class: 'hint', text: t(link.hintKey) })));
  });
  list.replaceChildren(...rows);
}

async function copyLink(link, input) {
  const what = () => t(link.labelKey, link.vars ?? {});
  if (navigator.clipboard?.writeText) {
    try {
      await navigator.clipboard.writeText(link.url);
      setResult('copy-status', () => t('organise.links.copied', { what: what() }));
      return;
    } catch {
      // Fall through: select the text so the organiser can copy it by hand.
    }
  }
  input.focus();
  input.select();
  setResult('copy-status', () => t('organise.links.copy_manual'), 'pending');
}

// --- the overview ------------------------------------------------------------------------

function renderExam() {
  const exam = state.exam;
  if (!exam) {
    $('exam-title').textContent = '';
    return;
  }
  const kind = t(exam.kind === 'oral' ? 'organise.exam.oral' : 'organise.exam.written');
  $('exam-title').textContent = `${exam.title} · ${kind}`;
  const meta = [t('organise.exam.ends', { time: formatTime(exam.ends_at) })];
  if (exam.contact) meta.push(t('organise.exam.contact', { contact: exam.contact }));
  if (exam.id_check) meta.push(t('organise.exam.id_check'));
  $('exam-meta').textContent = meta.join(' · ');
  // An oral exam keeps one student per examiner.
  $('cap-form').querySelector('button').disabled = exam.kind === 'oral';
  $('cap-change').disabled = exam.kind === 'oral';
}

function onOverview(overview) {
  state.overview = overview;
  if (Number.isInteger(overview.cap) && state.exam) state.exam = { ...state.exam, cap: overview.cap };
  renderOverview();
}

function renderOverview() {
  const overview = state.overview ?? { surveillants: [], queue: [], cap: state.exam?.cap };
  const surveillants = Array.isArray(overview.surveillants) ? overview.surveillants : [];
  const queue = Array.isArray(overview.queue) ? overview.queue.length : Number(overview.queue) || 0;
  const cap = overview.cap ?? state.exam?.cap;

  $('queue-length').textContent = queue === 0 ? t('organise.queue.empty') : t('organise.queue.count', { count: queue });
  $('queue-length').dataset.count = String(queue);

  const prompt = $('queue-prompt');
  prompt.hidden = queue === 0;
  if (queue > 0) {
    const anyRoom = surveillants.some((s) => s.connected && s.students < (s.cap ?? cap));
    $('queue-prompt-text').textContent = surveillants.length === 0
      ? t('organise.prompt.no_surveillant', { count: queue })
      : anyRoom ? t('organise.prompt.waiting', { count: queue }) : t('organise.prompt.full', { count: queue });
  }

  const capInput = $('cap-change');
  if (document.activeElement !== capInput && Number.isInteger(cap)) capInput.value = String(cap);
  capInput.min = String(Math.max(CAP_MIN, ...surveillants.map((s) => Number(s.students) || 0)));

  const idCheck = state.exam?.id_check === true;
  $('unchecked-column').hidden = !idCheck;
  $('surveillants-empty').hidden = surveillants.length > 0;
  $('surveillants-table').hidden = surveillants.length === 0;
  $('surveillants-body').replaceChildren(...surveillants.map((s) => {
    const students = Number(s.students) || 0;
    const sCap = s.cap ?? cap;
    const full = students >= sCap;
    return h('tr', { class: s.connected ? '' : 'is-disconnected' },
      h('th', { scope: 'row', text: s.name || t('organise.surveillants.unnamed') }),
      h('td', {},
        h('span', { class: 'count', text: t('organise.surveillants.of_cap', { students, cap: sCap }) }),
        full ? h('span', { class: 'badge is-warn', text: t('organise.surveillants.full') }) : null),
      h('td', { text: String(Number(s.alerts) || 0) }),
      idCheck ? h('td', { class: 'unchecked', text: String(Number(s.unchecked) || 0) }) : null,
      h('td', {}, h('span', { class: `badge ${s.connected ? 'is-ok' : 'is-alert'}` },
        h('span', { 'aria-hidden': 'true', text: s.connected ? '● ' : '✕ ' }),
        t(s.connected ? 'organise.surveillants.connected' : 'organise.surveillants.disconnected'))));
  }));
}

async function addSurveillant(button) {
  button.disabled = true;
  setResult('add-result', () => t('organise.add.sending'), 'pending');
  try {
    const reply = await state.sig.request('add_surveillant');
    addSurveillantLink(reply.link);
    renderLinks();
    $('links').hidden = false;
    const number = state.surveillantCount;
    setResult('add-result', () => t('organise.add.done', { number }));
    const inputs = $('link-list').querySelectorAll('.link-input');
    inputs[inputs.length - 1]?.focus();
  } catch (error) {
    setResult('add-result', () => errorText(error), 'error');
  } finally {
    button.disabled = false;
  }
}

async function changeCap() {
  const input = $('cap-change');
  const cap = Number(input.value);
  const floor = Number(input.min) || CAP_MIN;
  if (!Number.isInteger(cap) || cap < floor || cap > CAP_MAX) {
    setResult('cap-result', () => t('organise.cap.invalid', { min: floor, max: CAP_MAX }), 'error');
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  input.removeAttribute('aria-invalid');
  setResult('cap-result', () => t('organise.cap.sending'), 'pending');
  try {
    await state.sig.request('set_cap', { cap });
    setResult('cap-result', () => t('organise.cap.done', { cap }));
  } catch (error) {
    setResult('cap-result', () => errorText(error), 'error');
  }
}

const END_WARNING_SECONDS = 60;

// The surveillants are warned first, so their incident notes are not lost by surprise.
async function endExamLater() {
  const later = $('end-later');
  later.disabled = true;
  $('end-error').textContent = '';
  try {
    await state.sig.request('end_exam', { after_seconds: END_WARNING_SECONDS });
    const at = new Date(Date.now() + END_WARNING_SECONDS * 1000);
    $('end-dialog').close();
    setResult('add-result', () => t('organise.end.scheduled', {
      time: at.toLocaleTimeString(locale(), { hour: '2-digit', minute: '2-digit', second: '2-digit' }),
    }));
  } catch (error) {
    $('end-error').textContent = errorText(error);
  } finally {
    later.disabled = false;
  }
}

async function endExam() {
  const confirm = $('end-confirm');
  confirm.disabled = true;
  $('end-error').textContent = '';
  try {
    // The server answers by ending the exam: `exam_ended` and close code 4000.
    const ended = new Promise((resolve) => {
      const off = state.sig.on('exam_ended', () => { off(); resolve(); });
      state.sig.addEventListener('state', () => { if (state.sig.state === 'closed') resolve(); });
    });
    if (!state.sig.send('end_exam')) throw { code: 'disconnected' };
    await ended;
    onEnded();
  } catch (error) {
    $('end-error').textContent = errorText(error);
  } finally {
    confirm.disabled = false;
  }
}

// --- wiring ------------------------------------------------------------------------

// After every switch of language (and once at the start): what the catalogue does not fill in.
function renderLanguage() {
  renderConnection(state.sig);
  renderNotice();
  renderExam();
  renderLinks();
  if (!$('overview').hidden) renderOverview();
  renderResults();
}

function wire() {
  wireLanguageButtons(renderLanguage);

  for (const radio of document.querySelectorAll('input[name="kind"]')) {
    radio.addEventListener('change', syncCapToKind);
  }
  $('create-form').addEventListener('submit', (event) => {
    event.preventDefault();
    createExam();
  });
  for (const button of document.querySelectorAll('[data-action="add-surveillant"]')) {
    button.addEventListener('click', () => addSurveillant(button));
  }
  $('cap-form').addEventListener('submit', (event) => {
    event.preventDefault();
    changeCap();
  });
  wireSeatLinks(() => state.sig);
  $('end-exam').addEventListener('click', () => {
    $('end-error').textContent = '';
    $('end-dialog').showModal();
    $('end-cancel').focus();
  });
  $('end-cancel').addEventListener('click', () => $('end-dialog').close());
  $('end-later').addEventListener('click', endExamLater);
  $('end-dialog').addEventListener('close', () => { if (!state.ended) $('end-exam').focus(); });
  $('end-form').addEventListener('submit', (event) => {
    event.preventDefault();
    endExam();
  });
  window.addEventListener('pagehide', () => state.sig?.close());
  // Restored from the back-forward cache, the page's connection is gone: start afresh.
  window.addEventListener('pageshow', (event) => { if (event.persisted) location.reload(); });
  keepTokenOnSkipLinks();
  reloadOnNewLink();
}

function main() {
  renderTopbar('organise.role');
  wire();
  setLanguage(currentLanguage());
  const token = tokenFromFragment();
  if (!token) {
    showNotice('organise.notice.no_link_heading', 'organise.notice.no_link');
    return;
  }
  show('loading');
  connectWith(token);
}

main();
