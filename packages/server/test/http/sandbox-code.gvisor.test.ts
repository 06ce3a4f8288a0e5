/** The tests of sandbox-code.test.ts, with every sandbox under gVisor. */
process.env.SHOAL_TEST_ISOLATION = "gvisor";
await import("./sandbox-code.test.ts");
