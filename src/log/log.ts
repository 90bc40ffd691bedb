/**
 * Structured logs: one JSON object per line on stderr, with level, node,
 * and whatever the event carries (partition, epoch, ...).
 *
 * @module
 */

/** Severity, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** The accepted values of `--log-level`. */
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/** Writes structured events; create one with {@linkcode createLogger}. */
export interface Logger {
  debug(event: string, detail?: Record<string, unknown>): void;
  info(event: string, detail?: Record<string, unknown>): void;
  warn(event: string, detail?: Record<string, unknown>): void;
  error(event: string, detail?: Record<string, unknown>): void;
  /** Always written, whatever the level: elections, epoch changes, catch-ups, fencing. */
  always(event: string, detail?: Record<string, unknown>): void;
}

/** Options for {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Minimum level written. Defaults to "info". */
  level?: LogLevel;
  /** Where lines go. Defaults to process.stderr. */
  write?: (line: string) => void;
}

/** Creates a logger whose every line names `node`. */
export function createLogger(node: string, options: LoggerOptions = {}): Logger {
  const min = LEVELS[options.level ?? "info"];
  const write = options.write ?? ((line: string) => process.stderr.write(line));
  function emit(level: LogLevel, force: boolean, event: string, detail?: Record<string, unknown>): void {
    if (!force && LEVELS[level] < min) return;
    const record = { ts: new Date().toISOString(), level, node, event, ...detail };
    write(JSON.stringify(record, replaceBigInt) + "\n");
  }
  return {
    debug: (event, detail) => emit("debug", false, event, detail),
    info: (event, detail) => emit("info", false, event, detail),
    warn: (event, detail) => emit("warn", false, event, detail),
    error: (event, detail) => emit("error", false, event, detail),
    always: (event, detail) => emit("info", true, event, detail),
  };
}

function replaceBigInt(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Error) return { message: value.message, name: value.name };
  return value;
}
