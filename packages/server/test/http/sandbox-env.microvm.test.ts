/** The tests of sandbox-env.test.ts, with every sandbox in a QEMU microVM. */
process.env.SHOAL_TEST_ISOLATION = "microvm";
await import("./sandbox-env.test.ts");
