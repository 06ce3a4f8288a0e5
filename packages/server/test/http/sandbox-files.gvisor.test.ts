/** The tests of sandbox-files.test.ts, with every sandbox under gVisor. */
process.env.SHOAL_TEST_ISOLATION = "gvisor";
await import("./sandbox-files.test.ts");
