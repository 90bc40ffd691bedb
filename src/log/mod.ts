/**
 * Structured JSON-line logging.
 *
 * @module
 */
export * from "./log.ts";
