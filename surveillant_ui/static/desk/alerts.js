// The desk's alerts panel: live alerts about the surveillant's students, newest first, with
// an optional beep. Kept in this page's memory only and dropped with the exam.

import { $, h } from '/common/dom.js';
import { t } from '/common/i18n.js';
import { icon, timeLabel } from './widgets.js';

// `taken_over`: the student's place was taken by a new connection while the earlier one was open.
// `rejoined_after_end`: someone joined the shared link under the name of an ended session.
const ALERT_KINDS = new Set([
  'hand_raised', 'screen_stopped', 'camera_off', 'microphone_off', 'page_hidden', 'connection_lost', 'left',
  'taken_over', 'rejoined_after_end',
]);
const MAX_ALERTS = 50;
const BEEP_MIN_GAP_MS = 1500;

const panel = {
  entries: [], // { seq, studentId, name, kind, at }
  seq: 0,
  soundOn: true,
  audioContext: null,
  lastBeep: 0,
  goToStudent: () => {},
};

/** Wire the panel's buttons; `goToStudent(id)` shows the student an alert is about. */
export function wireAlerts({ goToStudent }) {
  panel.goToStudent = goToStudent;
  $('sound-toggle').addEventListener('click', () => {
    panel.soundOn = !panel.soundOn;
    renderSoundToggle();
    if (panel.soundOn) beep();
  });
  $('alerts-clear').addEventListener('click', () => {
    clearAlerts();
    $('alerts-heading').setAttribute('tabindex', '-1');
    $('alerts-heading').focus();
  });
}

/** The beep needs an AudioContext made during a user gesture (the desk's start). */
export function startAlertSound() {
  try {
    panel.audioContext = new AudioContext();
  } catch {
    panel.audioContext = null;
  }
}

/** One alert from the server, about the student `name`. */
export function addAlert(message, name) {
  if (typeof message.student_id !== 'string') return;
  const entry = {
    seq: ++panel.seq,
    studentId: message.student_id,
    name,
    kind: String(message.kind ?? ''),
    at: new Date(),
  };
  panel.entries.unshift(entry);
  panel.entries.length = Math.min(panel.entries.length, MAX_ALERTS);
  renderAlerts();
  const { kind } = alertText(entry);
  $('alert-live').textContent = t('desk.alert.announce', { name, kind });
  beep();
}

export function clearAlerts() {
  panel.entries = [];
  renderAlerts();
}

function alertText(entry) {
  const kind = ALERT_KINDS.has(entry.kind) ? t(`desk.alert.${entry.kind}`) : t('desk.alert.other', { kind: entry.kind });
  return { name: entry.name, kind };
}

export function renderAlerts() {
  const items = () => panel.entries.map((entry) => {
    const { name, kind } = alertText(entry);
    const button = h('button', { type: 'button', class: 'alert-entry', 'data-student': entry.studentId,
      'data-kind': entry.kind },
      entry.kind === 'hand_raised' ? icon('hand') : h('span', { class: 'alert-icon', 'aria-hidden': 'true', text: '⚠' }),
      h('span', { class: 'alert-what' }, h('strong', { text: name }), ' ', kind),
      h('span', { class: 'alert-time', text: timeLabel(entry.at) }));
    button.addEventListener('click', () => panel.goToStudent(entry.studentId));
    return h('li', {}, button);
  });
  $('alert-list').replaceChildren(...items());
  $('oral-alert-list').replaceChildren(...items());
  $('alerts-empty').hidden = panel.entries.length > 0;
  $('oral-alerts-empty').hidden = panel.entries.length > 0;
  $('alerts-clear').hidden = panel.entries.length === 0;
  renderSoundToggle();
}

export function renderSoundToggle() {
  const button = $('sound-toggle');
  button.setAttribute('aria-pressed', String(panel.soundOn));
  button.replaceChildren(
    icon(panel.soundOn ? 'bell' : 'bellOff'),
    ` ${t('desk.alerts.sound')}`,
    h('span', {
      class: 'toggle-state',
      'aria-hidden': 'true',
      text: ` (${t(panel.soundOn ? 'desk.common.on' : 'desk.common.off')})`,
    }));
}

function beep() {
  if (!panel.soundOn || !panel.audioContext) return;
  const now = performance.now();
  if (now - panel.lastBeep < BEEP_MIN_GAP_MS) return;
  panel.lastBeep = now;
  const context = panel.audioContext;
  if (context.state === 'suspended') context.resume().catch(() => {});
  const start = context.currentTime + 0.01;
  const oscillator = context.createOscillator();
  const gain = context.createGain();
  oscillator.type = 'sine';
  oscillator.frequency.setValueAtTime(660, start);
  oscillator.frequency.exponentialRampToValueAtTime(520, start + 0.3);
  gain.gain.setValueAtTime(0.0001, start);
  gain.gain.exponentialRampToValueAtTime(0.06, start + 0.03);
  gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.35);
  oscillator.connect(gain).connect(context.destination);
  oscillator.start(start);
  oscillator.stop(start + 0.4);
}
