// The organiser's announced end of the exam: a banner on the desk that says when, and
// offers the incident notes for download before they vanish with the exam.

import { $ } from '/common/dom.js';
import { t } from '/common/i18n.js';
import { timeLabel } from './widgets.js';

const ending = { at: null, seconds: 0, download: () => {}, hasNotes: () => false };

/** `download()` saves the incident notes; `hasNotes()` says whether there are any. */
export function wireEnding({ download, hasNotes }) {
  ending.download = download;
  ending.hasNotes = hasNotes;
  $('ending-download').addEventListener('click', () => ending.download());
}

/** The server's `exam_ending`: the exam ends at `at` (unix seconds). */
export function onExamEnding(message) {
  if (!Number.isFinite(message.at)) return;
  ending.at = new Date(message.at * 1000);
  // The warning as announced ("in 60 seconds"); the clock time says when exactly.
  ending.seconds = Number.isInteger(message.seconds) ? message.seconds
    : Math.max(0, Math.round((ending.at.getTime() - Date.now()) / 1000));
  renderEnding();
}

/** Again after a language switch or when the notes change. */
export function renderEnding() {
  const banner = $('ending-banner');
  banner.hidden = ending.at === null;
  if (ending.at === null) return;
  $('ending-text').textContent = t('desk.ending.text', { time: timeLabel(ending.at), seconds: ending.seconds });
  $('ending-download').hidden = !ending.hasNotes();
}

/** The exam is over: the banner goes with it. */
export function clearEnding() {
  ending.at = null;
  renderEnding();
}
