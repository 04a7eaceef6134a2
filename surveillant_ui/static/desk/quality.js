// The connection badge of a student: judged on real loss and delay, never on frame rate
// (a still picture sends few frames and is not a bad connection). Pure: no I/O, no DOM.

const STALL_MS = 3000;
const LOSS_FAIR = 0.02; // 2% of packets lost
const LOSS_POOR = 0.08;
const JITTER_FAIR_MS = 40; // interarrival jitter measured on this desk's side
const JITTER_POOR_MS = 120;
const SMOOTHING = 0.3; // weight of the newest second in the loss average

const ORDER = ['good', 'fair', 'poor', 'none'];

/**
 * `tracks`: the server's stats entry for the student (webcam, microphone: `packets`,
 * `packets_lost`, `ms_since_last_packet`); `previous`: what this returned last time (or
 * undefined); `jitterMs`: the jitter this desk measures on the student's tracks (or null).
 * Returns { quality: 'good'|'fair'|'poor'|'none', counts, loss }.
 */
export function assessQuality(status, tracks, previous, jitterMs = null) {
  let quality = 'good';
  const worsen = (level) => {
    if (ORDER.indexOf(level) > ORDER.indexOf(quality)) quality = level;
  };
  const stalled = (track, wanted) => wanted && typeof track?.ms_since_last_packet === 'number'
    && track.ms_since_last_packet > STALL_MS;
  if (stalled(tracks.webcam, status.camera !== false) || stalled(tracks.microphone, status.microphone !== false)) {
    worsen('none');
  }
  const counts = { received: 0, lost: 0 };
  for (const kind of ['webcam', 'microphone']) {
    counts.received += Number(tracks[kind]?.packets) || 0;
    counts.lost += Number(tracks[kind]?.packets_lost) || 0;
  }
  let loss = previous?.loss ?? 0;
  if (previous?.counts) {
    const received = Math.max(0, counts.received - previous.counts.received);
    const lost = Math.max(0, counts.lost - previous.counts.lost);
    if (received + lost > 0) loss = (1 - SMOOTHING) * loss + SMOOTHING * (lost / (received + lost));
  }
  if (loss >= LOSS_POOR) worsen('poor');
  else if (loss >= LOSS_FAIR) worsen('fair');
  if (typeof jitterMs === 'number') {
    if (jitterMs >= JITTER_POOR_MS) worsen('poor');
    else if (jitterMs >= JITTER_FAIR_MS) worsen('fair');
  }
  return { quality, counts, loss };
}
