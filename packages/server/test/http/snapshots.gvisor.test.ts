/** The tests of snapshots.test.ts, with every sandbox under gVisor. */
process.env.SHOAL_TEST_ISOLATION = "gvisor";
await import("./snapshots.test.ts");
