/** The tests of sandbox-files-hostile.test.ts, with every sandbox under gVisor. */
process.env.SHOAL_TEST_ISOLATION = "gvisor";
await import("./sandbox-files-hostile.test.ts");
