// What the surveillant hears: one room, not eight. By default only the student in the
// student view plays, at full volume; the others are muted, their sound meter still shows
// when they speak. Each tile has its own mute and volume; "Listen to all" plays everyone.

import { $, h } from '/common/dom.js';
import { t } from '/common/i18n.js';

const listening = {
  all: false,
  choices: new Map(), // studentId -> { muted, volume }: what the surveillant chose for that tile
  onChange: () => {},
};

/** Wire "Listen to all"; `onChange()` re-applies the volumes. */
export function wireListening(onChange) {
  listening.onChange = onChange;
  $('listen-all').addEventListener('change', () => {
    listening.all = $('listen-all').checked;
    listening.choices.clear();
    onChange();
  });
}

/** A tile's own controls: a mute toggle and a volume slider. */
export function listeningControls(studentId) {
  const mute = h('button', { type: 'button', class: 'small mute', 'aria-pressed': 'true' });
  const volume = h('input', { type: 'range', class: 'volume', min: '0', max: '100', step: '5' });
  mute.addEventListener('click', () => {
    const choice = listening.choices.get(studentId);
    const audible = mute.getAttribute('aria-pressed') !== 'true';
    listening.choices.set(studentId, { muted: audible, volume: choice?.volume || 1 });
    listening.onChange();
  });
  volume.addEventListener('input', () => {
    const value = Number(volume.value) / 100;
    listening.choices.set(studentId, { muted: value === 0, volume: value });
    listening.onChange();
  });
  return { mute, volume };
}

/** The volume a student's sound plays at: 0 (muted) to 1. */
export function gainOf(studentId, focusedId) {
  const choice = listening.choices.get(studentId);
  if (choice) return choice.muted ? 0 : choice.volume;
  return listening.all || studentId === focusedId ? 1 : 0;
}

/** Set every tile's audio (and its controls) from the choices and the focused student. */
export function applyListening(tiles, focusedId) {
  for (const tile of tiles) {
    const gain = gainOf(tile.id, focusedId);
    tile.audio.muted = gain === 0;
    tile.audio.volume = gain;
    const name = tile.name.textContent;
    tile.mute.textContent = t('desk.listen.mute');
    tile.mute.setAttribute('aria-label', t('desk.listen.mute_label', { name }));
    tile.mute.setAttribute('aria-pressed', String(gain === 0));
    tile.volume.value = String(Math.round(gain * 100));
    tile.volume.setAttribute('aria-label', t('desk.listen.volume_label', { name }));
  }
}

/** A student left this desk: forget what was chosen for them. */
export function forgetListening(studentId) {
  listening.choices.delete(studentId);
}
