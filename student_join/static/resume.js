// Keeps a live student's place across a reload of this tab: the resume secret the server
// gave in `welcome` and the name they gave, in sessionStorage, which belongs to this one tab
// and is gone when the tab closes. Removed as soon as the session ends (PRIVACY.md).

const KEY_PREFIX = 'invigil.resume.';
const RESUME_MAX = 128;
const NAME_MAX = 60;

// One entry per link: the token's signature part names it without keeping the whole link.
function keyFor(token) {
  return KEY_PREFIX + String(token).split('.').pop().slice(0, 16);
}

function storage() {
  try {
    return window.sessionStorage;
  } catch {
    return null; // storage switched off: a reload then starts afresh, as before
  }
}

/** Remember this tab's place for `token` while its session is live. */
export function rememberPlace(token, resume, name) {
  if (typeof resume !== 'string' || resume.length === 0 || resume.length > RESUME_MAX) return;
  const value = JSON.stringify({ resume, name: String(name).slice(0, NAME_MAX) });
  try {
    window.sessionStorage.setItem(keyFor(token), value); // allowed (PRIVACY.md): this tab, live session only, removed at its end
  } catch {
    // A full or blocked storage only costs the reload its shortcut.
  }
}

/** The place kept for `token` in this tab, as { resume, name }, or null. */
export function keptPlace(token) {
  try {
    const value = JSON.parse(storage()?.getItem(keyFor(token)) ?? 'null');
    if (typeof value?.resume !== 'string' || typeof value?.name !== 'string' || value.name.trim() === '') return null;
    return { resume: value.resume, name: value.name };
  } catch {
    return null;
  }
}

/** The session is over (or refused): nothing of it stays in this tab. */
export function forgetPlaces() {
  const kept = storage();
  if (!kept) return;
  for (let index = kept.length - 1; index >= 0; index -= 1) {
    const key = kept.key(index);
    if (key?.startsWith(KEY_PREFIX)) kept.removeItem(key);
  }
}
