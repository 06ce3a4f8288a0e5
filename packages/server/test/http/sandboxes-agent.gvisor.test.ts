/** The tests of sandboxes-agent.test.ts, with every sandbox under gVisor. */
process.env.SHOAL_TEST_ISOLATION = "gvisor";
await import("./sandboxes-agent.test.ts");
