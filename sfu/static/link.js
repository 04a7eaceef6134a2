// What a link says about its exam, read in the page before any connection: the student
// notice names the organiser's contact and alternative before the student has agreed to
// anything, and the desk says "examiner" for an oral exam from its first screen. Display only: the server checks
// the signature at `hello`, and its `welcome.exam` replaces this once joined.

function decodeBase64Url(text) {
  const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
  const binary = atob(padded);
  const bytes = Uint8Array.from(binary, (character) => character.charCodeAt(0));
  return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
}

// { title, kind, note, contact, id_check, screen_required } from a token, or null when it cannot be read.
export function examFromToken(token) {
  try {
    const payload = JSON.parse(decodeBase64Url(token.split('.')[0]));
    const exam = payload?.exam;
    if (!exam || typeof exam !== 'object') return null;
    const text = (value) => (typeof value === 'string' ? value : '');
    return {
      title: text(exam.title),
      kind: exam.kind === 'oral' ? 'oral' : 'written',
      note: text(exam.note),
      contact: text(exam.contact),
      id_check: exam.id_check === true,
      // Links signed before the setting existed: required for written exams, not for oral ones.
      screen_required: typeof exam.screen_required === 'boolean' ? exam.screen_required : exam.kind !== 'oral',
    };
  } catch {
    return null;
  }
}
