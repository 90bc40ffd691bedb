/**
 * Flag parsing shared by the subcommands that take only flags: Node's
 * `parseArgs` (strict, no positionals), `--help`, and one error format.
 *
 * @module
 */
import { parseArgs, type ParseArgsConfig } from "node:util";

/** A subcommand's flags, for {@linkcode parseCommandFlags}. */
export interface CommandFlags<T extends NonNullable<ParseArgsConfig["options"]>> {
  /** "ringkv rolling": prefixes error messages. */
  name: string;
  /** Printed for `--help` (to stdout) and after an error (to stderr). */
  usage: string;
  /** The flags, `help` excluded (it is added). */
  options: T;
}

/**
 * Parses `argv`. Returns the flag values, or the exit code when the command
 * should end now: 0 after `--help`, 2 after a bad flag (both printed).
 */
export function parseCommandFlags<T extends NonNullable<ParseArgsConfig["options"]>>(
  argv: string[],
  command: CommandFlags<T>,
): ReturnType<typeof parseArgs<{ options: T; strict: true; allowPositionals: false }>>["values"] | number {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...command.options, help: { type: "boolean", default: false } }, strict: true, allowPositionals: false });
  } catch (error) {
    console.error(`${command.name}: ${(error as Error).message}\n\n${command.usage}`);
    return 2;
  }
  if ((parsed.values as { help?: boolean }).help === true) {
    console.log(command.usage);
    return 0;
  }
  return parsed.values as ReturnType<typeof parseArgs<{ options: T; strict: true; allowPositionals: false }>>["values"];
}
