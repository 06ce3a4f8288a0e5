/** The tests of sandbox-exec-stream.test.ts, with every sandbox under gVisor. */
process.env.SHOAL_TEST_ISOLATION = "gvisor";
await import("./sandbox-exec-stream.test.ts");
