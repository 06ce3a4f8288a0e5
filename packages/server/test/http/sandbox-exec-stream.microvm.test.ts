/** The tests of sandbox-exec-stream.test.ts, with every sandbox in a QEMU microVM. */
process.env.SHOAL_TEST_ISOLATION = "microvm";
await import("./sandbox-exec-stream.test.ts");
