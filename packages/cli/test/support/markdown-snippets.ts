/**
 * The fenced code blocks of a Markdown file, with their language and the words after it
 * (```sh server). A `text output` block that follows a runnable block is what it must print.
 */

export interface Snippet {
  readonly language: string;
  /** Words after the language: `server`, `install`. */
  readonly tags: readonly string[];
  readonly code: string;
  /** 1-based line of the opening fence, for messages. */
  readonly line: number;
  /** The contents of the `text output` block right after it, if any. */
  expectedOutput?: string;
}

export function snippetsOf(markdown: string): Snippet[] {
  const lines = markdown.split("\n");
  const snippets: Snippet[] = [];
  for (let index = 0; index < lines.length; index++) {
    const open = /^```(\S+)(.*)$/.exec(lines[index] ?? "");
    if (!open) continue;
    const start = index;
    const body: string[] = [];
    for (index++; index < lines.length && lines[index] !== "```"; index++) body.push(lines[index] ?? "");
    if (index >= lines.length) throw new Error(`the block opened at line ${start + 1} is never closed`);
    const language = open[1] ?? "";
    const tags = (open[2] ?? "").trim().split(/\s+/).filter(Boolean);
    const code = `${body.join("\n")}\n`;
    const previous = snippets.at(-1);
    if (language === "text" && tags.includes("output")) {
      if (!previous || previous.expectedOutput !== undefined) {
        throw new Error(`the output block at line ${start + 1} follows no runnable block`);
      }
      previous.expectedOutput = code;
      continue;
    }
    snippets.push({ language, tags, code, line: start + 1 });
  }
  return snippets;
}

/**
 * Whether every line of `expected` appears in `actual`, in order; `…` in an expected line stands
 * for any text (ids, times), so that the docs can show real output without pinning it.
 */
export function matchesOutput(actual: string, expected: string): boolean {
  const actualLines = actual.split("\n");
  let from = 0;
  for (const line of expected.trimEnd().split("\n")) {
    const pattern = new RegExp(`^${line.split("…").map(escapeRegExp).join(".*")}$`);
    const found = actualLines.findIndex((candidate, index) => index >= from && pattern.test(candidate));
    if (found < 0) return false;
    from = found + 1;
  }
  return true;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
