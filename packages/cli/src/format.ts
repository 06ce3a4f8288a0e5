/** Text for people: aligned tables, short timestamps, masked secrets. */

/** Rows under a header, each column as wide as its widest cell. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length)),
  );
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

/** `2026-12-01T10:34:12.345Z` as `2026-12-01 10:34:12`; `-` for null. */
export function shortTime(iso: string | null | undefined): string {
  if (iso === null || iso === undefined) return "-";
  return iso.replace("T", " ").replace(/\.\d+Z$|Z$/, "");
}

/** Enough of a key to recognise it, never enough to use it. */
export function maskSecret(secret: string | undefined): string | undefined {
  if (secret === undefined) return undefined;
  if (secret.length <= 12) return "****";
  return `${secret.slice(0, 7)}…${secret.slice(-4)}`;
}

/** `key: value` lines, keys aligned. */
export function fields(pairs: [string, string][]): string {
  const width = Math.max(...pairs.map(([key]) => key.length));
  return pairs.map(([key, value]) => `${`${key}:`.padEnd(width + 2)}${value}`).join("\n");
}
