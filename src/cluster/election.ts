/**
 * Pure election logic: candidate znode names and who leads.
 *
 * The recipe: candidates are ephemeral-sequential znodes; the lowest sequence
 * leads; every other candidate watches only its predecessor (no herd); on
 * any event everyone re-lists and re-checks. The sequence number is the
 * epoch (plus one: the counter starts at 0, and epoch 0 means "none" to
 * the replication layer): ZooKeeper's per-parent counter only grows, and a
 * later leader is always the lowest of candidates created later, so its
 * epoch is higher.
 *
 * A candidate's name carries its node id and session id
 * (`c_<id>_<session>_<seq>`), so a create whose reply was lost (connection
 * loss, timeout) can be recognised as ours, and a restarted process with
 * the same id never mistakes the old session's candidate for its own.
 *
 * @module
 */

/** Digits ZooKeeper appends to a sequential znode name. */
export const SEQUENCE_DIGITS = 10;

/** Epoch = sequence + this (sequences start at 0; epochs at 1). */
export const EPOCH_OFFSET = 1;

/** The epoch a candidate with sequence `seq` leads with. */
export function epochOf(seq: number): number {
  return seq + EPOCH_OFFSET;
}

/** One candidate znode of an election, parsed. */
export interface Candidate {
  /** The znode's name (last path component). */
  name: string;
  /** Sequence number = epoch. */
  seq: number;
  /** Node id, if the name follows our pattern. */
  id?: string;
  /** Session id (16 hex digits), if the name follows our pattern. */
  session?: string;
}

const OUR_PATTERN = /^c_(.+)_([0-9a-f]{16})_(\d{10})$/;
const SEQUENCE_PATTERN = /(\d{10})$/;

/** The name to create (ZooKeeper appends the sequence): `c_<id>_<session>_`. */
export function candidatePrefix(id: string, session: string): string {
  if (!/^[0-9a-f]{16}$/.test(session)) throw new Error(`session id must be 16 hex digits, got ${JSON.stringify(session)}`);
  return `c_${id}_${session}_`;
}

/** Parses a candidate znode name; undefined if it has no sequence suffix. */
export function parseCandidate(name: string): Candidate | undefined {
  const ours = OUR_PATTERN.exec(name);
  if (ours !== null) return { name, id: ours[1], session: ours[2], seq: Number(ours[3]) };
  const sequence = SEQUENCE_PATTERN.exec(name);
  if (sequence === null) return undefined;
  return { name, seq: Number(sequence[1]) };
}

/** Parses and sorts children by sequence (getChildren is unordered); names without a sequence are returned apart. */
export function sortCandidates(names: readonly string[]): { candidates: Candidate[]; unparsed: string[] } {
  const candidates: Candidate[] = [];
  const unparsed: string[] = [];
  for (const name of names) {
    const candidate = parseCandidate(name);
    if (candidate === undefined) unparsed.push(name);
    else candidates.push(candidate);
  }
  candidates.sort((a, b) => a.seq - b.seq || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { candidates, unparsed };
}

/** Who we are in an election. */
export interface ElectionSelf {
  id: string;
  /** Our session id (16 hex digits). */
  session: string;
  /** The candidate name we believe is ours, if any (kept in preference, so an announced epoch stays). */
  known?: string;
}

/** The outcome of one election check. */
export type ElectionDecision =
  /** None of the children is ours: create a candidate. */
  | { kind: "absent"; ordered: Candidate[] }
  /** Ours is the lowest: lead with `own.seq`. */
  | { kind: "lead"; own: Candidate; extras: Candidate[]; ordered: Candidate[] }
  /** Someone is lower: watch `predecessor` only. */
  | { kind: "follow"; own: Candidate; predecessor: Candidate; extras: Candidate[]; ordered: Candidate[] };

/**
 * Decides from the election's children: ours is `known` if still present,
 * else our lowest; other candidates of our session (`extras`, from creates
 * whose reply was lost) are to be deleted and are ignored for the order.
 */
export function decideElection(children: readonly string[], self: ElectionSelf): ElectionDecision {
  const { candidates } = sortCandidates(children);
  const ours = candidates.filter((c) => c.id === self.id && c.session === self.session);
  if (ours.length === 0) return { kind: "absent", ordered: candidates };
  const own = ours.find((c) => c.name === self.known) ?? ours[0];
  const extras = ours.filter((c) => c !== own);
  const ordered = candidates.filter((c) => !extras.includes(c));
  const index = ordered.indexOf(own);
  if (index < 0) throw new Error("election: own candidate missing from the order");
  if (index === 0) return { kind: "lead", own, extras, ordered };
  return { kind: "follow", own, predecessor: ordered[index - 1], extras, ordered };
}

/**
 * Each partition's preferred first leader, spreading leadership evenly: the
 * partitions in name order each take the member that prefers the fewest so
 * far (ties: the first member counted from the partition's position, so
 * that equal groups do not all pick their lowest id). Every node computes
 * the same answer from the same ring.
 */
export function preferredLeaders(partitions: Readonly<Record<string, readonly string[]>>): Map<string, string> {
  const load = new Map<string, number>();
  const preferred = new Map<string, string>();
  const names = Object.keys(partitions).sort();
  for (let p = 0; p < names.length; p++) {
    const members = partitions[names[p]];
    if (members.length === 0) continue;
    let best = members[p % members.length];
    for (let i = 0; i < members.length; i++) {
      const member = members[(p + i) % members.length];
      if ((load.get(member) ?? 0) < (load.get(best) ?? 0)) best = member;
    }
    load.set(best, (load.get(best) ?? 0) + 1);
    preferred.set(names[p], best);
  }
  return preferred;
}
