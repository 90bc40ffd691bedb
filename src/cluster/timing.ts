/**
 * Session timing: when a node must stop leading, how often to probe
 * ZooKeeper, how long a request may take.
 *
 * node-zookeeper-client has no session timer and no request timeout, and a
 * frozen server gives no event at all. So the cluster layer keeps its own
 * lease: the session was certainly alive when a request the server answered
 * was *sent*; ZooKeeper expires it no earlier than `sessionTimeout` after
 * that. Stopping `margin` earlier leaves room for clock rate and scheduling.
 *
 * @module
 */

/** The margin is at least this many ms... */
export const MIN_MARGIN_MS = 300;
/** ...and at least this fraction of the session timeout... */
export const MARGIN_FRACTION = 0.25;
/** ...but never more than this fraction, so tiny timeouts still leave a lease. */
export const MAX_MARGIN_FRACTION = 0.5;
/** Probes per session timeout (a frozen server only shows as missing answers). */
export const PROBES_PER_TIMEOUT = 4;
/** After a deadline, contact this fresh (fraction of the lease) counts as recovery; avoids flapping. */
export const RECOVERY_FRACTION = 0.5;
/** Shortest request timeout. */
export const MIN_REQUEST_TIMEOUT_MS = 500;
/** How often the deadline is checked. */
export const DEADLINE_TICK_MS = 50;

/** How long before ZooKeeper could expire the session a node stops leading. */
export function deadlineMargin(sessionTimeoutMs: number): number {
  assertTimeout(sessionTimeoutMs);
  const wanted = Math.max(MIN_MARGIN_MS, Math.ceil(sessionTimeoutMs * MARGIN_FRACTION));
  return Math.min(wanted, Math.floor(sessionTimeoutMs * MAX_MARGIN_FRACTION));
}

/** The lease: ms after the send time of the last answered request during which leading is allowed. */
export function leaseMs(sessionTimeoutMs: number): number {
  const lease = sessionTimeoutMs - deadlineMargin(sessionTimeoutMs);
  if (!(lease > 0)) throw new Error(`lease must be positive (session timeout ${sessionTimeoutMs})`);
  return lease;
}

/** Interval between liveness probes. */
export function probeIntervalMs(sessionTimeoutMs: number): number {
  assertTimeout(sessionTimeoutMs);
  return Math.max(DEADLINE_TICK_MS, Math.floor(sessionTimeoutMs / PROBES_PER_TIMEOUT));
}

/** How long one ZooKeeper request may take before the caller gives up on it. */
export function requestTimeoutMs(sessionTimeoutMs: number): number {
  assertTimeout(sessionTimeoutMs);
  return Math.max(MIN_REQUEST_TIMEOUT_MS, Math.floor(sessionTimeoutMs / 2));
}

/** Retry delay after `failures` consecutive failures: doubling from 50 ms, capped. */
export function backoffMs(failures: number, capMs: number): number {
  const base = 50 * 2 ** Math.min(Math.max(failures - 1, 0), 16);
  return Math.min(base, capMs);
}

function assertTimeout(sessionTimeoutMs: number): void {
  if (!Number.isFinite(sessionTimeoutMs) || sessionTimeoutMs <= 0) {
    throw new Error(`session timeout must be a positive number of ms, got ${sessionTimeoutMs}`);
  }
}
