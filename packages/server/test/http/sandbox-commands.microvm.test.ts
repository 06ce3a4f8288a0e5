/** The tests of sandbox-commands.test.ts, with every sandbox in a QEMU microVM. */
process.env.SHOAL_TEST_ISOLATION = "microvm";
await import("./sandbox-commands.test.ts");
