/**
 * Direct access to a server's SQLite file from a test: to look at what is stored, or to put the
 * store in a state that a real failure would leave (a lock held, a corrupt row).
 */
import path from "node:path";
import SQLite from "better-sqlite3";
import { createKey } from "./http.ts";

export function openStoreFile(dataDir: string): SQLite.Database {
  const database = new SQLite(path.join(dataDir, "shoal.db"));
  database.pragma("busy_timeout = 5000");
  return database;
}

/**
 * Creates a key with `scopes` and moves it to another owner in the store, as no API can yet: for
 * that key, the server's sandboxes and all in them do not exist.
 *
 * @example
 *   const stranger = await createKeyOfAnotherOwner(server);
 *   const reply = await call(server, "GET", `/v1/sandboxes/${id}`, { key: stranger.secret }); // 404
 */
export async function createKeyOfAnotherOwner(
  server: { url: string; adminKey: string; dataDir: string },
  scopes: string[] = ["*"],
): Promise<{ id: string; secret: string }> {
  const key = await createKey(server, server.adminKey, scopes);
  const file = openStoreFile(server.dataDir);
  try {
    file.prepare("UPDATE api_keys SET owner_id = 'owner_other' WHERE id = ?").run(key.id);
  } finally {
    file.close();
  }
  return key;
}
