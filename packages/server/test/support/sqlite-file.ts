/**
 * Direct access to a server's SQLite file from a test: to look at what is stored, or to put the
 * store in a state that a real failure would leave (a lock held, a corrupt row).
 */
import path from "node:path";
import SQLite from "better-sqlite3";

export function openStoreFile(dataDir: string): SQLite.Database {
  const database = new SQLite(path.join(dataDir, "shoal.db"));
  database.pragma("busy_timeout = 5000");
  return database;
}
