/**
 * Child processes and temp dirs this process owns, cleaned up on exit.
 *
 * @module
 */
export * from "./owned.ts";
