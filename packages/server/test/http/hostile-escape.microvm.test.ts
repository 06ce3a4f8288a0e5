/** The escape probes of hostile-escape.test.ts, with every sandbox in a QEMU microVM. */
process.env.SHOAL_TEST_ISOLATION = "microvm";
await import("./hostile-escape.test.ts");
