/**
 * Routing: key → partition → serve here or forward to the leader.
 *
 * @module
 */
export * from "./router.ts";
