// A rough upload estimate against our own server: a few POSTs of filler bytes
// (zeros, nothing of the student's), timed in the page. Takes at most ~4 s.

const FIRST_BYTES = 64 * 1024;
const MAX_BYTES = 1024 * 1024;
const BUDGET_MS = 4000;
const LONG_ENOUGH_MS = 700;

export const RECOMMENDED_KBPS = 1000;

// Resolves with the best measured upload rate in kbit/s; rejects when the server cannot be reached.
export async function estimateUploadKbps(url = '/join/upload-check') {
  const started = performance.now();
  let size = FIRST_BYTES;
  let best = 0;
  while (performance.now() - started < BUDGET_MS) {
    const body = new Uint8Array(size);
    const sent = performance.now();
    try {
      const response = await fetch(url, {
        method: 'POST',
        body,
        cache: 'no-store',
        credentials: 'omit',
        headers: { 'Content-Type': 'application/octet-stream' },
        signal: AbortSignal.timeout(2 * BUDGET_MS),
      });
      if (!response.ok) throw new Error(`upload check answered ${response.status}`);
      await response.arrayBuffer();
    } catch (error) {
      // Too slow to finish even one request in time: the rate is at most this.
      if (error?.name === 'TimeoutError') return Math.max(best, (size * 8) / (2 * BUDGET_MS));
      throw error;
    }
    const elapsed = Math.max(performance.now() - sent, 1);
    best = Math.max(best, (size * 8) / elapsed); // bits per ms = kbit/s
    if (elapsed >= LONG_ENOUGH_MS || size >= MAX_BYTES) break;
    size = Math.min(size * 4, MAX_BYTES);
  }
  return best;
}
