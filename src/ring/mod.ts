/**
 * The SHA-256 consistent-hash ring.
 *
 * @module
 */
export * from "./ring.ts";
