// The ID check in the student view: the camera large (camera and screen can be swapped),
// and Admit only after the surveillant says they have looked. Nothing is captured.

import { $ } from '/common/dom.js';

const check = { webcamLarge: false };

/** Wire the swap button and the "I have looked" box; `onLooked()` re-renders the Admit button. */
export function wireIdCheck({ onLooked }) {
  $('swap-media').addEventListener('click', () => {
    check.webcamLarge = !check.webcamLarge;
    renderLayout();
  });
  $('admit-looked').addEventListener('change', onLooked);
}

/** A student view opens: the camera is large while their identity is still unchecked. */
export function startIdCheck(student) {
  check.webcamLarge = student.admitted === false;
  $('admit-looked').checked = false;
  renderLayout();
}

/** True once the surveillant ticked that they compared the card with the student. */
export function looked() {
  return $('admit-looked').checked;
}

function renderLayout() {
  $('student-view').classList.toggle('webcam-large', check.webcamLarge);
  $('swap-media').setAttribute('aria-pressed', String(check.webcamLarge));
}
