/**
 * The bash context driver: one bash reading commands on its stdin. Each call is a small script
 * that reads the code from a here-document, `eval`s it in the shell itself (so `cd`, variables,
 * functions and aliases stay) with stdin from /dev/null, and writes the end markers with the
 * exit status. Protocol in ./protocol.ts.
 *
 * `exit` ends the shell: the call answers its status and the context starts afresh on the next call.
 */
import { randomBytes } from "node:crypto";
import type { CodeDriver, DriverCall } from "./protocol.ts";

/** A shell word that stands for `text` exactly. */
export function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/** A here-document terminator that no line of `code` equals. */
function terminator(code: string): string {
  const lines = new Set(code.split("\n"));
  for (;;) {
    const candidate = `SHOAL_${randomBytes(12).toString("hex")}`;
    if (!lines.has(candidate)) return candidate;
  }
}

const envName = /^[A-Za-z_][A-Za-z0-9_]*$/;

function request(call: DriverCall): string {
  const bad = Object.keys(call.env).find((name) => !envName.test(name));
  if (bad !== undefined) throw new Error(`not an environment variable name: ${JSON.stringify(bad)}`);
  const end = terminator(call.code);
  // Assignments before `eval` (not a special builtin outside POSIX mode) last for that command only.
  const assignments = Object.entries(call.env).map(([name, value]) => `${name}=${shellQuote(value)} `);
  const token = shellQuote(call.token);
  return [
    `IFS= read -r -d '' __shoal_code <<'${end}'`,
    call.code,
    end,
    `${call.cwd === null ? "" : `cd -- ${shellQuote(call.cwd)} && `}${assignments.join("")}eval "$__shoal_code" </dev/null`,
    `__shoal_status=$?; unset __shoal_code`,
    `printf '%s' ${token} >&2; printf '%s{"exit_code":%d}\\n' ${token} "$__shoal_status"`,
    "",
  ].join("\n");
}

export const bashDriver: CodeDriver = {
  language: "bash",
  once: (code) => ["bash", "-c", code],
  argv: ["bash", "--noprofile", "--norc", "-s"],
  request,
};
