/** The tests of sandbox-metrics.test.ts, with every sandbox under gVisor. */
process.env.SHOAL_TEST_ISOLATION = "gvisor";
await import("./sandbox-metrics.test.ts");
