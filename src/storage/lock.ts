/**
 * The data directory lock: two nodes on one data directory would corrupt
 * each other's logs, so the second one refuses to start.
 *
 * @module
 */
import fs from "node:fs";
import path from "node:path";

/** Held lock; release it on clean shutdown (a crash leaves a stale lock that the next start detects). */
export interface DataDirLock {
  release(): void;
}

/** Takes `<dir>/LOCK`, creating `dir`; throws if a live process holds it. */
export function lockDataDir(dir: string): DataDirLock {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "LOCK");
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: "wx" });
      return {
        release() {
          try {
            if (fs.readFileSync(file, "utf8").trim() === String(process.pid)) fs.unlinkSync(file);
          } catch {
            // Already gone: nothing to release.
          }
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const holder = Number.parseInt(fs.readFileSync(file, "utf8"), 10);
      if (Number.isInteger(holder) && holder !== process.pid && processAlive(holder)) {
        throw new Error(`data directory ${dir} is in use by process ${holder} (remove ${file} if that is not a ringkv node)`);
      }
      fs.unlinkSync(file); // stale: its process is gone (crash or kill -9)
    }
  }
  throw new Error(`could not lock data directory ${dir}`);
}

/** Does process `pid` exist (also when it belongs to another user)? */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
