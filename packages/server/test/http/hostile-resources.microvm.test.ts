/** The resource abuse of hostile-resources.test.ts, with every sandbox in a QEMU microVM. */
process.env.SHOAL_TEST_ISOLATION = "microvm";
await import("./hostile-resources.test.ts");
