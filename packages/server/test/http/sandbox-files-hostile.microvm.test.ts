/** The tests of sandbox-files-hostile.test.ts, with every sandbox in a QEMU microVM. */
process.env.SHOAL_TEST_ISOLATION = "microvm";
await import("./sandbox-files-hostile.test.ts");
