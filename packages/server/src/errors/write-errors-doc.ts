/** `npm run docs:errors`: writes docs/errors.md from the catalog. */
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { renderErrorsDoc } from "./errors-doc.ts";

export const errorsDocPath = fileURLToPath(new URL("../../../../docs/errors.md", import.meta.url));

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(errorsDocPath, renderErrorsDoc());
  process.stdout.write(`wrote ${errorsDocPath}\n`);
}
