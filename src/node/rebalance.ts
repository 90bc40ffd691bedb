/**
 * Leadership rebalancing, the pure decision. A cluster starts with its
 * leaders spread (each partition's preferred leader, see
 * src/cluster/election.ts), but failovers pile leadership onto the nodes
 * that stayed up. Once things are calm, each node moves one step towards
 * the spread, with nothing but the election it already has:
 *
 * - a candidate in line ahead of the partition's preferred node (not
 *   leading) stands again at the end of the line: free, nobody serves less;
 * - a leader whose next in line is the preferred node, caught up, hands
 *   over (the same drain-and-leave as a planned restart) and stands again
 *   at the end of the line.
 *
 * Line [L, X, P] (P preferred) becomes [L, P, X], then P leads: [P, X, L].
 *
 * @module
 */

/** What one node sees of one partition, for {@linkcode rebalanceStep}. */
export interface RebalanceView {
  /** This node's id. */
  self: string;
  /** The partition's preferred leader. */
  preferred: string | undefined;
  /** Is the preferred node registered (running)? */
  preferredRegistered: boolean;
  /** The election line, lowest (the leader's) first: node ids. */
  line: readonly string[];
  /** The published leader, if any. */
  leader: string | undefined;
  /** This node serves the partition as leader. */
  serving: boolean;
  /** ms since anything changed that rebalancing depends on (nodes, this partition's leader). */
  calmMs: number;
  /** (Leader only) the next in line is close enough behind to take over within a short drain. */
  successorCaughtUp: boolean;
}

/** Options for {@linkcode rebalanceStep}. */
export interface RebalanceOptions {
  /** How long things must have been calm before a step (ms). */
  afterMs: number;
}

/** What this node should do for one partition now. */
export type RebalanceStep = "none" | "requeue" | "hand_over";

/** What {@linkcode rebalanceWanted} needs: the view without the election line and progress. */
export type RebalanceSummary = Pick<RebalanceView, "self" | "preferred" | "preferredRegistered" | "leader" | "calmMs">;

/**
 * May this node have a step to take for the partition? False settles it
 * without reading the election line (which costs a ZooKeeper round trip).
 */
export function rebalanceWanted(view: RebalanceSummary, options: RebalanceOptions): boolean {
  const { self, preferred } = view;
  return preferred !== undefined && preferred !== self && view.preferredRegistered && view.leader !== preferred &&
    view.calmMs >= options.afterMs;
}

/** The one step this node takes for one partition now; "none" in all doubt. */
export function rebalanceStep(view: RebalanceView, options: RebalanceOptions): RebalanceStep {
  const { self, preferred, line, leader } = view;
  if (preferred === undefined || !rebalanceWanted(view, options)) return "none";
  const ours = line.indexOf(self);
  const theirs = line.indexOf(preferred);
  if (ours < 0 || theirs < 0) return "none";
  if (view.serving) {
    return leader === self && ours === 0 && theirs === 1 && view.successorCaughtUp ? "hand_over" : "none";
  }
  // Not leading: step aside only from behind the leader (the head of the line is about to lead).
  return ours >= 1 && ours < theirs ? "requeue" : "none";
}
