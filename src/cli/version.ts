/**
 * The package version, read once from package.json.
 *
 * @module
 */
import fs from "node:fs";

/** ringkv's version (package.json). */
export const VERSION: string = readVersion();

function readVersion(): string {
  try {
    const url = new URL("../../../package.json", import.meta.url);
    return (JSON.parse(fs.readFileSync(url, "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}
