/** The tests of sandbox-watch.test.ts, with every sandbox under gVisor. */
process.env.SHOAL_TEST_ISOLATION = "gvisor";
await import("./sandbox-watch.test.ts");
