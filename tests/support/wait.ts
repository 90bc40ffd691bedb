/**
 * Waiting for a condition with a deadline, for tests that watch processes
 * come and go (never a bare sleep that passes by luck).
 *
 * @module
 */

/** How often {@linkcode waitUntil} looks again. */
const POLL_MS = 50;

/** Polls `check` until it holds (true) or `timeoutMs` have passed (false). */
export async function waitUntil(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  return true;
}
