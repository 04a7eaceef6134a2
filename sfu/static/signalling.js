// The one WebSocket client of every Invigil page (student, surveillant, organiser):
// hello/welcome, requests with replies, server pushes, and reconnecting with `resume`.
//
// API (shared by all pages; keep it stable):
//
//   tokenFromFragment() -> string | null
//       The link token: location.hash without the leading '#', or null when empty.
//       The token lives in the fragment so it never travels in an HTTP request.
//
//   new Signalling({ token, name = undefined, resume = null })
//       `resume`: a place kept from before a reload of this tab (the student page).
//   async connect()
//       Opens ws(s)://<host>/ws and sends `hello` (token, name when given, and the
//       `resume` string once the server handed one out). Resolves with the `welcome`
//       message. Rejects with the server's `error` message, or, when the socket
//       cannot be opened or closes first, with a message of the same shape:
//       { type: 'error', code: 'network' | 'closed', message: { nl, en }, closeCode }.
//   send(type, fields = {}) -> boolean
//       Sends { type, v: 1, ...fields }. Returns false (and sends nothing) while
//       the socket is not open: nothing is queued across a reconnect.
//   request(type, fields = {}, timeoutMs = 10000) -> Promise
//       Like send() with an integer `id`. Resolves with the reply whose `re` equals
//       it (`ack` or a typed answer); rejects with the `error` reply, on timeout
//       (code 'timeout'), or when the socket is not open or closes before the reply
//       (code 'disconnected').
//   on(type, handler) -> unsubscribe()
//       handler(message) for every server message of that type that is not a reply
//       to a request. `welcome` is delivered too, on the first connect and again
//       after every successful reconnect (that is how a page learns it must
//       renegotiate media). Error pushes without `re` arrive as 'error'.
//   close()
//       Deliberate close: no reconnect; state becomes 'closed'.
//
//   Events (EventTarget):
//     'state'  CustomEvent, detail: 'connecting' | 'open' | 'reconnecting' | 'closed'.
//   Read-only properties:
//     state       the last state
//     closeCode   the close code of the socket that closed last (or null)
//     welcome     the last welcome message (or null)
//
// After the first welcome the client reconnects by itself when the socket drops,
// with backoff from 0.5 s up to 5 s, presenting `resume` (held in this object's memory;
// the student page also keeps it in this tab's sessionStorage: see its resume.js).
// It stops for good on close codes
// 4000 (exam ended), 4001 (link refused), 4002 (session ended by the surveillant),
// 4003 (replaced by a newer connection), 4004 (released: media did not come up in time)
// and 4010 (left), and when a reconnect's
// hello is refused because the link or the exam is no longer valid.

const PROTOCOL_VERSION = 1;
const FINAL_CLOSE_CODES = new Set([4000, 4001, 4002, 4003, 4004, 4010]);
const FINAL_ERROR_CODES = new Set(['link_invalid', 'link_expired', 'exam_ended', 'session_ended']);
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 5000;
const HELLO_TIMEOUT_MS = 15000;

export function tokenFromFragment() {
  const token = (globalThis.location?.hash ?? '').replace(/^#/, '');
  return token.length > 0 ? token : null;
}

function clientError(code, nl, en, closeCode = null) {
  return { type: 'error', code, message: { nl, en }, closeCode };
}

const notOpen = () => clientError(
  'disconnected',
  'Er is op dit moment geen verbinding met de server.',
  'There is no connection to the server at the moment.',
);

export class Signalling extends EventTarget {
  #token;
  #name;
  #resume = null;
  #socket = null;
  #state = 'closed';
  #closeCode = null;
  #welcome = null;
  #deliberate = false;
  #everWelcomed = false;
  #nextId = 1;
  #pending = new Map();
  #handlers = new Map();
  #retryTimer = null;
  #backoffMs = BACKOFF_FIRST_MS;

  constructor({ token, name = undefined, resume = null }) {
    super();
    if (typeof token !== 'string' || token.length === 0) {
      throw new TypeError('Signalling needs a token');
    }
    this.#token = token;
    this.#name = name;
    if (typeof resume === 'string' && resume !== '') this.#resume = resume;
  }

  get state() { return this.#state; }
  get closeCode() { return this.#closeCode; }
  get welcome() { return this.#welcome; }

  async connect() {
    this.#deliberate = false;
    clearTimeout(this.#retryTimer);
    this.#setState('connecting');
    return this.#open();
  }

  send(type, fields = {}) {
    if (!this.#socket || this.#socket.readyState !== WebSocket.OPEN) return false;
    this.#socket.send(JSON.stringify({ ...fields, type, v: PROTOCOL_VERSION }));
    return true;
  }

  request(type, fields = {}, timeoutMs = 10000) {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      if (!this.send(type, { ...fields, id })) {
        reject(notOpen());
        return;
      }
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(clientError('timeout', 'De server antwoordde niet op tijd.',
          'The server did not answer in time.'));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
    });
  }

  on(type, handler) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(handler);
    return () => this.#handlers.get(type)?.delete(handler);
  }

  close() {
    this.#deliberate = true;
    clearTimeout(this.#retryTimer);
    const socket = this.#socket;
    this.#socket = null;
    if (socket && socket.readyState < WebSocket.CLOSING) socket.close(1000);
    this.#failPending(notOpen());
    this.#setState('closed');
  }

  // --- internals -----------------------------------------------------------

  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: state }));
  }

  #url() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}/ws`;
  }

  // Opens one socket and says hello. Resolves with welcome, rejects with an error message.
  #open() {
    return new Promise((resolve, reject) => {
      let settled = false;
      let socket;
      try {
        socket = new WebSocket(this.#url());
      } catch {
        reject(clientError('network', 'De server is niet bereikbaar.', 'The server cannot be reached.'));
        return;
      }
      this.#socket = socket;
      const helloTimer = setTimeout(() => {
        if (!settled) socket.close(4999);
      }, HELLO_TIMEOUT_MS);
      const settle = (ok, value) => {
        if (settled) return;
        settled = true;
        clearTimeout(helloTimer);
        (ok ? resolve : reject)(value);
      };

      socket.addEventListener('open', () => {
        const hello = { token: this.#token };
        if (this.#name !== undefined) hello.name = this.#name;
        if (this.#resume !== null) hello.resume = this.#resume;
        this.send('hello', hello);
      });

      socket.addEventListener('message', (event) => {
        if (socket !== this.#socket) return;
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        if (!message || typeof message !== 'object' || typeof message.type !== 'string') return;

        if (!settled) {
          if (message.type === 'welcome') {
            this.#welcome = message;
            if (typeof message.resume === 'string') this.#resume = message.resume;
            this.#everWelcomed = true;
            this.#backoffMs = BACKOFF_FIRST_MS;
            this.#setState('open');
            settle(true, message);
            this.#dispatch(message);
            return;
          }
          if (message.type === 'error') {
            settle(false, message);
            if (FINAL_ERROR_CODES.has(message.code)) this.#deliberate = true;
            // A resume the server no longer accepts: rejoin with the link alone.
            else if (message.code === 'invalid') this.#resume = null;
            // Pages learn from this push why a reconnect was refused.
            if (this.#everWelcomed) this.#dispatch(message);
            socket.close(1000);
            return;
          }
        }
        this.#route(message);
      });

      socket.addEventListener('close', (event) => {
        clearTimeout(helloTimer);
        if (socket !== this.#socket) return;
        this.#socket = null;
        this.#closeCode = event.code;
        this.#failPending(notOpen());
        settle(false, settled ? null : clientError(
          event.code === 1006 && !event.wasClean ? 'network' : 'closed',
          'De verbinding met de server is verbroken.',
          'The connection to the server was lost.',
          event.code,
        ));
        this.#afterClose(event.code);
      });
    });
  }

  #afterClose(code) {
    if (this.#deliberate || !this.#everWelcomed || FINAL_CLOSE_CODES.has(code)) {
      this.#setState('closed');
      return;
    }
    this.#setState('reconnecting');
    const delay = this.#backoffMs * (0.8 + Math.random() * 0.4);
    this.#backoffMs = Math.min(this.#backoffMs * 2, BACKOFF_MAX_MS);
    this.#retryTimer = setTimeout(() => {
      if (this.#deliberate) return;
      // A failed attempt closes its socket, which schedules the next one.
      this.#open().catch(() => {});
    }, Math.min(delay, BACKOFF_MAX_MS));
  }

  #route(message) {
    if (Number.isInteger(message.re) && this.#pending.has(message.re)) {
      const { resolve, reject, timer } = this.#pending.get(message.re);
      this.#pending.delete(message.re);
      clearTimeout(timer);
      (message.type === 'error' ? reject : resolve)(message);
      return;
    }
    if (message.type === 'welcome') this.#welcome = message;
    this.#dispatch(message);
  }

  #dispatch(message) {
    for (const handler of [...(this.#handlers.get(message.type) ?? [])]) {
      try {
        handler(message);
      } catch (error) {
        console.error(error);
      }
    }
  }

  #failPending(error) {
    for (const { reject, timer } of this.#pending.values()) {
      clearTimeout(timer);
      reject(error);
    }
    this.#pending.clear();
  }
}
