/**
 * The client protocol's data model: what a parsed request and a reply look
 * like, independent of the dialect (plain line, JSON, RESP2) they came in.
 *
 * @module
 */

/** The three dialects that share one port; the first byte of a request picks one. */
export type Dialect = "line" | "json" | "resp";

/** Error codes of the contract (PROTOCOL.md "Errors"). */
export type ErrorCode =
  | "BAD_REQUEST"
  | "UNKNOWN_COMMAND"
  | "TOO_LARGE"
  | "UNAVAILABLE"
  | "TIMEOUT"
  | "FORBIDDEN"
  | "NOT_LEADER"
  | "INTERNAL";

/** A client command after parsing, with aliases resolved (SET → PUT, DEL → DELETE). */
export type Request =
  | { dialect: Dialect; command: "PUT"; key: string; value: Buffer }
  | { dialect: Dialect; command: "GET"; key: string }
  | { dialect: Dialect; command: "DELETE"; key: string }
  | { dialect: Dialect; command: "EXISTS"; keys: string[] }
  | {
    dialect: Dialect;
    command:
      | "PING"
      | "HELP"
      | "INFO"
      | "RING"
      | "QUIT"
      | "READONLY"
      | "READWRITE";
  }
  /**
   * A peer-only command (see PEER_COMMANDS in parse.ts: AUTH, REPLICATE, SNAPSHOT, FWD):
   * `name` upper-cased, `rest` the bytes after "NAME " (empty if none).
   * The server answers ERR FORBIDDEN unless the connection authenticated as a peer.
   */
  | { dialect: Dialect; command: "PEER"; name: string; rest: Buffer }
  /** Something that failed to parse: the server answers with this error and changes nothing. */
  | { dialect: Dialect; command: "INVALID"; code: ErrorCode; message: string };

/** A reply before encoding; {@linkcode encodeReply} turns it into bytes of the request's dialect. */
export type Reply =
  | { type: "ok" }
  | { type: "value"; value: Buffer }
  | { type: "not_found" }
  | { type: "deleted" }
  | { type: "pong" }
  | { type: "bye"; reason?: string }
  /** An integer (RESP `:n`; line and JSON print the number). Used by EXISTS. */
  | { type: "integer"; value: number }
  /** HELP: one human-readable line. */
  | { type: "text"; text: string }
  /** INFO and RING: one JSON object. */
  | { type: "json"; value: unknown }
  /** A peer-protocol reply line, written verbatim (peer connections speak the line dialect). */
  | { type: "raw"; line: string }
  | { type: "error"; code: ErrorCode; message: string };
