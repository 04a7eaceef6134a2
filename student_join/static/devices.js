// Local device access for the student: camera and microphone, the whole screen,
// and a level meter. Nothing here sends anything; it only opens devices when asked.

export class DeviceError extends Error {
  constructor(key, cause = undefined) {
    super(key, { cause });
    this.name = 'DeviceError';
    this.key = key; // catalogue key of the plain explanation and its fix
  }
}

const CAMERA_CONSTRAINTS = {
  width: { ideal: 1280 },
  height: { ideal: 720 },
  frameRate: { ideal: 15, max: 30 },
};

const MICROPHONE_CONSTRAINTS = {
  echoCancellation: true,
  noiseSuppression: true,
  autoGainControl: true,
};

const SCREEN_OPTIONS = {
  video: { displaySurface: 'monitor', frameRate: { ideal: 5, max: 15 } },
  audio: false,
  monitorTypeSurfaces: 'include',
  selfBrowserSurface: 'exclude',
  surfaceSwitching: 'exclude',
  preferCurrentTab: false,
};

export function devicesSupported() {
  return Boolean(globalThis.isSecureContext && navigator.mediaDevices?.getUserMedia);
}

export function screenSupported() {
  return Boolean(globalThis.isSecureContext && navigator.mediaDevices?.getDisplayMedia);
}

function explain(device, error) {
  switch (error?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return `student.error_${device}_blocked`;
    case 'NotFoundError':
    case 'OverconstrainedError':
      return `student.error_${device}_missing`;
    case 'NotReadableError':
    case 'AbortError':
      return `student.error_${device}_busy`;
    default:
      return `student.error_${device}_other`;
  }
}

async function openOne(device) {
  const constraints = device === 'camera'
    ? { video: CAMERA_CONSTRAINTS, audio: false }
    : { video: false, audio: MICROPHONE_CONSTRAINTS };
  try {
    const stream = await navigator.mediaDevices.getUserMedia(constraints);
    return { track: stream.getTracks()[0], error: null };
  } catch (error) {
    return { track: null, error: new DeviceError(explain(device, error), error) };
  }
}

// Camera and microphone in one permission prompt; when that fails, each on its
// own, so the student learns which of the two is the problem.
// Resolves with { camera, microphone } where each is { track, error }.
export async function openCameraAndMicrophone() {
  if (!devicesSupported()) {
    const error = new DeviceError('student.error_unsupported');
    return { camera: { track: null, error }, microphone: { track: null, error } };
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: CAMERA_CONSTRAINTS,
      audio: MICROPHONE_CONSTRAINTS,
    });
    return {
      camera: { track: stream.getVideoTracks()[0], error: null },
      microphone: { track: stream.getAudioTracks()[0], error: null },
    };
  } catch {
    const camera = await openOne('camera');
    const microphone = await openOne('microphone');
    return { camera, microphone };
  }
}

export async function openCamera() {
  if (!devicesSupported()) return { track: null, error: new DeviceError('student.error_unsupported') };
  return openOne('camera');
}

export async function openMicrophone() {
  if (!devicesSupported()) return { track: null, error: new DeviceError('student.error_unsupported') };
  return openOne('microphone');
}

// The whole screen, or a DeviceError. A window or a tab is refused (and stopped
// at once) where the browser tells which surface was chosen.
export async function openWholeScreen() {
  if (!screenSupported()) throw new DeviceError('student.error_unsupported');
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia(SCREEN_OPTIONS);
  } catch (error) {
    throw new DeviceError(
      error?.name === 'NotAllowedError' || error?.name === 'AbortError'
        ? 'student.error_screen_cancelled'
        : 'student.error_screen_other',
      error,
    );
  }
  for (const extra of stream.getAudioTracks()) extra.stop();
  const track = stream.getVideoTracks()[0];
  if (!track) throw new DeviceError('student.error_screen_other');
  const surface = track.getSettings?.().displaySurface;
  if (surface !== undefined && surface !== 'monitor') {
    track.stop();
    throw new DeviceError('student.error_screen_not_whole');
  }
  if ('contentHint' in track) track.contentHint = 'detail';
  return track;
}

// Which browser's settings hold a blocked permission: 'ios' (every browser on an iPhone or
// iPad is Safari underneath), 'firefox', 'safari' (macOS) or 'chrome' (Chrome, Edge, Chromium).
export function browserFamily(userAgent = globalThis.navigator?.userAgent ?? '', touchPoints = globalThis.navigator?.maxTouchPoints ?? 0) {
  if (/iPhone|iPad|iPod/.test(userAgent) || (/Macintosh/.test(userAgent) && touchPoints > 1)) return 'ios';
  if (/Firefox\//.test(userAgent)) return 'firefox';
  if (/Safari\//.test(userAgent) && !/Chrome\/|Chromium\/|Edg\//.test(userAgent)) return 'safari';
  return 'chrome';
}

// The catalogue key of the way to unblock `device` ('camera' or 'microphone') in this browser.
export function unblockKey(device) {
  return `student.unblock_${device}_${browserFamily()}`;
}

export function isLive(track) {
  return Boolean(track) && track.readyState === 'live';
}

// Sound level of one microphone track, 0..1 on a -60..0 dBFS scale, reported
// to onLevel about every animation frame. Reads the same track that is sent.
export class LevelMeter {
  #source;
  #analyser;
  #samples;
  #frame = 0;
  #onLevel;

  constructor(audioContext, track, onLevel) {
    this.#onLevel = onLevel;
    this.#source = audioContext.createMediaStreamSource(new MediaStream([track]));
    this.#analyser = audioContext.createAnalyser();
    this.#analyser.fftSize = 1024;
    this.#samples = new Float32Array(this.#analyser.fftSize);
    this.#source.connect(this.#analyser);
    this.#tick();
  }

  #tick = () => {
    this.#analyser.getFloatTimeDomainData(this.#samples);
    let sum = 0;
    for (const sample of this.#samples) sum += sample * sample;
    const rms = Math.sqrt(sum / this.#samples.length);
    const decibels = rms > 0 ? 20 * Math.log10(rms) : -100;
    this.#onLevel(Math.min(1, Math.max(0, (decibels + 60) / 60)));
    this.#frame = requestAnimationFrame(this.#tick);
  };

  stop() {
    cancelAnimationFrame(this.#frame);
    this.#source.disconnect();
    this.#analyser.disconnect();
  }
}
