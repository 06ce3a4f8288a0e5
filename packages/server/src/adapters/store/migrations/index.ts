/**
 * Versioned migrations, applied in name order at start-up. A released migration never changes;
 * a schema change is a new entry.
 */
import type { Migration, MigrationProvider } from "kysely";
import { initial } from "./001-initial.ts";
import { sandboxes } from "./002-sandboxes.ts";
import { commands } from "./003-commands.ts";
import { fileRoots } from "./004-file-roots.ts";
import { templates } from "./005-templates.ts";
import { isolation } from "./006-isolation.ts";
import { snapshotMemory } from "./007-snapshot-memory.ts";
import { carriedCommands } from "./008-carried-commands.ts";

const migrations: Record<string, Migration> = {
  "001-initial": initial,
  "002-sandboxes": sandboxes,
  "003-commands": commands,
  "004-file-roots": fileRoots,
  "005-templates": templates,
  "006-isolation": isolation,
  "007-snapshot-memory": snapshotMemory,
  "008-carried-commands": carriedCommands,
};

export const migrationProvider: MigrationProvider = {
  getMigrations: async () => migrations,
};
