/** The tests of sandbox-terminal.test.ts, with every sandbox under gVisor. */
process.env.SHOAL_TEST_ISOLATION = "gvisor";
await import("./sandbox-terminal.test.ts");
