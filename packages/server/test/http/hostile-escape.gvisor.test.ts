/** The escape probes of hostile-escape.test.ts, with every sandbox under gVisor. */
process.env.SHOAL_TEST_ISOLATION = "gvisor";
await import("./hostile-escape.test.ts");
