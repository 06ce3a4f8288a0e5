/** The tests of sandboxes-lifecycle.test.ts, with every sandbox under gVisor. */
process.env.SHOAL_TEST_ISOLATION = "gvisor";
await import("./sandboxes-lifecycle.test.ts");
