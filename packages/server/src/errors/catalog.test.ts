import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { errorCatalog, errorCodes, formatMessage, type ReferenceSource } from "./catalog.ts";
import { readReferenceCodes } from "./reference-catalogs.ts";

const referenceDir = fileURLToPath(new URL("../../../../../shared/reference/error-catalogs", import.meta.url));

describe("the error catalog", () => {
  const references = readReferenceCodes(referenceDir);

  test("reads a plausible number of codes from every reference file", () => {
    const perSource = new Map<ReferenceSource, number>();
    for (const { source } of references) perSource.set(source, (perSource.get(source) ?? 0) + 1);
    // Lower bounds from the files as they are: a parser that stops matching fails here.
    assert.ok((perSource.get("hyperfleet") ?? 0) >= 12, `hyperfleet: ${perSource.get("hyperfleet")}`);
    assert.ok((perSource.get("hopx") ?? 0) >= 13, `hopx: ${perSource.get("hopx")}`);
    assert.ok((perSource.get("hexabase") ?? 0) >= 36, `hexabase: ${perSource.get("hexabase")}`);
    assert.ok((perSource.get("nullspace") ?? 0) >= 65, `nullspace: ${perSource.get("nullspace")}`);
    assert.ok((perSource.get("hzel") ?? 0) >= 10, `hzel: ${perSource.get("hzel")}`);
  });

  test("maps every code of every reference catalog to an entry through its aliases", () => {
    const unmapped = references.filter(
      ({ source, code }) =>
        !errorCodes.some((ours) =>
          (errorCatalog[ours].aliases as Partial<Record<string, readonly string[]>>)[source]?.includes(code),
        ),
    );
    assert.deepEqual(unmapped, [], "reference codes without a catalog entry");
  });

  test("names no alias that its reference catalog does not have", () => {
    const known = new Set(references.map(({ source, code }) => `${source}:${code}`));
    const invented: string[] = [];
    for (const code of errorCodes) {
      for (const [source, aliases] of Object.entries(errorCatalog[code].aliases)) {
        for (const alias of aliases ?? [])
          if (!known.has(`${source}:${alias}`)) invented.push(`${code} → ${source}:${alias}`);
      }
    }
    assert.deepEqual(invented, []);
  });

  test("every code is UPPER_SNAKE with an HTTP error status", () => {
    for (const code of errorCodes) {
      assert.match(code, /^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$/);
      const { status } = errorCatalog[code];
      assert.ok(status >= 400 && status <= 599, `${code}: ${status}`);
    }
  });

  test("429 and 503 answers are retryable, as their Retry-After promises", () => {
    for (const code of errorCodes) {
      const { status, retryable } = errorCatalog[code];
      if (status === 429 || status === 503) assert.equal(retryable, true, code);
    }
  });

  test("every placeholder of a message is a documented detail", () => {
    for (const code of errorCodes) {
      const { message, details } = errorCatalog[code];
      for (const [, name] of message.matchAll(/\{(\w+)\}/g)) {
        assert.ok(name !== undefined && name in details, `${code}: {${name}} is not in details`);
      }
    }
  });

  test("formatMessage fills known placeholders and leaves the rest", () => {
    assert.equal(formatMessage("Sandbox {sandbox_id} not found", { sandbox_id: "sbx_1" }), "Sandbox sbx_1 not found");
    assert.equal(formatMessage("A {x} and {y}", { x: 1 }), "A 1 and {y}");
    assert.equal(formatMessage("{x}", { x: { nested: true } }), "{x}");
  });
});
