// The student's page, from link to live: notice, another way, device check,
// waiting, live, end. No device is touched before the student confirms the notice.

import { Signalling, tokenFromFragment } from '/common/signalling.js';
import { keepTokenOnSkipLinks } from '/common/fragment.js';
import { $ } from '/common/dom.js';
import {
  catalogue, currentLanguage, locale, setLanguage, setVariant, translatePage, wireLanguageButtons,
} from '/common/i18n.js';
import { chime } from './chime.js';
import {
  DeviceError,
  LevelMeter,
  isLive,
  openCamera,
  openCameraAndMicrophone,
  openMicrophone,
  openWholeScreen,
  unblockKey,
} from './devices.js';
import { examFromToken } from '/common/link.js';
import { checkLink } from '/common/linkcheck.js';
import { forgetPlaces, keptPlace, rememberPlace } from './resume.js';
import { Publisher } from './publisher.js';
import { RECOMMENDED_KBPS, estimateUploadKbps } from './uplink.js';

const NAME_MAX = 60;
const HEARD_LEVEL = 0.35; // about -39 dBFS: a voice, not room noise
const SILENCE_WARNING_MS = 8000;
const RENEGOTIATE_DELAY_MS = 3000;
const DISCONNECTED_GRACE_MS = 8000;
const LEAVE_CLOSE_DELAY_MS = 2000;
const FINAL_LINK_ERRORS = new Set(['link_invalid', 'link_expired', 'exam_ended', 'session_ended']);
const DEVICES = ['camera', 'microphone', 'screen'];
const DEAD_LINK_HEADINGS = {
  link_invalid: 'student.problem_link_heading',
  link_expired: 'student.problem_link_heading',
  exam_ended: 'student.ended_exam_heading',
  session_ended: 'student.ended_session_heading',
};

const page = {
  token: null,
  exam: null,
  name: '',
  audioContext: null,
  tracks: { camera: null, microphone: null, screen: null },
  checkMeter: null,
  sentMeter: null,
  heard: false,
  silenceTimer: 0,
  signalling: null,
  publisher: null,
  renegotiateTimer: 0,
  step: 'loading',
  surveillant: null,
  surveillantId: null,
  queuePosition: null,
  participantId: null,
  admitted: false, // with an ID check: true once the surveillant has checked the student's identity
  handRaised: false,
  mediaState: 'new',
  mediaEverConnected: false,
  // The server's `media_live`: this connection's media reaches the SFU and is forwarded. Only
  // then (and while connected) does the page say "live"; every new negotiation waits for it again.
  mediaLive: false,
  mediaFailed: false,
  lastStatus: null,
  ended: false,
  retry: null,
  uplinkKbps: null,
  unloading: false, // the tab is closing or reloading: its hiding is not reported
  kept: null, // { resume, name }: this tab's place from before a reload (resume.js)
};

// --- small helpers ---------------------------------------------------------

// Puts catalogue text in an element so that a language switch retranslates it.
function say(element, key, vars = undefined) {
  if (!key) {
    delete element.dataset.i18n;
    delete element.dataset.i18nVars;
    element.textContent = '';
    return;
  }
  element.dataset.i18n = key;
  if (vars) element.dataset.i18nVars = JSON.stringify(vars);
  else delete element.dataset.i18nVars;
  translatePage(element);
}

function errorKey(error) {
  const key = `common.error_${error?.code}`;
  return key in catalogue.en ? key : 'common.error_unknown';
}

function showStep(name, { focus = true } = {}) {
  page.step = name;
  for (const section of document.querySelectorAll('main > .step')) {
    section.hidden = section.id !== `step-${name}`;
  }
  if (focus) $(`step-${name}`).querySelector('h1')?.focus();
}

function setDeviceState(device, state, key) {
  const status = $(`${device}-status`);
  status.dataset.state = state;
  say(status, key);
}

// iOS and most phones and tablets have no screen sharing at all.
function canShareScreen() {
  return typeof globalThis.navigator?.mediaDevices?.getDisplayMedia === 'function';
}

// An exam without the screen requirement is taken with camera and microphone where the screen
// cannot be shared; where it can, it is shared as in a written exam.
function screenUsed() {
  return page.exam?.screen_required !== false || canShareScreen();
}

function usedDevices() {
  return screenUsed() ? DEVICES : DEVICES.filter((kind) => kind !== 'screen');
}

function showExam() {
  const title = page.exam?.title?.trim() ?? '';
  $('exam-title').textContent = title;
  $('exam-title').hidden = title === '';
  // An oral exam says "examiner" throughout; its examiner's picture shows once they are there.
  setVariant(page.exam?.kind === 'oral' ? 'oral' : null);
  $('examiner-card').hidden = page.exam?.kind !== 'oral' || page.surveillant === null || page.ended;
  $('notice-id-check').hidden = page.exam?.id_check !== true;
  // Before anything is asked for: this exam needs a computer, and there is another way.
  const needsComputer = page.exam !== null && page.exam.screen_required !== false && !canShareScreen();
  $('needs-computer').hidden = !needsComputer;
  $('notice-form').hidden = needsComputer;
  const contact = page.exam?.contact?.trim();
  for (const element of [$('notice-contact'), $('alternative-contact')]) {
    if (contact) say(element, 'student.notice_contact', { contact });
    else say(element, 'student.notice_contact_unknown');
  }
}

// --- local tracks ----------------------------------------------------------

function useTrack(kind, track) {
  const old = page.tracks[kind];
  if (old && old !== track) old.stop();
  page.tracks[kind] = track;
  if (track) track.addEventListener('ended', () => trackEnded(kind, track), { once: true });
}

function trackEnded(kind, track) {
  if (page.tracks[kind] !== track || page.ended) return;
  if (page.step === 'check') {
    if (kind === 'screen') {
      $('screen-preview-box').hidden = true;
      setDeviceState('screen', 'pending', 'student.screen_pending');
      say($('screen-share'), 'student.screen_share_button');
    } else {
      setDeviceState(kind, 'problem', `student.device_stopped_${kind}`);
      $(`${kind}-retry`).hidden = false;
    }
    updateJoinButton();
    return;
  }
  renderStoppedDevices();
  sendStatus();
}

function stopMeters() {
  clearTimeout(page.silenceTimer);
  page.checkMeter?.stop();
  page.sentMeter?.stop();
  page.checkMeter = null;
  page.sentMeter = null;
}

// Camera light off: every track, meter and the media connection.
function stopDevices() {
  clearTimeout(page.renegotiateTimer);
  stopMeters();
  page.publisher?.close();
  page.publisher = null;
  for (const kind of DEVICES) {
    page.tracks[kind]?.stop();
    page.tracks[kind] = null;
  }
  for (const element of document.querySelectorAll('video, audio')) element.srcObject = null;
}

function stopEverything() {
  stopDevices();
  page.audioContext?.close().catch(() => {});
  page.audioContext = null;
}

// --- notice and another way ------------------------------------------------

function showNotice() {
  showExam();
  showStep('notice', { focus: page.step !== 'loading' });
}

function showAlternative() {
  const note = page.exam?.note?.trim() ?? '';
  $('alternative-note').textContent = note;
  $('alternative-note-card').hidden = note === '';
  $('alternative-no-note').hidden = note !== '';
  showStep('alternative');
}

function confirmNotice(event) {
  event.preventDefault();
  const input = $('student-name');
  const name = input.value.trim();
  const problem = name === '' ? 'student.name_missing' : name.length > NAME_MAX ? 'student.name_too_long' : null;
  const error = $('student-name-error');
  error.hidden = problem === null;
  input.setAttribute('aria-invalid', String(problem !== null));
  if (problem) {
    say(error, problem);
    input.focus();
    return;
  }
  say(error, null);
  page.name = name;
  // Made inside the click so the browser lets it play the message chime later.
  page.audioContext ??= new AudioContext();
  beginCheck();
}

// --- device check ----------------------------------------------------------

async function beginCheck() {
  showStep('check');
  measureUplink();
  setDeviceState('camera', 'pending', 'student.camera_waiting');
  setDeviceState('microphone', 'pending', 'student.microphone_waiting');
  $('screen-card').hidden = !screenUsed();
  if (!isLive(page.tracks.screen)) {
    $('screen-preview-box').hidden = true;
    say($('screen-share'), 'student.screen_share_button');
    setDeviceState('screen', 'pending', 'student.screen_pending');
  }
  updateJoinButton();
  const { camera, microphone } = await openCameraAndMicrophone();
  showCamera(camera);
  showMicrophone(microphone);
}

// Where the browser blocked a device: the way to unblock it in this browser's own settings.
function showUnblock(device, error) {
  const help = $(`${device}-unblock`);
  const blocked = error?.key === `student.error_${device}_blocked`;
  help.hidden = !blocked;
  say(help, blocked ? unblockKey(device) : null);
}

function showCamera({ track, error }) {
  useTrack('camera', track);
  $('camera-retry').hidden = Boolean(track);
  if (track) {
    $('camera-preview').srcObject = new MediaStream([track]);
    setDeviceState('camera', 'ok', 'student.camera_ok');
  } else {
    $('camera-preview').srcObject = null;
    setDeviceState('camera', 'problem', error?.key ?? 'student.error_camera_other');
  }
  showUnblock('camera', track ? null : error);
  updateJoinButton();
}

function showMicrophone({ track, error }) {
  useTrack('microphone', track);
  $('microphone-retry').hidden = Boolean(track);
  clearTimeout(page.silenceTimer);
  page.checkMeter?.stop();
  page.checkMeter = null;
  showUnblock('microphone', track ? null : error);
  if (!track) {
    $('microphone-meter').value = 0;
    setDeviceState('microphone', 'problem', error?.key ?? 'student.error_microphone_other');
    updateJoinButton();
    return;
  }
  page.heard = false;
  setDeviceState('microphone', 'pending', 'student.microphone_listening');
  page.checkMeter = new LevelMeter(page.audioContext, track, (level) => {
    $('microphone-meter').value = level;
    if (!page.heard && level >= HEARD_LEVEL) {
      page.heard = true;
      clearTimeout(page.silenceTimer);
      setDeviceState('microphone', 'ok', 'student.microphone_ok');
    }
  });
  page.silenceTimer = setTimeout(() => {
    if (!page.heard) setDeviceState('microphone', 'warning', 'student.error_microphone_silent');
  }, SILENCE_WARNING_MS);
  updateJoinButton();
}

async function retryCamera() {
  setDeviceState('camera', 'pending', 'student.camera_waiting');
  showCamera(await openCamera());
}

async function retryMicrophone() {
  setDeviceState('microphone', 'pending', 'student.microphone_waiting');
  showMicrophone(await openMicrophone());
}

async function shareScreen() {
  const button = $('screen-share');
  button.disabled = true;
  setDeviceState('screen', 'pending', 'student.screen_waiting');
  try {
    const track = await openWholeScreen();
    useTrack('screen', track);
    $('screen-preview').srcObject = new MediaStream([track]);
    $('screen-preview-box').hidden = false;
    setDeviceState('screen', 'ok', 'student.screen_ok');
    say(button, 'student.screen_share_again_button');
  } catch (error) {
    if (!isLive(page.tracks.screen)) $('screen-preview-box').hidden = true;
    setDeviceState('screen', 'problem', error instanceof DeviceError ? error.key : 'student.error_screen_other');
  } finally {
    button.disabled = false;
    updateJoinButton();
  }
}

// Advice only: a slow upload warns but never keeps the student out.
async function measureUplink() {
  const retry = $('uplink-retry');
  retry.hidden = true;
  page.uplinkKbps = null;
  setDeviceState('uplink', 'pending', 'student.uplink_measuring');
  try {
    page.uplinkKbps = await estimateUploadKbps();
  } catch (error) {
    console.warn('upload check failed', error);
    setDeviceState('uplink', 'warning', 'student.uplink_failed');
    retry.hidden = false;
    return;
  }
  renderUplink();
  retry.hidden = page.uplinkKbps >= RECOMMENDED_KBPS;
}

function renderUplink() {
  if (page.uplinkKbps === null) return;
  const speed = new Intl.NumberFormat(locale(), {
    maximumFractionDigits: page.uplinkKbps < 10000 ? 1 : 0,
  }).format(page.uplinkKbps / 1000);
  if (page.uplinkKbps >= RECOMMENDED_KBPS) setDeviceState('uplink', 'ok', 'student.uplink_ok');
  else setDeviceState('uplink', 'warning', 'student.uplink_slow');
  const status = $('uplink-status');
  status.dataset.i18nVars = JSON.stringify({ speed });
  translatePage(status);
}

function devicesReady() {
  return usedDevices().every((kind) => isLive(page.tracks[kind]));
}

function updateJoinButton() {
  const ready = devicesReady();
  $('join-button').disabled = !ready;
  $('join-hint').hidden = ready;
}

// --- joining, waiting and live ---------------------------------------------

async function join() {
  if (!devicesReady()) return;
  $('join-button').disabled = true;
  clearTimeout(page.silenceTimer);
  page.checkMeter?.stop();
  page.checkMeter = null;
  page.surveillant = null;
  page.surveillantId = null;
  page.queuePosition = null;
  page.participantId = null;
  page.admitted = false;
  page.mediaState = 'new';
  page.mediaEverConnected = false;
  page.mediaLive = false;
  page.mediaFailed = false;
  page.lastStatus = null;
  showSentMedia();
  renderSession();
  renderStoppedDevices();
  showStep('session');

  const signalling = new Signalling({ token: page.token, name: page.name, resume: page.kept?.resume });
  page.signalling = signalling;
  listen(signalling);
  try {
    await signalling.connect();
  } catch (error) {
    if (page.signalling === signalling) joinFailed(error);
  }
}

function joinFailed(error) {
  page.signalling = null;
  stopDevices();
  if (FINAL_LINK_ERRORS.has(error?.code)) {
    forgetPlaces();
    stopEverything();
    showProblem(DEAD_LINK_HEADINGS[error.code], errorKey(error));
    return;
  }
  // Back to the device check: the camera was switched off while nothing was sent.
  showProblem('student.problem_join_heading', errorKey(error), () => {
    page.audioContext ??= new AudioContext();
    beginCheck();
  });
}

function showProblem(headingKey, textKey, retry = null) {
  say($('problem-heading'), headingKey);
  say($('problem-text'), textKey);
  $('problem-devices').hidden = page.step !== 'session';
  page.retry = retry;
  $('problem-retry').hidden = retry === null;
  showStep('problem');
}

function listen(signalling) {
  signalling.addEventListener('state', (event) => signallingState(signalling, event.detail));
  signalling.on('welcome', (message) => welcomed(message));
  signalling.on('queue', (message) => {
    page.queuePosition = Number.isInteger(message.position) ? message.position : null;
    page.surveillant = null;
    page.surveillantId = null;
    page.mediaLive = false;
    renderSession();
  });
  signalling.on('assigned', (message) => {
    const name = message.surveillant?.name;
    const before = page.surveillant;
    page.surveillant = typeof name === 'string' && name.trim() !== '' ? name : '—';
    // Another desk (a hand-over): live again only once the server says the media reaches it.
    if (message.surveillant?.id !== page.surveillantId) page.mediaLive = false;
    page.surveillantId = message.surveillant?.id ?? null;
    // After a hand-over the new name is said, not just swapped in the banner.
    if (before !== null && before !== page.surveillant) {
      say($('surveillant-changed'), 'student.examiner_changed', { name: page.surveillant });
    }
    page.queuePosition = null;
    renderSession();
  });
  signalling.on('admitted', () => admitted());
  signalling.on('media_live', () => {
    page.mediaLive = true;
    page.mediaFailed = false;
    renderSession();
  });
  signalling.on('message', (message) => addMessage(String(message.from ?? ''), String(message.text ?? '')));
  signalling.on('talk', (message) => renderTalk(message.on === true, String(message.from ?? '')));
  signalling.on('quality', (message) => page.publisher?.applyQuality(message.encodings));
  signalling.on('session_ended', (message) => end('session', typeof message.reason === 'string' ? message.reason : ''));
  signalling.on('exam_ended', () => end('exam'));
  signalling.on('error', (message) => console.warn('server error', message.code));
}

function welcomed(welcome) {
  rememberPlace(page.token, welcome.resume, page.name);
  if (welcome.exam) {
    page.exam = { ...page.exam, ...welcome.exam };
    showExam();
  }
  // A resume keeps the place and the admission; a fresh place (the old one expired) starts unchecked.
  if (welcome.participant_id !== page.participantId) {
    page.participantId = welcome.participant_id;
    page.admitted = false;
    renderSession();
  }
  const iceServers = Array.isArray(welcome.ice_servers) ? welcome.ice_servers : [];
  if (!page.publisher) {
    page.publisher = new Publisher({
      signalling: page.signalling, iceServers, tracks: { ...page.tracks }, withScreen: screenUsed(),
    });
    page.publisher.addEventListener('state', (event) => mediaState(event.detail));
    page.publisher.addEventListener('remote', (event) => playRemote(event.detail));
  } else {
    page.publisher.iceServers = iceServers;
  }
  // Every welcome (first or after a reconnect) starts a fresh media session on the same tracks.
  negotiate();
  sendStatus(true);
}

async function negotiate() {
  clearTimeout(page.renegotiateTimer);
  const publisher = page.publisher;
  if (!publisher || page.ended) return;
  try {
    await publisher.negotiate();
  } catch (error) {
    console.warn('media negotiation failed', error?.code ?? error);
    if (publisher !== page.publisher || page.ended) return;
    page.mediaState = 'failed';
    page.mediaFailed = true;
    renderSession();
    // A dropped socket brings a new welcome, which renegotiates by itself.
    clearTimeout(page.renegotiateTimer);
    if (page.signalling?.state === 'open') {
      page.renegotiateTimer = setTimeout(negotiate, RENEGOTIATE_DELAY_MS);
    }
  }
}

function mediaState(state) {
  page.mediaState = state;
  if (state === 'connected') {
    page.mediaEverConnected = true;
    page.mediaFailed = false; // negotiated and connected: a failure before is over
  }
  if (state === 'negotiating') page.mediaLive = false;
  // 'failed' renegotiates at once; 'disconnected' gets a moment to recover by itself.
  const delay = { failed: 500, disconnected: DISCONNECTED_GRACE_MS }[state];
  clearTimeout(page.renegotiateTimer);
  if (delay !== undefined && page.signalling?.state === 'open') {
    page.renegotiateTimer = setTimeout(negotiate, delay);
  }
  renderSession();
}

function renderMediaStatus() {
  const element = $('media-status');
  const state = page.mediaState;
  const contact = page.exam?.contact?.trim();
  if (page.mediaFailed) {
    // Retried by negotiate(); until media flows, say so and who can help.
    if (contact) say(element, 'student.media_failed', { contact });
    else say(element, 'student.media_failed_no_contact');
  } else if (state === 'closed' || (state === 'connected' && (page.mediaLive || page.surveillant === null))) {
    say(element, null);
  } else if (state === 'failed' || state === 'disconnected' || (page.mediaEverConnected && state !== 'connected')) {
    say(element, 'student.media_reconnecting');
  } else say(element, 'student.connecting_media');
}

function playRemote({ talkBack, examiner }) {
  const audio = $('talk-back');
  audio.srcObject = new MediaStream([talkBack]);
  audio.play().catch(() => {});
  $('examiner-video').srcObject = new MediaStream([examiner]);
}

function signallingState(signalling, state) {
  if (signalling !== page.signalling || page.ended) return;
  const banner = $('connection-banner');
  if (state === 'reconnecting') {
    say($('connection-text'), 'student.connection_lost');
    banner.hidden = false;
  } else if (state === 'open') {
    banner.hidden = true;
  } else if (state === 'closed' && signalling.welcome !== null) {
    banner.hidden = true;
    const code = signalling.closeCode;
    if (code === 4000) end('exam');
    else if (code === 4002) end('session');
    else if (code === 4003) end('replaced');
    else if (code === 4004) end('media');
    else if (code === 4010) end('left');
    else end('lost');
  }
}

// Placed and watched, but not yet admitted: the surveillant checks the student's ID on the webcam.
function checkingIdentity() {
  return page.surveillant !== null && page.exam?.id_check === true && !page.admitted;
}

function admitted() {
  const wasChecking = checkingIdentity();
  page.admitted = true;
  renderSession();
  if (wasChecking && !page.ended) say($('admission'), 'student.admitted_status');
}

// Live: placed with a surveillant, and the server said this connection's media reaches them.
function watchedLive() {
  return page.surveillant !== null && page.mediaLive && page.mediaState === 'connected';
}

function renderSession() {
  const live = watchedLive();
  const connecting = page.surveillant !== null && !live;
  const checking = checkingIdentity() && live;
  document.body.classList.toggle('is-live', live && !page.ended);
  $('examiner-card').hidden = page.exam?.kind !== 'oral' || !live || page.ended;
  $('live-banner').hidden = !live || page.ended;
  const admission = $('admission');
  if (checking) say(admission, 'student.id_check_nothing_kept');
  else if (!live || admission.dataset.i18n === 'student.id_check_nothing_kept') say(admission, null);
  if (checking) {
    say($('live-text'), 'student.live_watched_by', { name: page.surveillant });
    say($('session-heading'), 'student.id_check_heading');
    say($('session-text'), 'student.id_check_text');
  } else if (live) {
    say($('live-text'), 'student.live_watched_by', { name: page.surveillant });
    say($('session-heading'), 'student.live_heading');
    say($('session-text'), 'student.live_text', { name: page.surveillant });
  } else if (connecting) {
    say($('session-heading'), 'student.connecting_heading');
    say($('session-text'), 'student.connecting_text', { name: page.surveillant });
  } else {
    say($('session-heading'), 'student.waiting_heading');
    if (page.queuePosition !== null) {
      say($('session-text'), 'student.waiting_queue', { position: page.queuePosition });
    } else {
      say($('session-text'), 'student.waiting_text');
    }
    renderTalk(false, '');
  }
  renderMediaStatus();
}

function renderTalk(on, name) {
  const element = $('talking');
  element.hidden = !on;
  if (on) say(element, 'student.talking', { name });
  else say(element, null);
}

function addMessage(from, text) {
  if (page.ended) return;
  const now = new Date();
  const item = document.createElement('li');
  item.className = 'message';
  const meta = document.createElement('p');
  meta.className = 'message-meta';
  const who = document.createElement('span');
  say(who, 'student.message_from', { name: from });
  const time = document.createElement('time');
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString(locale(), {
    hour: '2-digit',
    minute: '2-digit',
  });
  meta.append(who, ' · ', time);
  const body = document.createElement('p');
  body.className = 'message-text';
  body.textContent = text;
  item.append(meta, body);
  $('message-list').append(item);
  $('messages-empty').hidden = true;
  chime(page.audioContext);
}

function showSentMedia() {
  const { camera, screen, microphone } = page.tracks;
  $('sent-camera').srcObject = camera ? new MediaStream([camera]) : null;
  $('sent-screen').srcObject = screen ? new MediaStream([screen]) : null;
  page.sentMeter?.stop();
  page.sentMeter = null;
  if (isLive(microphone) && page.audioContext) {
    page.sentMeter = new LevelMeter(page.audioContext, microphone, (level) => {
      $('sent-microphone-meter').value = level;
    });
  }
}

function renderStoppedDevices() {
  const screenStopped = screenUsed() && !isLive(page.tracks.screen);
  $('screen-stopped').hidden = !screenStopped;
  const stopped = ['camera', 'microphone'].filter((kind) => !isLive(page.tracks[kind]));
  $('device-stopped').hidden = stopped.length === 0;
  if (stopped.length > 0) say($('device-stopped-text'), `student.device_stopped_${stopped[0]}`);
}

async function shareScreenAgain() {
  const fix = $('screen-again-fix');
  try {
    const track = await openWholeScreen();
    useTrack('screen', track);
    await page.publisher?.replaceTrack('screen', track);
    fix.hidden = true;
    showSentMedia();
  } catch (error) {
    say(fix, error instanceof DeviceError ? error.key : 'student.error_screen_other');
    fix.hidden = false;
  }
  renderStoppedDevices();
  sendStatus();
}

async function reopenDevices() {
  for (const kind of ['camera', 'microphone']) {
    if (isLive(page.tracks[kind])) continue;
    const { track, error } = kind === 'camera' ? await openCamera() : await openMicrophone();
    if (track) {
      useTrack(kind, track);
      await page.publisher?.replaceTrack(kind, track);
    } else {
      say($('device-stopped-text'), error.key);
      return;
    }
  }
  showSentMedia();
  renderStoppedDevices();
  sendStatus();
}

function sendStatus(force = false) {
  // Closing or reloading the tab hides it too, but that is not "another window or tab".
  if (!page.signalling || page.ended || page.unloading) return;
  const { camera, microphone, screen } = page.tracks;
  const status = {
    camera: isLive(camera) && camera.enabled,
    microphone: isLive(microphone) && microphone.enabled,
    screen: isLive(screen) && screen.enabled,
    page_hidden: document.visibilityState === 'hidden',
  };
  const key = JSON.stringify(status);
  if (!force && key === page.lastStatus) return;
  if (page.signalling.send('status', status)) page.lastStatus = key;
}

async function toggleHand() {
  const raised = !page.handRaised;
  const status = $('hand-status');
  try {
    await page.signalling?.request('hand', { raised });
    page.handRaised = raised;
    say(status, raised ? 'student.hand_raised_status' : 'student.hand_lowered_status');
  } catch (error) {
    say(status, errorKey(error));
  }
  const button = $('hand-button');
  button.classList.toggle('is-raised', page.handRaised);
  say(button, page.handRaised ? 'student.hand_lower' : 'student.hand_raise');
}

function leave() {
  const signalling = page.signalling;
  signalling?.send('leave');
  end('left');
  // The server closes with 4010 after `leave`; close ourselves if it does not.
  if (signalling) setTimeout(() => signalling.close(), LEAVE_CLOSE_DELAY_MS);
}

const ENDINGS = {
  left: ['student.ended_left_heading', 'student.ended_left_text'],
  session: ['student.ended_session_heading', 'student.ended_session_text'],
  exam: ['student.ended_exam_heading', 'student.ended_exam_text'],
  replaced: ['student.ended_replaced_heading', 'student.ended_replaced_text'],
  media: ['student.ended_media_heading', 'student.ended_media_text'],
  lost: ['student.ended_lost_heading', 'student.ended_lost_text'],
};

function end(kind, reason = '') {
  if (page.ended) return;
  page.ended = true;
  forgetPlaces();
  const signalling = page.signalling;
  stopEverything();
  if (kind !== 'left') signalling?.close();
  document.body.classList.remove('is-live');
  $('live-banner').hidden = true;
  $('connection-banner').hidden = true;
  const [heading, text] = ENDINGS[kind] ?? ENDINGS.lost;
  say($('ended-heading'), heading);
  say($('ended-text'), text);
  const reasonElement = $('ended-reason');
  reasonElement.hidden = reason.trim() === '';
  if (reason.trim() !== '') say(reasonElement, 'student.ended_reason', { reason: reason.trim() });
  showStep('ended');
}

// --- start -----------------------------------------------------------------

function wireControls() {
  wireLanguageButtons(renderUplink);
  $('notice-form').addEventListener('submit', confirmNotice);
  $('other-way-button').addEventListener('click', showAlternative);
  $('alternative-back').addEventListener('click', () => showStep('notice'));
  $('camera-retry').addEventListener('click', retryCamera);
  $('microphone-retry').addEventListener('click', retryMicrophone);
  $('screen-share').addEventListener('click', shareScreen);
  $('uplink-retry').addEventListener('click', measureUplink);
  $('join-button').addEventListener('click', join);
  $('screen-again').addEventListener('click', shareScreenAgain);
  $('device-again').addEventListener('click', reopenDevices);
  $('hand-button').addEventListener('click', toggleHand);
  $('leave-button').addEventListener('click', () => $('leave-dialog').showModal());
  $('leave-dialog').addEventListener('close', () => {
    if ($('leave-dialog').returnValue === 'leave') leave();
  });
  $('problem-retry').addEventListener('click', () => page.retry?.());
  $('resume-button').addEventListener('click', continueAfterReload);
  document.addEventListener('visibilitychange', () => sendStatus());
  window.addEventListener('pagehide', () => { page.unloading = true; });
  window.addEventListener('pageshow', () => { page.unloading = false; });
  keepTokenOnSkipLinks();
  // A link pasted into an open page changes only the fragment: start again with it.
  window.addEventListener('hashchange', () => {
    if (page.step !== 'session') location.reload();
  });
  window.addEventListener('beforeunload', (event) => {
    if (page.step === 'session' && !page.ended) event.preventDefault();
  });
}

async function start() {
  wireControls();
  setLanguage(currentLanguage());
  page.token = tokenFromFragment();
  if (page.token === null) {
    showProblem('student.problem_no_link_heading', 'student.problem_no_link_text');
    return;
  }
  page.exam = examFromToken(page.token);
  page.kept = keptPlace(page.token);
  // A dead link says so at once, before the notice and before any device is asked for.
  const status = await checkLink(page.token, page.kept?.resume);
  if (FINAL_LINK_ERRORS.has(status)) {
    forgetPlaces();
    showProblem(DEAD_LINK_HEADINGS[status], `common.error_${status}`);
    return;
  }
  if (page.kept) showResume();
  else showNotice();
}

// --- back after a reload ------------------------------------------------------

function showResume() {
  showExam();
  say($('resume-text'), 'student.resume_text', { name: page.kept.name });
  showStep('resume', { focus: false });
}

// One click brings the devices back (the screen picker needs the click) and rejoins the kept place.
async function continueAfterReload() {
  $('resume-button').disabled = true;
  page.name = page.kept.name;
  page.audioContext ??= new AudioContext();
  const screen = openWholeScreen().then((track) => ({ track }), () => ({ track: null }));
  const { camera, microphone } = await openCameraAndMicrophone();
  useTrack('camera', camera.track);
  useTrack('microphone', microphone.track);
  useTrack('screen', (await screen).track);
  if (devicesReady()) join();
  else beginCheck(); // the ordinary device check; its join still presents the kept place
}

start();
