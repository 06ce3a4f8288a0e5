/** The tests of sandboxes-agent.test.ts, with every sandbox in a QEMU microVM. */
process.env.SHOAL_TEST_ISOLATION = "microvm";
await import("./sandboxes-agent.test.ts");
