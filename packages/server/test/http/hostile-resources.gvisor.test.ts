/** The resource abuse of hostile-resources.test.ts, with every sandbox under gVisor. */
process.env.SHOAL_TEST_ISOLATION = "gvisor";
await import("./hostile-resources.test.ts");
