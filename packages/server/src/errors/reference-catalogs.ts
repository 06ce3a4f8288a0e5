/**
 * Reads the codes that the reference platforms' public error catalogs name, from
 * `shared/reference/error-catalogs/`. Each file has its own layout, so each has its own pattern.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import type { ReferenceSource } from "./catalog.ts";

interface ReferenceFile {
  source: ReferenceSource;
  file: string;
  /** Captures one code per match in group 1. */
  pattern: RegExp;
}

const referenceFiles: readonly ReferenceFile[] = [
  { source: "hyperfleet", file: "hyperfleet.md", pattern: /^#### ([A-Z][A-Z0-9_]+)\s*$/gm },
  { source: "hopx", file: "hopx.md", pattern: /^#### ([A-Z][A-Z0-9\\_]+) \(\d{3}\)\s*$/gm },
  { source: "hexabase", file: "hexabase-kaas.md", pattern: /^### ([A-Z][A-Z0-9_]+)\s*$/gm },
  { source: "nullspace", file: "nullspace.md", pattern: /^([A-Za-z][A-Za-z0-9_]+) \| /gm },
  { source: "hzel", file: "hzel.md", pattern: /([A-Z][A-Z0-9_]+) — \d{3}/g },
];

export interface ReferenceCode {
  source: ReferenceSource;
  code: string;
}

export function readReferenceCodes(directory: string): ReferenceCode[] {
  const codes: ReferenceCode[] = [];
  for (const { source, file, pattern } of referenceFiles) {
    const text = readFileSync(path.join(directory, file), "utf8");
    const found = new Set<string>();
    for (const match of text.matchAll(pattern)) found.add((match[1] ?? "").replaceAll("\\", ""));
    for (const code of found) codes.push({ source, code });
  }
  return codes;
}
