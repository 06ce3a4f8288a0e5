/** The tests of sandboxes-lifecycle.test.ts, with every sandbox in a QEMU microVM. */
process.env.SHOAL_TEST_ISOLATION = "microvm";
await import("./sandboxes-lifecycle.test.ts");
