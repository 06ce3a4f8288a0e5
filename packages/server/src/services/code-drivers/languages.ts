/**
 * The languages code runs in, the names clients may use for them, and each one's driver.
 *
 * @example
 *   driverOf(languageOf("py") ?? "python").once("print(1)") // ["python3", "-c", "print(1)"]
 */
import { bashDriver } from "./bash.ts";
import { javascriptDriver } from "./javascript.ts";
import type { CodeDriver, CodeLanguage } from "./protocol.ts";
import { pythonDriver } from "./python.ts";

export const languageAliases: Readonly<Record<string, CodeLanguage>> = {
  python: "python",
  python3: "python",
  py: "python",
  javascript: "javascript",
  js: "javascript",
  node: "javascript",
  nodejs: "javascript",
  bash: "bash",
  sh: "bash",
  shell: "bash",
};

export function languageOf(name: string): CodeLanguage | undefined {
  return Object.hasOwn(languageAliases, name) ? languageAliases[name] : undefined;
}

const drivers: Readonly<Record<CodeLanguage, CodeDriver>> = {
  python: pythonDriver,
  javascript: javascriptDriver,
  bash: bashDriver,
};

export function driverOf(language: CodeLanguage): CodeDriver {
  return drivers[language];
}
