/**
 * The isolation a suite's sandboxes run at: `container` unless SHOAL_TEST_ISOLATION says
 * otherwise. A `*.gvisor.test.ts` file sets it and then imports the suite, so that the same tests
 * run again at that level (node runs each test file in a process of its own).
 */
export type Isolation = "container" | "gvisor" | "microvm";

export function testIsolation(): Isolation {
  const level = process.env.SHOAL_TEST_ISOLATION;
  return level === "gvisor" || level === "microvm" ? level : "container";
}

/** `body` with the suite's isolation, unless it names one itself. */
export function withTestIsolation<T extends { isolation?: unknown }>(body: T): T {
  const isolation = body.isolation ?? testIsolation();
  return isolation === "container" ? body : { ...body, isolation };
}
