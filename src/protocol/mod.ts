/**
 * The client protocol, pure: bytes → {@linkcode Frame} ({@linkcode Framer}),
 * Frame → {@linkcode Request} ({@linkcode parseFrame}), {@linkcode Reply} →
 * bytes ({@linkcode encodeReply}). Plain lines, JSON lines and RESP2 share
 * one port; the first byte of each request picks its dialect.
 *
 * @module
 */

export type * from "./types.ts";
export { DEFAULT_MAX_LINE, Framer, MAX_RESP_ARGS, MAX_RESP_HEADER_BYTES } from "./framer.ts";
export type { Frame, FramerOptions } from "./framer.ts";
export {
  MAX_EXISTS_KEYS,
  MAX_KEY_BYTES,
  MAX_QUOTED_WORD_CHARS,
  parseFrame,
  PEER_COMMANDS,
  validateKey,
} from "./parse.ts";
export type { ParseOptions } from "./parse.ts";
export { encodeReplies, encodeReply, HELP_TEXT, LINE_BREAK_IN_VALUE_MESSAGE, type ReplyItem } from "./encode.ts";
