/**
 * The in-memory key-value state machine.
 *
 * @module
 */
export * from "./store.ts";
