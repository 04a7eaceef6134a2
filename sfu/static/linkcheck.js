// Checks a link before a page asks for anything: one `check` on a short-lived socket
// (docs/PROTOCOL.md, "Checking a link"). Joins nothing and changes nothing on the server,
// so a dead link can say so before the notice, the code of conduct or any device request.

const CHECK_TIMEOUT_MS = 8000;
const STATUSES = new Set(['ok', 'link_invalid', 'link_expired', 'exam_ended', 'session_ended']);

/**
 * Resolves with 'ok', 'link_invalid', 'link_expired', 'exam_ended' or 'session_ended'; with
 * 'unknown' when the server cannot be asked (the page goes on, and `hello` says it later).
 * `resume` (optional) also asks whether that session was ended.
 */
export function checkLink(token, resume = null) {
  return new Promise((resolve) => {
    let socket;
    const finish = (status) => {
      clearTimeout(timer);
      resolve(status);
      if (socket && socket.readyState < WebSocket.CLOSING) socket.close(1000);
    };
    const timer = setTimeout(() => finish('unknown'), CHECK_TIMEOUT_MS);
    try {
      const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
      socket = new WebSocket(`${scheme}//${location.host}/ws`);
    } catch {
      finish('unknown');
      return;
    }
    socket.addEventListener('open', () => {
      const message = { type: 'check', v: 1, id: 1, token };
      if (typeof resume === 'string' && resume !== '') message.resume = resume;
      socket.send(JSON.stringify(message));
    });
    socket.addEventListener('message', (event) => {
      let reply;
      try {
        reply = JSON.parse(event.data);
      } catch {
        return;
      }
      if (reply?.re !== 1) return;
      if (reply.type === 'link_status' && STATUSES.has(reply.status)) finish(reply.status);
      else finish('unknown');
    });
    socket.addEventListener('close', () => finish('unknown'));
    socket.addEventListener('error', () => finish('unknown'));
  });
}
