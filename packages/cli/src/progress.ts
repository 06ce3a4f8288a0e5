/**
 * A transfer's progress bar on stderr (bytes, percentage when the size is known), redrawn at most
 * ten times a second; nothing when stderr is not a terminal.
 */
export interface ProgressUpdate {
  bytes: number;
  totalBytes: number | undefined;
}

export interface ProgressBar {
  update(progress: ProgressUpdate): void;
  /** Clears the bar's line. */
  done(): void;
}

const width = 30;

export function progressBar(label: string, stream: NodeJS.WriteStream = process.stderr): ProgressBar {
  if (!stream.isTTY) return { update() {}, done() {} };
  let last = 0;
  let shown = false;
  return {
    update({ bytes, totalBytes }) {
      const now = Date.now();
      if (now - last < 100 && bytes !== totalBytes) return;
      last = now;
      shown = true;
      stream.write(`\r\x1b[2K${renderProgress(label, bytes, totalBytes)}`);
    },
    done() {
      if (shown) stream.write("\r\x1b[2K");
    },
  };
}

export function renderProgress(label: string, bytes: number, totalBytes: number | undefined): string {
  if (totalBytes === undefined || totalBytes <= 0) return `${label} ${humanBytes(bytes)}`;
  const ratio = Math.min(1, bytes / totalBytes);
  const filled = Math.round(ratio * width);
  const bar = `${"█".repeat(filled)}${"░".repeat(width - filled)}`;
  return `${label} ${bar} ${String(Math.floor(ratio * 100)).padStart(3)}% ${humanBytes(bytes)}/${humanBytes(totalBytes)}`;
}

export function humanBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}
