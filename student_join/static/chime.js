// A soft two-note chime for a new message, made with WebAudio (no audio files).

export function chime(audioContext) {
  if (!audioContext || audioContext.state === 'closed') return;
  if (audioContext.state === 'suspended') audioContext.resume().catch(() => {});
  const start = audioContext.currentTime + 0.02;
  for (const [offset, frequency] of [[0, 660], [0.16, 880]]) {
    const oscillator = audioContext.createOscillator();
    const gain = audioContext.createGain();
    oscillator.type = 'sine';
    oscillator.frequency.value = frequency;
    gain.gain.setValueAtTime(0, start + offset);
    gain.gain.linearRampToValueAtTime(0.08, start + offset + 0.03);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.45);
    oscillator.connect(gain).connect(audioContext.destination);
    oscillator.start(start + offset);
    oscillator.stop(start + offset + 0.5);
  }
}
