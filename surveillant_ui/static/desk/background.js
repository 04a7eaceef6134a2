// "Page in background" over a student's camera picture while their page is hidden: a phone's
// browser then pauses the camera, and the last frame would otherwise pass for a live picture.

import { h } from '/common/dom.js';
import { t } from '/common/i18n.js';

const COVER_CLASS = 'page-background';
let coverCount = 0;

/**
 * Cover `video` (a student's camera picture, inside its figure) while `student`'s page is hidden,
 * and uncover it once the page shows again. The cover's text also describes the surrounding tile
 * or dialog for screen readers. Call it again after a switch of language.
 */
export function renderBackground(video, student) {
  const figure = video.parentElement;
  const holder = figure.closest('article, dialog');
  let cover = figure.querySelector(`:scope > .${COVER_CLASS}`);
  if (student?.status?.page_hidden !== true) {
    if (cover) {
      describe(holder, cover.id, false);
      cover.remove();
    }
    return;
  }
  if (!cover) {
    cover = h('div', { class: COVER_CLASS, id: `${COVER_CLASS}-${++coverCount}` },
      h('p', { class: 'page-background-title' }),
      h('p', { class: 'page-background-detail' }));
    figure.append(cover);
  }
  cover.querySelector('.page-background-title').textContent = t('desk.background.title');
  cover.querySelector('.page-background-detail').textContent = t('desk.background.detail');
  describe(holder, cover.id, true);
}

function describe(holder, id, on) {
  if (!holder) return;
  const ids = new Set((holder.getAttribute('aria-describedby') ?? '').split(/\s+/).filter(Boolean));
  if (on) ids.add(id);
  else ids.delete(id);
  if (ids.size) holder.setAttribute('aria-describedby', [...ids].join(' '));
  else holder.removeAttribute('aria-describedby');
}
