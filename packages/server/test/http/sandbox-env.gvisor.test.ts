/** The tests of sandbox-env.test.ts, with every sandbox under gVisor. */
process.env.SHOAL_TEST_ISOLATION = "gvisor";
await import("./sandbox-env.test.ts");
