// The student's media connection to the SFU: one RTCPeerConnection that sends
// webcam, screen and microphone and receives the surveillant's voice and, in an
// oral exam, the examiner's video. Renegotiates from scratch when asked.
//
// Transceivers, in the order docs/PROTOCOL.md fixes: webcam video sendonly,
// screen video sendonly, microphone audio sendonly, talk-back audio recvonly,
// examiner video recvonly; VP8 and Opus only, all bundled. Without screen sharing (a
// phone or tablet, in an exam that does not require the screen) the screen transceiver is
// left out and the server lays the offer out without it. aiortc does no
// trickle ICE, so the offer goes out once gathering is complete.

const ICE_GATHERING_TIMEOUT_MS = 8000;
const OFFER_TIMEOUT_MS = 30000;
const QUALITY_FIELDS = ['maxBitrate', 'maxFramerate', 'scaleResolutionDownBy'];
// pc.close() fires no event, so a peer connection closed from outside is only seen by looking.
const CLOSED_CHECK_MS = 2000;

function codecsOnly(kind, mimeType) {
  const codecs = globalThis.RTCRtpReceiver?.getCapabilities?.(kind)?.codecs ?? [];
  return codecs.filter((codec) => codec.mimeType.toLowerCase() === mimeType);
}

function preferCodecs(transceiver, kind, mimeType) {
  const codecs = codecsOnly(kind, mimeType);
  if (codecs.length > 0 && typeof transceiver.setCodecPreferences === 'function') {
    transceiver.setCodecPreferences(codecs);
  }
}

function iceGatheringComplete(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ICE_GATHERING_TIMEOUT_MS);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === 'complete') done();
    }
    pc.addEventListener('icegatheringstatechange', check);
  });
}

function validEncoding(wanted) {
  const encoding = {};
  for (const field of QUALITY_FIELDS) {
    const value = wanted?.[field];
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) continue;
    if (field === 'scaleResolutionDownBy' && value < 1) continue;
    encoding[field] = value;
  }
  // `maxHeight` (the grid's screen thumbnail): the scale that gives that many lines here.
  if (typeof wanted?.maxHeight === 'number' && wanted.maxHeight > 0) encoding.maxHeight = wanted.maxHeight;
  return encoding;
}

function scaleFor(track, maxHeight) {
  const height = track?.getSettings?.().height;
  return typeof height === 'number' && height > maxHeight ? height / maxHeight : 1;
}

// Events: 'state' (detail: the peer connection's connectionState, or 'negotiating'),
//         'remote' (detail: { talkBack: MediaStreamTrack, examiner: MediaStreamTrack }).
export class Publisher extends EventTarget {
  #signalling;
  #iceServers;
  #tracks;
  #withScreen;
  #pc = null;
  #senders = {};
  #quality = null;
  #running = false;
  #again = false;
  #closed = false;
  #watch = null;

  // withScreen false: no screen transceiver at all (a phone or tablet in an exam that does
  // not require the screen); the server then lays the offer out without it.
  constructor({ signalling, iceServers = [], tracks, withScreen = true }) {
    super();
    this.#signalling = signalling;
    this.#iceServers = iceServers;
    this.#tracks = { ...tracks };
    this.#withScreen = withScreen;
  }

  get connectionState() {
    return this.#pc?.connectionState ?? 'new';
  }

  set iceServers(servers) {
    this.#iceServers = Array.isArray(servers) ? servers : [];
  }

  // Negotiates a new peer connection on the same local tracks, replacing any old one.
  // Calls while one is under way coalesce into one more round.
  async negotiate() {
    if (this.#closed) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = true;
    try {
      do {
        this.#again = false;
        await this.#negotiateOnce();
      } while (this.#again && !this.#closed);
    } finally {
      this.#running = false;
    }
  }

  async #negotiateOnce() {
    this.#closePeer();
    this.#emit('state', 'negotiating');
    const pc = new RTCPeerConnection({ iceServers: this.#iceServers, bundlePolicy: 'max-bundle' });
    this.#pc = pc;

    const webcam = pc.addTransceiver(this.#tracks.camera ?? 'video', { direction: 'sendonly' });
    const screen = this.#withScreen ? pc.addTransceiver(this.#tracks.screen ?? 'video', { direction: 'sendonly' }) : null;
    const microphone = pc.addTransceiver(this.#tracks.microphone ?? 'audio', { direction: 'sendonly' });
    const talkBack = pc.addTransceiver('audio', { direction: 'recvonly' });
    const examiner = pc.addTransceiver('video', { direction: 'recvonly' });
    for (const transceiver of [webcam, screen, examiner]) if (transceiver) preferCodecs(transceiver, 'video', 'video/vp8');
    for (const transceiver of [microphone, talkBack]) preferCodecs(transceiver, 'audio', 'audio/opus');
    this.#senders = { camera: webcam.sender, screen: screen?.sender, microphone: microphone.sender };

    pc.addEventListener('connectionstatechange', () => {
      if (pc === this.#pc) this.#emit('state', pc.connectionState);
    });
    this.#watchPeer(pc);
    this.#emit('remote', { talkBack: talkBack.receiver.track, examiner: examiner.receiver.track });

    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc);
    if (pc !== this.#pc) return;
    const answer = await this.#signalling.request('offer', { sdp: pc.localDescription.sdp }, OFFER_TIMEOUT_MS);
    if (pc !== this.#pc) return;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    if (this.#quality) await this.applyQuality(this.#quality);
  }

  // The server's `quality` push: encodings for the webcam and screen senders.
  async applyQuality(encodings) {
    this.#quality = encodings;
    for (const name of ['webcam', 'screen']) {
      const sender = name === 'webcam' ? this.#senders.camera : this.#senders.screen;
      const wanted = validEncoding(encodings?.[name]);
      if (!sender || Object.keys(wanted).length === 0) continue;
      const parameters = sender.getParameters();
      if (!parameters.encodings || parameters.encodings.length === 0) continue;
      const encoding = parameters.encodings[0];
      for (const field of QUALITY_FIELDS) {
        if (field in wanted) encoding[field] = wanted[field];
        else delete encoding[field];
      }
      if (wanted.maxHeight) encoding.scaleResolutionDownBy = scaleFor(sender.track, wanted.maxHeight);
      try {
        await sender.setParameters(parameters);
      } catch (error) {
        console.warn('quality not applied', name, error);
      }
    }
  }

  // Swap one local track (after sharing the screen again) without renegotiating.
  async replaceTrack(kind, track) {
    this.#tracks[kind] = track;
    const sender = this.#senders[kind];
    if (sender) await sender.replaceTrack(track);
  }

  close() {
    this.#closed = true;
    this.#closePeer();
    this.#emit('state', 'closed');
  }

  // A peer connection closed behind our back reports 'failed', which renegotiates.
  #watchPeer(pc) {
    clearInterval(this.#watch);
    this.#watch = setInterval(() => {
      // While a negotiation runs, it fails by itself on a closed peer (and is retried).
      if (pc !== this.#pc || this.#running) return;
      if (pc.signalingState === 'closed' || pc.connectionState === 'closed') {
        clearInterval(this.#watch);
        this.#watch = null;
        this.#emit('state', 'failed');
      }
    }, CLOSED_CHECK_MS);
  }

  #closePeer() {
    clearInterval(this.#watch);
    this.#watch = null;
    const pc = this.#pc;
    this.#pc = null;
    this.#senders = {};
    if (pc) pc.close();
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
