// The surveillant's desk: watch the students assigned to you live, and step in.
// Nothing is kept: no storage API, no recorder; media only lives in <video>/<audio>.

import { Signalling, tokenFromFragment } from '/common/signalling.js';
import { checkLink } from '/common/linkcheck.js';
import { keepTokenOnSkipLinks, reloadOnNewLink } from '/common/fragment.js';
import { $, h } from '/common/dom.js';
import { t, currentLanguage, setLanguage, setVariant, wireLanguageButtons } from '/common/i18n.js';
import { examFromToken } from '/common/link.js';
import { errorText, renderConnection, renderResults, renderTopbar, setResult } from '/common/staff.js';
import { addAlert, clearAlerts, renderAlerts, renderSoundToggle, startAlertSound, wireAlerts } from './alerts.js';
import { glyph, icon, timeLabel } from './widgets.js';
import { looked, startIdCheck, wireIdCheck } from './idcheck.js';
import { assessQuality } from './quality.js';
import { applyListening, forgetListening, listeningControls, wireListening } from './listening.js';
import { clearEnding, onExamEnding, renderEnding } from './ending.js';
import { dropIncidents, renderIncidents, unsavedIncidents, wireIncidents } from './incidents.js';
import { renderBackground } from './background.js';

const ICE_GATHERING_TIMEOUT_MS = 5000;
const OFFER_TIMEOUT_MS = 20000;
const LOCAL_STATS_INTERVAL_MS = 500;
const NAME_MAX = 60;
const MESSAGE_MAX = 500;

const state = {
  token: null,
  name: '',
  sig: null,
  welcome: null,
  exam: null,
  oral: false,
  ended: false,
  roster: { slots: 0, students: [], queue: 0 },
  names: new Map(), // student id -> last known display name (for alerts about students who left)
  stats: new Map(), // student id -> { quality, counts, loss, serverAudio }
  tiles: new Map(), // student id -> tile
  focusedId: null, // the student in the large view (or the current student of an oral exam)
  talk: null, // { studentId, mode: 'hold' | 'toggle' | 'oral' }
  oralMicOn: true,
  endTarget: null, // { studentId, next: boolean }
};

const media = {
  pc: null,
  slots: 0,
  generation: 0,
  slotStreams: [], // per slot: { webcam, screen, microphone } MediaStreams
  localAudio: null, // talk-back track; enabled only while talking
  localVideo: null, // examiner camera (oral exam only)
  localLevels: new Map(), // slot -> audio level measured on this side
  localJitterMs: new Map(), // slot -> interarrival jitter of its microphone measured on this side
  statsTimer: null,
  status: 'idle',
};

// --- small helpers -------------------------------------------------------------

function protectedVideo(className) {
  const video = h('video', {
    class: className,
    autoplay: true,
    playsinline: true,
    muted: true,
    disablepictureinpicture: true,
    controlslist: 'nodownload nofullscreen noremoteplayback',
    draggable: 'false',
  });
  hardenVideo(video);
  return video;
}

function hardenVideo(video) {
  video.muted = true;
  video.controls = false;
  video.disablePictureInPicture = true;
}

function setStream(element, stream) {
  if (element.srcObject === (stream ?? null)) return;
  element.srcObject = stream ?? null;
  if (stream) element.play().catch(() => {});
}

function studentById(id) {
  return state.roster.students.find((student) => student.id === id) ?? null;
}

function nameOf(id) {
  return studentById(id)?.name ?? state.names.get(id) ?? t('desk.student.unknown');
}

let toastTimer = null;
function toast(text) {
  const node = $('toast');
  node.textContent = text;
  node.classList.add('visible');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => node.classList.remove('visible'), 5000);
}

function show(sectionId) {
  for (const id of ['start', 'notice', 'desk', 'oral']) $(id).hidden = id !== sectionId;
}

// --- status of a student, never by colour alone ---------------------------------

function statusItems(student, { withHand = true } = {}) {
  const status = student.status ?? {};
  const stats = state.stats.get(student.id);
  const items = [];
  if (student.connected === false) items.push({ kind: 'alert', icon: '⟳', text: t('desk.status.reconnecting') });
  else if (student.media === false) items.push({ kind: 'alert', icon: '○', text: t('desk.status.media_not_connected') });
  else items.push({ kind: 'ok', icon: '●', text: t('desk.status.connected') });
  if (student.hand && withHand) items.push({ kind: 'alert', icon: 'hand', text: t('desk.status.hand') });
  if (status.page_hidden) items.push({ kind: 'alert', icon: 'window', text: t('desk.status.page_hidden') });
  for (const device of ['camera', 'microphone', 'screen']) {
    const on = status[device] !== false;
    items.push({
      kind: on ? 'ok' : 'warn',
      icon: on ? '✓' : '✕',
      text: t(`desk.status.${device}_${on ? 'on' : 'off'}`),
    });
  }
  if (student.connected !== false && student.media !== false && stats?.quality) {
    const quality = stats.quality;
    items.push({
      kind: quality === 'good' ? 'ok' : quality === 'fair' ? 'warn' : 'alert',
      icon: { good: '▮▮▮', fair: '▮▮▯', poor: '▮▯▯', none: '▯▯▯' }[quality],
      text: t(`desk.quality.${quality}`),
    });
  }
  return items;
}

function renderStatusList(list, student, options) {
  list.replaceChildren(...statusItems(student, options).map((item) => h('li', { class: `status is-${item.kind}` },
    glyph(item.icon),
    h('span', { class: 'status-text', text: item.text }))));
}

function audioLevelOf(student) {
  // What arrives here and what the server measured: either one hearing sound is enough.
  return Math.max(media.localLevels.get(student.slot) ?? 0, state.stats.get(student.id)?.serverAudio ?? 0);
}

// Server stats may carry either a linear level (0..1) or an RFC 6464 level (0 loud .. 127 silent).
function normaliseAudioLevel(value) {
  if (typeof value !== 'number' || Number.isNaN(value)) return null;
  if (value <= 1) return Math.max(0, value);
  return Math.max(0, Math.min(1, 1 - value / 127));
}

// --- tiles ----------------------------------------------------------------------

function createTile(student) {
  const nameId = `tile-name-${student.id}`;
  const levelId = `tile-level-${student.id}`;
  const webcam = protectedVideo('tile-webcam-video');
  const screen = protectedVideo('tile-screen-video');
  const webcamGap = h('p', { class: 'no-picture', hidden: true });
  const screenGap = h('p', { class: 'no-picture', hidden: true });
  const webcamCaption = h('figcaption', { class: 'caption' });
  const screenCaption = h('figcaption', { class: 'caption' });
  const name = h('h2', { class: 'tile-name', id: nameId });
  const hand = h('p', { class: 'hand-badge', hidden: true });
  const idBadge = h('p', { class: 'id-badge' });
  const admit = h('button', { type: 'button', class: 'admit primary' });
  const admission = h('div', { class: 'tile-admission', hidden: true }, idBadge, admit);
  const statusList = h('ul', { class: 'status-list' });
  const levelLabel = h('span', { class: 'level-label', id: levelId });
  const meter = h('meter', {
    class: 'level', min: '0', max: '1', low: '0.05', high: '0.6', optimum: '0.3', value: '0',
    'aria-labelledby': levelId,
  });
  const open = h('button', { type: 'button', class: 'open' });
  const audio = h('audio', { autoplay: true, muted: true });
  const { mute, volume } = listeningControls(student.id);
  const root = h('li', { class: 'tile', 'data-student': student.id },
    h('article', { 'aria-labelledby': nameId },
      h('div', { class: 'tile-media' },
        h('figure', { class: 'tile-webcam' }, webcam, webcamGap, webcamCaption),
        h('figure', { class: 'tile-screen' }, screen, screenGap, screenCaption)),
      h('div', { class: 'tile-body' },
        h('div', { class: 'tile-head' }, name, hand),
        admission,
        statusList,
        h('div', { class: 'tile-level' }, levelLabel, meter, mute, volume),
        open),
      audio));
  // A click on the picture opens the large view too; the button is the keyboard way in.
  for (const figure of root.querySelectorAll('figure')) {
    figure.addEventListener('click', () => openFocus(student.id));
  }
  open.addEventListener('click', () => openFocus(student.id));
  // The tile only leads to the ID check; Admit itself is in the student view, after looking.
  admit.addEventListener('click', () => openFocus(student.id));
  const tile = {
    id: student.id, root, webcam, screen, webcamGap, screenGap, webcamCaption, screenCaption,
    name, hand, admission, idBadge, admit, statusList, levelLabel, meter, open, audio, mute, volume, slot: null,
  };
  audio.muted = true; // nothing plays before the listening rules say so
  return tile;
}

function updateTile(tile, student) {
  tile.root.classList.toggle('hand-raised', Boolean(student.hand));
  tile.root.classList.toggle('disconnected', student.connected === false || student.media === false);
  tile.name.textContent = student.name;
  tile.hand.hidden = !student.hand;
  tile.hand.replaceChildren(icon('hand'), ` ${t('desk.status.hand')}`);
  const unchecked = student.admitted === false;
  tile.root.classList.toggle('unchecked', unchecked);
  // The Admit button goes once admitted: keep the keyboard user on this tile.
  if (!unchecked && document.activeElement === tile.admit) tile.open.focus();
  tile.admission.hidden = !unchecked;
  tile.idBadge.replaceChildren(icon('idCard'), ` ${t('desk.admit.not_checked')}`);
  tile.admit.textContent = t('desk.admit.check_button');
  tile.admit.setAttribute('aria-label', t('desk.admit.check_button_label', { name: student.name }));
  tile.webcamCaption.textContent = t('desk.media.webcam');
  tile.screenCaption.textContent = t('desk.media.screen');
  tile.levelLabel.textContent = t('desk.status.sound');
  tile.open.textContent = t('desk.tile.open');
  tile.open.setAttribute('aria-label', t('desk.tile.open_label', { name: student.name }));
  renderStatusList(tile.statusList, student, { withHand: false });
  updateLevel(tile, student);
  attachTile(tile, student);
  updateGaps(tile);
  renderBackground(tile.webcam, student);
}

function updateLevel(tile, student) {
  const level = audioLevelOf(student);
  tile.meter.value = level;
  const speaking = level > 0.05;
  const loudness = t(speaking ? 'desk.status.sound_active' : 'desk.status.sound_quiet');
  tile.meter.textContent = loudness;
  tile.levelLabel.textContent = `${t('desk.status.sound')}: ${loudness}`;
  tile.root.classList.toggle('speaking', speaking);
}

function attachTile(tile, student) {
  const streams = media.slotStreams[student.slot];
  tile.slot = student.slot;
  setStream(tile.webcam, streams?.webcam);
  setStream(tile.screen, streams?.screen);
  if (!state.oral) setStream(tile.audio, streams?.microphone);
}

function trackLive(stream) {
  const track = stream?.getTracks()[0];
  return Boolean(track && track.readyState === 'live' && !track.muted);
}

function updateGaps(tile) {
  const streams = media.slotStreams[tile.slot];
  const student = studentById(tile.id);
  const status = student?.status ?? {};
  const gap = (node, stream, on, offKey) => {
    const live = trackLive(stream);
    node.hidden = live && on;
    node.textContent = on ? t('desk.media.no_picture') : t(offKey);
  };
  gap(tile.webcamGap, streams?.webcam, status.camera !== false, 'desk.status.camera_off');
  gap(tile.screenGap, streams?.screen, status.screen !== false, 'desk.status.screen_off');
}

function renderRoster() {
  const students = [...state.roster.students].sort((a, b) => a.slot - b.slot);
  const grid = $('grid');
  const seen = new Set();
  for (const student of students) state.names.set(student.id, student.name);
  // An oral exam has no grid: its one student is shown on the stage.
  for (const [index, student] of (state.oral ? [] : students).entries()) {
    seen.add(student.id);
    let tile = state.tiles.get(student.id);
    if (!tile) {
      tile = createTile(student);
      state.tiles.set(student.id, tile);
    }
    updateTile(tile, student);
    // Keep slot order, moving nodes only when needed so their videos keep playing.
    if (grid.children[index] !== tile.root) grid.insertBefore(tile.root, grid.children[index] ?? null);
  }
  for (const [id, tile] of state.tiles) {
    if (seen.has(id)) continue;
    setStream(tile.webcam, null);
    setStream(tile.screen, null);
    setStream(tile.audio, null);
    tile.root.remove();
    state.tiles.delete(id);
    forgetListening(id);
  }
  renderListening();
  $('grid-empty').hidden = students.length > 0;
  const slots = state.roster.slots || media.slots;
  $('desk-count').textContent = t('desk.grid.count', { count: students.length, slots });
  renderQueue();
  if (state.focusedId) {
    const focused = studentById(state.focusedId);
    if (focused) renderStudentView(focused);
    else if (!state.oral) closeFocus({ notify: true, reason: t('desk.focus.student_left') });
  }
  renderHandover();
  if (state.oral) renderOral();
}

function renderQueue() {
  const queue = Number(state.roster.queue) || 0;
  const text = queue > 0 ? t('desk.queue.waiting', { count: queue }) : t('desk.queue.none');
  $('queue-count').textContent = text;
  $('oral-queue').textContent = text;
}

// --- the large view of one student, with the interventions ------------------------

function openFocus(studentId) {
  const student = studentById(studentId);
  if (!student || state.oral) return;
  const dialog = $('focus-dialog');
  if (state.focusedId && state.focusedId !== studentId) stopTalk();
  state.focusedId = studentId;
  resetInterventions();
  startIdCheck(student);
  renderStudentView(student);
  renderListening();
  if (!dialog.open) dialog.showModal();
  $('focus-close').focus();
  state.sig?.request('focus', { student_id: studentId }).catch((error) => toast(errorText(error)));
}

function renderListening() {
  applyListening(state.tiles.values(), state.focusedId);
}

function closeFocus({ notify = true, reason = null } = {}) {
  const dialog = $('focus-dialog');
  const studentId = state.focusedId;
  const wasOpen = dialog.open;
  stopTalk();
  state.focusedId = null;
  setStream($('focus-webcam'), null);
  setStream($('focus-screen'), null);
  if (wasOpen) dialog.close();
  renderListening();
  if (notify && studentId) state.sig?.request('focus', { student_id: null }).catch(() => {});
  if (reason) toast(reason);
  // Back to where the reader came from; if that tile is gone, to the top of the grid.
  const tile = studentId && state.tiles.get(studentId);
  if (tile) tile.open.focus();
  else if (wasOpen) $('desk-heading').focus();
}

function resetInterventions() {
  for (const id of ['admit-result', 'message-result', 'talk-result', 'handover-result', 'incident-result', 'end-result']) {
    setResult(id, '');
  }
  $('message-text').value = '';
  $('incident-note').value = '';
  $('message-log').replaceChildren();
}

function renderStudentView(student) {
  $('focus-name').textContent = student.name;
  renderStatusList($('focus-status'), student);
  renderAdmission(student);
  const streams = media.slotStreams[student.slot];
  setStream($('focus-webcam'), streams?.webcam);
  setStream($('focus-screen'), streams?.screen);
  renderBackground($('focus-webcam'), student);
  if (state.oral) setStream($('oral-audio'), streams?.microphone);
}

// --- admitting a student after a live ID check (exams with `id_check` only) ---------

function renderAdmission(student) {
  const section = $('admit-section');
  section.hidden = state.exam?.id_check !== true;
  if (section.hidden) return;
  const unchecked = student.admitted === false;
  const status = $('admit-state');
  status.dataset.state = unchecked ? 'unchecked' : 'checked';
  status.textContent = t(unchecked ? 'desk.admit.not_checked' : 'desk.admit.checked');
  if (!unchecked && $('admit-actions').contains(document.activeElement)) status.focus();
  $('admit-hint').hidden = !unchecked;
  $('admit-actions').hidden = !unchecked;
  $('admit-button').setAttribute('aria-label', t('desk.admit.button_label', { name: student.name }));
  $('admit-button').disabled = !looked();
}

async function admitStudent(studentId) {
  const name = nameOf(studentId);
  if (state.focusedId === studentId) setResult('admit-result', () => t('desk.admit.sending'), 'pending');
  try {
    await state.sig.request('admit', { student_id: studentId });
    const done = () => t('desk.admit.done', { name });
    if (state.focusedId === studentId) setResult('admit-result', done);
    toast(done());
  } catch (error) {
    if (state.focusedId === studentId) setResult('admit-result', () => errorText(error), 'error');
    else toast(errorText(error));
  }
}

function renderHandover() {
  const section = $('handover-section');
  const others = state.roster.others;
  section.hidden = !Array.isArray(others) || state.oral;
  if (section.hidden) return;
  const select = $('handover-to');
  const previous = select.value;
  // `room` is whether they have a free place, or how many they have.
  const options = others.map((other) => {
    const free = Number(other.room) > 0;
    let text = t('desk.handover.option_full', { name: other.name });
    if (typeof other.room === 'number' && free) {
      text = t('desk.handover.option_count', { name: other.name, room: other.room });
    }
    else if (free) text = t('desk.handover.option', { name: other.name });
    return h('option', { value: other.id, disabled: !free, text });
  });
  if (options.length === 0) options.push(h('option', { value: '', text: t('desk.handover.nobody') }));
  select.replaceChildren(...options);
  if (others.some((other) => other.id === previous)) select.value = previous;
  else select.value = others.find((other) => Number(other.room) > 0)?.id ?? select.options[0]?.value ?? '';
  const anyRoom = others.some((other) => Number(other.room) > 0);
  select.disabled = others.length === 0;
  $('handover-form').querySelector('button').disabled = !anyRoom;
}

async function sendMessage(text) {
  const studentId = state.focusedId;
  const trimmed = text.trim();
  if (!studentId) return;
  if (trimmed.length === 0 || trimmed.length > MESSAGE_MAX) {
    setResult('message-result', () => t('desk.message.invalid', { max: MESSAGE_MAX }), 'error');
    $('message-text').focus();
    return;
  }
  setResult('message-result', () => t('desk.message.sending'), 'pending');
  try {
    await state.sig.request('message', { student_id: studentId, text: trimmed });
    if (state.focusedId !== studentId) return;
    setResult('message-result', () => t('desk.message.delivered', { name: nameOf(studentId) }));
    $('message-log').prepend(h('li', {},
      h('span', { class: 'log-time', text: timeLabel(new Date()) }), ' ', trimmed));
    if ($('message-text').value.trim() === trimmed) $('message-text').value = '';
  } catch (error) {
    setResult('message-result', () => errorText(error), 'error');
  }
}

// --- talking -------------------------------------------------------------------

function startTalk(mode) {
  const studentId = state.focusedId;
  if (!studentId || state.talk) return;
  if (!media.localAudio || media.localAudio.readyState !== 'live') {
    setResult('talk-result', () => t('desk.talk.no_microphone'), 'error');
    return;
  }
  state.talk = { studentId, mode };
  media.localAudio.enabled = true;
  renderTalk();
  setResult('talk-result', () => t('desk.talk.connecting'), 'pending');
  state.sig.request('talk', { student_id: studentId, on: true })
    .then(() => {
      if (state.talk?.studentId === studentId) {
        setResult('talk-result', () => t('desk.talk.on', { name: nameOf(studentId) }));
      }
    })
    .catch((error) => {
      if (state.talk?.studentId === studentId) stopTalk({ notify: false });
      setResult('talk-result', () => errorText(error), 'error');
    });
}

function stopTalk({ notify = true } = {}) {
  const talk = state.talk;
  if (!talk) return;
  state.talk = null;
  if (media.localAudio) media.localAudio.enabled = false;
  renderTalk();
  if (!notify) return;
  state.sig?.request('talk', { student_id: talk.studentId, on: false })
    .then(() => {
      if (state.focusedId === talk.studentId && !state.oral) setResult('talk-result', () => t('desk.talk.off'));
    })
    .catch(() => {});
}

function renderTalk() {
  const talking = Boolean(state.talk);
  const hold = $('talk-hold');
  hold.classList.toggle('talking', talking && state.talk.mode === 'hold');
  hold.setAttribute('aria-pressed', String(talking && state.talk.mode === 'hold'));
  hold.textContent = talking && state.talk.mode === 'hold' ? t('desk.talk.holding') : t('desk.talk.hold');
  const toggle = $('talk-toggle');
  toggle.setAttribute('aria-pressed', String(talking && state.talk.mode === 'toggle'));
  toggle.classList.toggle('talking', talking && state.talk.mode === 'toggle');
  hold.disabled = talking && state.talk.mode === 'toggle';
  const mic = $('oral-mic');
  mic.setAttribute('aria-pressed', String(state.oralMicOn));
  const micText = t(state.oralMicOn ? 'desk.oral.mic_on' : 'desk.oral.mic_off');
  mic.replaceChildren(icon(state.oralMicOn ? 'mic' : 'micOff'), ` ${micText}`);
}

function wireTalk() {
  const hold = $('talk-hold');
  hold.addEventListener('pointerdown', (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    hold.setPointerCapture?.(event.pointerId);
    startTalk('hold');
  });
  const release = () => { if (state.talk?.mode === 'hold') stopTalk(); };
  hold.addEventListener('pointerup', release);
  hold.addEventListener('pointercancel', release);
  hold.addEventListener('lostpointercapture', release);
  hold.addEventListener('blur', release);
  hold.addEventListener('keydown', (event) => {
    if (event.key !== ' ' && event.key !== 'Enter') return;
    event.preventDefault();
    if (!event.repeat) startTalk('hold');
  });
  hold.addEventListener('keyup', (event) => {
    if (event.key !== ' ' && event.key !== 'Enter') return;
    event.preventDefault();
    release();
  });
  hold.addEventListener('click', (event) => event.preventDefault());
  hold.addEventListener('contextmenu', (event) => event.preventDefault());
  $('talk-toggle').addEventListener('click', () => {
    if (state.talk?.mode === 'toggle') stopTalk();
    else {
      stopTalk();
      startTalk('toggle');
    }
  });
}

// --- ending a session (and "next student") --------------------------------------

function openEndDialog(studentId, { next = false } = {}) {
  const student = studentById(studentId);
  if (!student) return;
  state.endTarget = { studentId, next };
  $('end-dialog-heading').textContent = next
    ? t('desk.oral.next_heading') : t('desk.end.confirm_heading', { name: student.name });
  $('end-dialog-text').textContent = next
    ? t('desk.oral.next_text', { name: student.name }) : t('desk.end.confirm_text', { name: student.name });
  $('end-confirm').textContent = next ? t('desk.oral.next_confirm') : t('desk.end.confirm');
  $('end-reason').value = next ? t('desk.oral.next_reason') : '';
  $('end-reason-error').textContent = '';
  $('end-dialog').showModal();
  $('end-reason').focus();
}

async function confirmEnd() {
  const target = state.endTarget;
  const reason = $('end-reason').value.trim();
  if (!target) return;
  if (reason.length === 0) {
    $('end-reason-error').textContent = t('desk.end.reason_required');
    $('end-reason').focus();
    return;
  }
  $('end-reason-error').textContent = '';
  $('end-confirm').disabled = true;
  const name = nameOf(target.studentId);
  try {
    if (state.talk?.studentId === target.studentId) stopTalk();
    await state.sig.request('end_session', { student_id: target.studentId, reason });
    state.endTarget = null;
    $('end-dialog').close();
    const done = () => (target.next ? t('desk.oral.next_done', { name }) : t('desk.end.done', { name }));
    if (state.focusedId === target.studentId && !state.oral) closeFocus();
    toast(done());
    setResult(state.oral ? 'oral-result' : 'end-result', done);
  } catch (error) {
    $('end-reason-error').textContent = errorText(error);
  } finally {
    $('end-confirm').disabled = false;
  }
}

// --- the oral exam ---------------------------------------------------------------

function renderOral() {
  const current = [...state.roster.students].sort((a, b) => a.slot - b.slot)[0] ?? null;
  const view = $('student-view');
  $('oral-empty').hidden = Boolean(current);
  view.hidden = !current;
  $('oral-next').disabled = !current;
  const previousId = state.focusedId;
  if (!current) {
    if (previousId) {
      stopTalk({ notify: false });
      state.focusedId = null;
      resetInterventions();
    }
    setStream($('oral-audio'), null);
    return;
  }
  if (current.id !== previousId) {
    stopTalk({ notify: Boolean(previousId && studentById(previousId)) });
    state.focusedId = current.id;
    resetInterventions();
    state.sig?.request('focus', { student_id: current.id }).catch(() => {});
    if (state.oralMicOn) startTalk('oral');
  }
  renderStudentView(current);
}

function toggleOralMic() {
  state.oralMicOn = !state.oralMicOn;
  if (state.oralMicOn && state.focusedId) startTalk('oral');
  else stopTalk();
  renderTalk();
}

// --- alerts (the panel itself is alerts.js) -------------------------------------

function goToStudent(studentId) {
  if (state.oral) {
    $('student-view').scrollIntoView({ block: 'nearest' });
    return;
  }
  const tile = state.tiles.get(studentId);
  if (!tile) {
    toast(t('desk.alert.gone', { name: nameOf(studentId) }));
    return;
  }
  if ($('focus-dialog').open && state.focusedId !== studentId) closeFocus();
  tile.root.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
  tile.open.focus();
  tile.root.classList.remove('flash');
  void tile.root.offsetWidth; // restart the highlight animation
  tile.root.classList.add('flash');
}

function onAlert(message) {
  if (typeof message.student_id === 'string') addAlert(message, nameOf(message.student_id));
}

// --- media: one RTCPeerConnection, slot transceivers in protocol order ---------------

function codecs(kind, mimeType) {
  const capabilities = RTCRtpReceiver.getCapabilities?.(kind);
  return (capabilities?.codecs ?? []).filter((codec) => codec.mimeType.toLowerCase() === mimeType);
}

function preferCodecs(transceiver, list) {
  if (list.length === 0 || typeof transceiver.setCodecPreferences !== 'function') return;
  try {
    transceiver.setCodecPreferences(list);
  } catch (error) {
    console.warn('setCodecPreferences', error);
  }
}

function iceGatheringComplete(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, ICE_GATHERING_TIMEOUT_MS);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

async function acquireLocalMedia() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      video: state.oral ? { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 20 } } : false,
    });
    media.localAudio = stream.getAudioTracks()[0] ?? null;
    media.localVideo = stream.getVideoTracks()[0] ?? null;
  } catch (error) {
    console.warn('getUserMedia', error);
    toast(t(state.oral ? 'desk.media.no_devices_oral' : 'desk.media.no_microphone'));
    // Without a camera an oral examiner can still listen and speak.
    if (state.oral) {
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
        media.localAudio = stream.getAudioTracks()[0] ?? null;
      } catch { /* talk stays unavailable, said above */ }
    }
  }
  if (media.localAudio) media.localAudio.enabled = false;
  if (media.localVideo) setStream($('self-video'), new MediaStream([media.localVideo]));
  $('self-video').closest('figure').classList.toggle('no-camera', !media.localVideo);
}

function closePeer() {
  clearInterval(media.statsTimer);
  media.statsTimer = null;
  if (media.pc) {
    try { media.pc.close(); } catch { /* already closed */ }
  }
  media.pc = null;
  media.localLevels.clear();
}

async function startMedia(slots) {
  const generation = ++media.generation;
  closePeer();
  if (state.ended || !state.sig) return;
  setMediaStatus('connecting');
  const pc = new RTCPeerConnection({
    iceServers: Array.isArray(state.welcome?.ice_servers) ? state.welcome.ice_servers : [],
    bundlePolicy: 'max-bundle',
  });
  media.pc = pc;
  media.slots = slots;
  const vp8 = codecs('video', 'video/vp8');
  const opus = codecs('audio', 'audio/opus');
  const slotStreams = [];
  for (let slot = 0; slot < slots; slot += 1) {
    const webcam = pc.addTransceiver('video', { direction: 'recvonly' });
    const screen = pc.addTransceiver('video', { direction: 'recvonly' });
    const microphone = pc.addTransceiver('audio', { direction: 'recvonly' });
    preferCodecs(webcam, vp8);
    preferCodecs(screen, vp8);
    preferCodecs(microphone, opus);
    const streams = {
      webcam: new MediaStream([webcam.receiver.track]),
      screen: new MediaStream([screen.receiver.track]),
      microphone: new MediaStream([microphone.receiver.track]),
    };
    for (const track of [webcam.receiver.track, screen.receiver.track]) {
      track.addEventListener('mute', refreshGaps);
      track.addEventListener('unmute', refreshGaps);
    }
    slotStreams.push(streams);
  }
  const talk = pc.addTransceiver(media.localAudio ?? 'audio', { direction: 'sendonly' });
  const camera = pc.addTransceiver(state.oral && media.localVideo ? media.localVideo : 'video',
    { direction: 'sendonly' });
  preferCodecs(talk, opus);
  preferCodecs(camera, vp8);
  media.slotStreams = slotStreams;
  pc.addEventListener('connectionstatechange', () => {
    if (pc !== media.pc) return;
    setMediaStatus(pc.connectionState);
    if (pc.connectionState === 'failed' && state.sig?.state === 'open') {
      setTimeout(() => { if (pc === media.pc) startMedia(media.slots); }, 1000);
    }
  });
  renderRoster();
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc);
    if (generation !== media.generation) return;
    const answer = await state.sig.request('offer', { sdp: pc.localDescription.sdp }, OFFER_TIMEOUT_MS);
    if (generation !== media.generation) return;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    media.statsTimer = setInterval(() => pollLocalStats(pc), LOCAL_STATS_INTERVAL_MS);
  } catch (error) {
    if (generation !== media.generation) return;
    console.warn('media negotiation', error);
    setMediaStatus('failed');
    toast(t('desk.media.failed_detail', { detail: errorText(error) }));
  }
}

function refreshGaps() {
  for (const tile of state.tiles.values()) updateGaps(tile);
}

async function pollLocalStats(pc) {
  if (pc !== media.pc) return;
  let report;
  try {
    report = await pc.getStats();
  } catch {
    return;
  }
  const slotOfMid = new Map();
  pc.getTransceivers().forEach((transceiver, index) => {
    if (index < media.slots * 3 && index % 3 === 2 && transceiver.mid !== null) {
      slotOfMid.set(transceiver.mid, Math.floor(index / 3));
    }
  });
  report.forEach((entry) => {
    if (entry.type !== 'inbound-rtp' || entry.kind !== 'audio') return;
    const slot = slotOfMid.get(entry.mid);
    if (slot !== undefined && typeof entry.audioLevel === 'number') {
      // Perceived loudness grows roughly with the square root of the linear level.
      media.localLevels.set(slot, Math.min(1, Math.sqrt(entry.audioLevel)));
    }
    if (slot !== undefined && typeof entry.jitter === 'number') media.localJitterMs.set(slot, entry.jitter * 1000);
  });
  for (const student of state.roster.students) {
    const tile = state.tiles.get(student.id);
    if (tile) updateLevel(tile, student);
  }
}

function setMediaStatus(status) {
  media.status = status;
  renderMediaStatus();
}

function renderMediaStatus() {
  const known = ['connecting', 'connected', 'disconnected', 'failed', 'new', 'closed'];
  const status = known.includes(media.status) ? media.status : 'idle';
  const text = status === 'idle' ? '' : t(`desk.media.state_${status}`);
  for (const id of ['media-state', 'oral-media-state']) {
    $(id).textContent = text;
    $(id).dataset.state = status;
  }
}

// --- connection -------------------------------------------------------------------

let noticeKeys = null;

function showNotice(headingKey, textOrKey, vars = {}) {
  $('notice-heading').textContent = t(headingKey);
  $('notice-text').textContent = textOrKey.startsWith('desk.') ? t(textOrKey, vars) : textOrKey;
  noticeKeys = { headingKey, textOrKey, vars };
  show('notice');
  $('notice-heading').setAttribute('tabindex', '-1');
  $('notice-heading').focus();
}

function endEverything() {
  state.ended = true;
  stopTalk({ notify: false });
  closePeer();
  for (const track of [media.localAudio, media.localVideo]) track?.stop();
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
  state.focusedId = null;
  state.roster = { slots: 0, students: [], queue: 0 };
  renderRoster();
  clearAlerts();
  dropIncidents();
  clearEnding();
}

function onExamEnded() {
  if (state.ended) return;
  endEverything();
  state.sig?.close();
  showNotice('desk.notice.ended_heading', 'desk.notice.ended');
}

function onClosedFor(code) {
  if (state.ended) return;
  const notices = {
    4000: ['desk.notice.ended_heading', 'desk.notice.ended'],
    4001: ['desk.notice.refused_heading', 'desk.notice.refused'],
    4003: ['desk.notice.replaced_heading', 'desk.notice.replaced'],
    4008: ['desk.notice.closed_heading', 'desk.notice.flood'],
  };
  const [heading, text] = notices[code] ?? ['desk.notice.closed_heading', 'desk.notice.closed'];
  endEverything();
  showNotice(heading, text);
}

function onWelcome(welcome) {
  const first = state.welcome === null;
  state.welcome = welcome;
  if (!first) {
    // A reconnect: the server may have dropped our media with the socket, so negotiate afresh.
    if (!state.ended) startMedia(state.roster.slots || media.slots || state.exam?.cap || 1);
    return;
  }
  if (welcome.role !== 'surveillant' || !welcome.exam) {
    state.ended = true;
    state.sig.close();
    showNotice('desk.notice.wrong_role_heading', 'desk.notice.wrong_role');
    return;
  }
  setupDesk(welcome);
}

async function setupDesk(welcome) {
  state.exam = welcome.exam;
  state.oral = welcome.exam.kind === 'oral';
  setVariant(state.oral ? 'oral' : null);
  document.body.classList.toggle('is-oral', state.oral);
  renderExamTitle();
  if (state.oral) {
    $('oral-stage').append($('student-view'));
    $('student-view').hidden = true;
    $('focus-close').hidden = true;
    $('talk-section').hidden = true;
    const result = h('p', { id: 'oral-result', class: 'result', role: 'status' });
    $('oral-next').after(result);
    $('oral-side').append($('incidents'));
    $('student-view').append(h('audio', { id: 'oral-audio', autoplay: true }));
    show('oral');
  } else {
    show('desk');
  }
  renderRoster();
  renderAlerts();
  renderIncidents();
  renderTalk();
  $(state.oral ? 'oral-heading' : 'desk-heading').focus();
  await acquireLocalMedia();
  if (state.ended) return;
  if (state.oral && state.focusedId && state.oralMicOn && !state.talk) startTalk('oral');
  const cap = Number.isInteger(welcome.exam.cap) && welcome.exam.cap > 0 ? welcome.exam.cap : 1;
  await startMedia(state.roster.slots > 0 ? state.roster.slots : cap);
}

function renderExamTitle() {
  const exam = state.exam;
  if (!exam) return;
  const kind = t(exam.kind === 'oral' ? 'desk.exam.oral' : 'desk.exam.written');
  $('exam-title').textContent = `${exam.title} · ${kind}`;
}

function onRoster(message) {
  if (state.ended) return;
  const students = Array.isArray(message.students) ? message.students.filter((s) => s && typeof s.id === 'string') : [];
  for (const student of students) {
    if (!Number.isInteger(student.slot) || student.slot < 0) student.slot = 0;
    if (typeof student.name !== 'string') student.name = t('desk.student.unknown');
  }
  state.roster = {
    slots: Number.isInteger(message.slots) ? message.slots : state.roster.slots,
    students,
    queue: Number(message.queue) || 0,
    others: Array.isArray(message.others) ? message.others : undefined,
  };
  // More (or fewer) places than our transceivers cover: negotiate again with the new count.
  if (media.pc && state.roster.slots > 0 && state.roster.slots !== media.slots) {
    startMedia(state.roster.slots);
    return;
  }
  renderRoster();
}

function onStats(message) {
  const tracks = message.tracks && typeof message.tracks === 'object' ? message.tracks : {};
  for (const [studentId, entry] of Object.entries(tracks)) {
    const student = studentById(studentId);
    const previous = state.stats.get(studentId);
    const jitter = student ? media.localJitterMs.get(student.slot) ?? null : null;
    const { quality, counts, loss } = assessQuality(student?.status ?? {}, entry ?? {}, previous, jitter);
    state.stats.set(studentId, {
      quality,
      counts,
      loss,
      serverAudio: normaliseAudioLevel(entry?.microphone?.audio_level) ?? 0,
    });
  }
  for (const studentId of state.stats.keys()) {
    if (!(studentId in tracks) && !studentById(studentId)) state.stats.delete(studentId);
  }
  for (const student of state.roster.students) {
    const tile = state.tiles.get(student.id);
    if (tile) {
      renderStatusList(tile.statusList, student, { withHand: false });
      updateLevel(tile, student);
    }
    if (student.id === state.focusedId) renderStatusList($('focus-status'), student);
  }
}

async function begin(name) {
  state.name = name;
  startAlertSound();
  const sig = new Signalling({ token: state.token, name });
  state.sig = sig;
  sig.addEventListener('state', () => {
    renderConnection(state.sig);
    if (sig.state === 'closed' && !state.ended && state.welcome) onClosedFor(sig.closeCode);
    if (sig.state === 'reconnecting') stopTalk({ notify: false });
  });
  sig.on('welcome', onWelcome);
  sig.on('roster', onRoster);
  sig.on('stats', onStats);
  sig.on('alert', onAlert);
  sig.on('exam_ended', onExamEnded);
  sig.on('exam_ending', onExamEnding);
  sig.on('error', (error) => {
    if (['link_invalid', 'link_expired', 'exam_ended'].includes(error.code)) {
      endEverything();
      showNotice('desk.notice.closed_heading', errorText(error));
    }
  });
  const submit = $('start-form').querySelector('button[type=submit]');
  submit.disabled = true;
  submit.textContent = t('desk.start.connecting');
  try {
    await sig.connect();
  } catch (error) {
    state.ended = true;
    const heading = error.code === 'exam_ended' ? 'desk.notice.ended_heading' : 'desk.notice.refused_heading';
    showNotice(heading, errorText(error));
  }
}

// --- wiring ---------------------------------------------------------------------

function validateStart() {
  const name = $('display-name').value.trim();
  let ok = true;
  $('display-name-error').textContent = '';
  $('conduct-error').textContent = '';
  $('display-name').removeAttribute('aria-invalid');
  $('conduct-agree').removeAttribute('aria-invalid');
  if (name.length === 0 || name.length > NAME_MAX) {
    $('display-name-error').textContent = t('desk.start.name_required', { max: NAME_MAX });
    $('display-name').setAttribute('aria-invalid', 'true');
    ok = false;
  }
  if (!$('conduct-agree').checked) {
    $('conduct-error').textContent = t('desk.start.agree_required');
    $('conduct-agree').setAttribute('aria-invalid', 'true');
    ok = false;
  }
  if (!ok) ($('display-name').getAttribute('aria-invalid') ? $('display-name') : $('conduct-agree')).focus();
  return ok ? name : null;
}

// After every switch of language (and once at the start): what the catalogue does not fill in.
function renderLanguage() {
  for (const button of document.querySelectorAll('[data-preset]')) button.textContent = t(button.dataset.preset);
  renderConnection(state.sig);
  renderMediaStatus();
  renderExamTitle();
  renderTalk();
  renderSoundToggle();
  renderAlerts();
  renderEnding();
  if (state.welcome && !state.ended) renderRoster();
  if (state.focusedId) {
    const student = studentById(state.focusedId);
    if (student) renderStudentView(student);
  }
  renderIncidents();
  renderResults();
  if (noticeKeys && !$('notice').hidden) {
    const { headingKey, textOrKey, vars } = noticeKeys;
    $('notice-heading').textContent = t(headingKey);
    if (textOrKey.startsWith('desk.')) $('notice-text').textContent = t(textOrKey, vars);
  }
}

function wire() {
  wireLanguageButtons(renderLanguage);

  // Never offer "save video as": no context menu on any picture of a student.
  document.addEventListener('contextmenu', (event) => {
    if (event.target instanceof Element && event.target.closest('video, figure')) event.preventDefault();
  });
  document.addEventListener('dragstart', (event) => {
    if (event.target instanceof Element && event.target.closest('video')) event.preventDefault();
  });
  for (const video of document.querySelectorAll('video')) hardenVideo(video);

  $('start-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const name = validateStart();
    if (name) begin(name);
  });

  const focusDialog = $('focus-dialog');
  focusDialog.addEventListener('close', () => { if (state.focusedId && !state.oral) closeFocus(); });
  $('focus-close').addEventListener('click', () => closeFocus());

  for (const button of document.querySelectorAll('[data-preset]')) {
    button.addEventListener('click', () => sendMessage(t(button.dataset.preset)));
  }
  $('message-form').addEventListener('submit', (event) => {
    event.preventDefault();
    sendMessage($('message-text').value);
  });
  $('message-text').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      sendMessage($('message-text').value);
    }
  });

  wireTalk();

  $('handover-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const studentId = state.focusedId;
    const to = $('handover-to').value;
    if (!studentId || !to) return;
    const other = state.roster.others?.find((entry) => entry.id === to);
    setResult('handover-result', () => t('desk.handover.sending'), 'pending');
    try {
      if (state.talk) stopTalk();
      await state.sig.request('hand_over', { student_id: studentId, to });
      const done = t('desk.handover.done', { name: nameOf(studentId), to: other?.name ?? '' });
      if (state.focusedId === studentId) closeFocus();
      toast(done);
    } catch (error) {
      setResult('handover-result', () => errorText(error), 'error');
    }
  });

  $('admit-button').addEventListener('click', () => { if (state.focusedId && looked()) admitStudent(state.focusedId); });
  wireIdCheck({ onLooked: () => { const student = studentById(state.focusedId); if (student) renderAdmission(student); } });
  $('end-open').addEventListener('click', () => { if (state.focusedId) openEndDialog(state.focusedId); });
  $('oral-next').addEventListener('click', () => { if (state.focusedId) openEndDialog(state.focusedId, { next: true }); });
  $('end-form').addEventListener('submit', (event) => {
    event.preventDefault();
    confirmEnd();
  });
  $('end-cancel').addEventListener('click', () => {
    state.endTarget = null;
    $('end-dialog').close();
  });
  $('end-dialog').addEventListener('close', () => {
    state.endTarget = null;
    const back = state.oral ? $('oral-next') : $('end-open');
    if (!back.disabled && back.offsetParent !== null) back.focus();
  });

  wireAlerts({ goToStudent });
  $('oral-mic').addEventListener('click', toggleOralMic);
  wireIncidents({
    focused: () => (state.focusedId ? { id: state.focusedId, name: nameOf(state.focusedId) } : null),
    about: () => ({ title: state.exam?.title ?? '', surveillant: state.name }),
  });
  wireListening(renderListening);
  // Incident notes live only here: ask before a reload or close throws them away.
  window.addEventListener('beforeunload', (event) => {
    if (!state.ended && unsavedIncidents()) event.preventDefault();
  });

  keepTokenOnSkipLinks();
  reloadOnNewLink();
  // Restored from the back-forward cache, the page's connections are gone: start afresh.
  window.addEventListener('pageshow', (event) => { if (event.persisted) location.reload(); });
  window.addEventListener('pagehide', () => {
    closePeer();
    state.sig?.close();
  });
}

const DEAD_LINK_HEADINGS = {
  link_invalid: 'desk.notice.refused_heading',
  link_expired: 'desk.notice.refused_heading',
  exam_ended: 'desk.notice.ended_heading',
};

async function main() {
  renderTopbar('desk.role');
  wire();
  setLanguage(currentLanguage());
  state.token = tokenFromFragment();
  if (!state.token) {
    showNotice('desk.notice.no_link_heading', 'desk.notice.no_link');
    return;
  }
  // An oral exam says "examiner" from the first screen on.
  if (examFromToken(state.token)?.kind === 'oral') setVariant('oral');
  // A dead link says so before the code of conduct.
  show(null);
  const status = await checkLink(state.token);
  if (status in DEAD_LINK_HEADINGS) {
    state.ended = true;
    showNotice(DEAD_LINK_HEADINGS[status], errorText({ code: status }));
    return;
  }
  show('start');
  $('display-name').focus();
}

main();
