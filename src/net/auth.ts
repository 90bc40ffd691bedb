/**
 * The peer handshake: mutual challenge–response with the cluster secret
 * (HMAC-SHA256), so only nodes that know the secret may send REPLICATE and
 * other peer-only commands. Pure functions; the secret never crosses the wire.
 *
 *   peer → server  AUTH HELLO <peerId> <clientNonce>
 *   server → peer  AUTH CHALLENGE <serverNonce> <proof(server)>
 *   peer → server  AUTH PROOF <proof(client)>
 *   server → peer  OK
 *
 * @module
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** Length in bytes of a nonce (hex-encoded on the wire). */
export const NONCE_BYTES = 16;

/** A fresh random nonce, hex. */
export function newNonce(): string {
  return randomBytes(NONCE_BYTES).toString("hex");
}

/** The parties' roles: each proof is bound to who makes it, so one cannot be replayed as the other. */
export type AuthRole = "server" | "client";

/** Fields a proof covers. */
export interface ProofInput {
  role: AuthRole;
  peerId: string;
  clientNonce: string;
  serverNonce: string;
}

/** HMAC-SHA256 over the role, the peer id and both nonces, hex. */
export function proof(secret: string, input: ProofInput): string {
  return createHmac("sha256", secret)
    .update(`ringkv-auth\n${input.role}\n${input.peerId}\n${input.clientNonce}\n${input.serverNonce}`)
    .digest("hex");
}

/** Compares a received proof with the expected one in constant time. */
export function proofMatches(secret: string, input: ProofInput, received: string): boolean {
  const expected = Buffer.from(proof(secret, input), "hex");
  if (!/^[0-9a-f]{64}$/.test(received)) return false;
  return timingSafeEqual(expected, Buffer.from(received, "hex"));
}

/** Is `text` a well-formed nonce? */
export function isNonce(text: string): boolean {
  return text.length === NONCE_BYTES * 2 && /^[0-9a-f]+$/.test(text);
}
