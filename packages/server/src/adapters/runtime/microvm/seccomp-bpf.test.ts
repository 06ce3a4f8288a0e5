/**
 * The seccomp compiler against a direct reading of the profile: a small classic-BPF interpreter
 * runs the compiled program on (arch, nr, args) and its verdict must be what the profile's rules
 * say, for the sandbox profile and for random profiles using every operator, on random calls and
 * on the adversarial ones (foreign architectures, the x32 bit, arguments differing in one half).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  ALLOWED_SOCKET_FAMILIES,
  CLONE_NAMESPACE_FLAGS,
  DENIED_SYSCALLS,
  type SeccompAction,
  type SeccompArg,
  type SeccompProfile,
  type SeccompRule,
  seccompProfile,
} from "../linux/seccomp-profile.ts";
import { agentSeccompProfile, forkedSeccompProfile } from "./guest-policy.ts";
import {
  AUDIT_ARCH_X86_64,
  actionValue,
  BPF,
  type BpfInstruction,
  compileSeccompProfile,
  decodeBpfProgram,
  encodeBpfProgram,
  SECCOMP_RET,
  X32_SYSCALL_BIT,
} from "./seccomp-bpf.ts";
import { X86_64_SYSCALLS } from "./x86-64-syscalls.ts";

const AUDIT_ARCH_I386 = 0x40000003;
const U64 = (1n << 64n) - 1n;

interface Call {
  readonly arch: number;
  readonly nr: number;
  readonly args: readonly bigint[];
}

/** `struct seccomp_data` as the kernel lays it out: nr, arch, instruction_pointer, args[6]. */
function seccompData(call: Call): DataView {
  const view = new DataView(new ArrayBuffer(64));
  view.setUint32(0, call.nr >>> 0, true);
  view.setUint32(4, call.arch >>> 0, true);
  view.setBigUint64(8, 0x401000n, true);
  for (const [index, arg] of call.args.entries()) view.setBigUint64(16 + 8 * index, arg & U64, true);
  return view;
}

/** Classic BPF as the kernel runs a seccomp filter, for the opcodes the compiler emits; anything else throws. */
function runBpf(program: readonly BpfInstruction[], call: Call): number {
  const data = seccompData(call);
  let a = 0;
  let pc = 0;
  for (let steps = 0; steps <= program.length; steps++) {
    const instruction = program[pc];
    assert.ok(instruction, `pc ${pc} is inside the program of ${program.length}`);
    const jump = (taken: boolean) => {
      pc += 1 + (taken ? instruction.jt : instruction.jf);
    };
    switch (instruction.code) {
      case BPF.LD_W_ABS:
        assert.ok(instruction.k % 4 === 0 && instruction.k < 64, `load at ${instruction.k}`);
        a = data.getUint32(instruction.k, true);
        pc++;
        break;
      case BPF.ALU_AND_K:
        a = (a & instruction.k) >>> 0;
        pc++;
        break;
      case BPF.JMP_JA:
        pc += 1 + instruction.k;
        break;
      case BPF.JMP_JEQ_K:
        jump(a === instruction.k);
        break;
      case BPF.JMP_JGT_K:
        jump(a > instruction.k);
        break;
      case BPF.JMP_JGE_K:
        jump(a >= instruction.k);
        break;
      case BPF.RET_K:
        return instruction.k;
      default:
        assert.fail(`opcode 0x${instruction.code.toString(16)} at ${pc}`);
    }
  }
  assert.fail("the program ran longer than it is: a backward jump");
}

/**
 * What the kernel answers when several filters apply (seccomp_run_filters): the action of lowest
 * value as a signed number (KILL_PROCESS first, ALLOW last); of equal actions, the newest filter's.
 */
function stackedVerdict(newestFirst: readonly number[]): number {
  const action = (ret: number) => (ret & 0xffff0000) | 0;
  return newestFirst.reduce((chosen, ret) => (action(ret) < action(chosen) ? ret : chosen));
}

const nameOf = new Map(Object.entries(X86_64_SYSCALLS).map(([name, nr]) => [nr, name]));

function holds(arg: SeccompArg, value: bigint): boolean {
  const datum = BigInt(arg.value);
  switch (arg.op) {
    case "SCMP_CMP_EQ":
      return value === datum;
    case "SCMP_CMP_NE":
      return value !== datum;
    case "SCMP_CMP_LT":
      return value < datum;
    case "SCMP_CMP_MASKED_EQ":
      return (value & datum) === BigInt(arg.valueTwo ?? 0);
  }
}

/** What the profile says of a call, read straight from its rules (the first rule that matches decides). */
function verdict(profile: SeccompProfile, call: Call): number {
  const fallback = actionValue(profile.defaultAction, profile.defaultErrnoRet);
  if (call.arch >>> 0 !== AUDIT_ARCH_X86_64 || call.nr >>> 0 >= X32_SYSCALL_BIT) return fallback;
  const name = nameOf.get(call.nr >>> 0);
  if (name === undefined) return fallback;
  for (const rule of profile.syscalls) {
    if (!rule.names.includes(name)) continue;
    if ((rule.args ?? []).every((arg) => holds(arg, call.args[arg.index] ?? 0n))) {
      return actionValue(rule.action, rule.errnoRet);
    }
  }
  return fallback;
}

const profile = seccompProfile();
const compiled = compileSeccompProfile(profile);
const program = compiled.program;
const EPERM_RET = SECCOMP_RET.ERRNO | 1;
const nr = (name: string): number => {
  const number = X86_64_SYSCALLS[name];
  assert.ok(number !== undefined, name);
  return number;
};
const call = (name: string, ...args: bigint[]): Call => ({ arch: AUDIT_ARCH_X86_64, nr: nr(name), args });

/** Values near the profile's own constants, in either half, and anything at all. */
function argArbitrary(constants: readonly number[]): fc.Arbitrary<bigint> {
  const near = constants.map((value) => BigInt(value));
  return fc.oneof(
    fc.constantFrom(0n, 1n, 0xffffffffn, 1n << 32n, U64, ...near),
    fc
      .tuple(fc.constantFrom(...near, 0n), fc.bigInt({ min: 0n, max: 0xffffffffn }))
      .map(([low, high]) => (high << 32n) | (low & 0xffffffffn)),
    fc
      .tuple(fc.constantFrom(...near, 0n), fc.bigInt({ min: 0n, max: 0xffffffffn }))
      .map(([high, low]) => ((high & 0xffffffffn) << 32n) | low),
    fc
      .tuple(fc.constantFrom(...near, 0n), fc.bigInt({ min: 0n, max: 0xffffffffn }))
      .map(([value, bits]) => BigInt(value) | bits),
    fc.bigInt({ min: 0n, max: U64 }),
  );
}

function callArbitrary(numbers: readonly number[], constants: readonly number[]): fc.Arbitrary<Call> {
  return fc.record({
    arch: fc.oneof(
      { weight: 8, arbitrary: fc.constant(AUDIT_ARCH_X86_64) },
      { weight: 1, arbitrary: fc.constantFrom(AUDIT_ARCH_I386, 0x40000028, 0xc00000b7) },
      { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) },
    ),
    nr: fc.oneof(
      { weight: 8, arbitrary: fc.constantFrom(...numbers) },
      { weight: 2, arbitrary: fc.constantFrom(...numbers).map((number) => (number | X32_SYSCALL_BIT) >>> 0) },
      { weight: 2, arbitrary: fc.nat({ max: 600 }) },
      { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) },
    ),
    args: fc.array(argArbitrary(constants), { minLength: 6, maxLength: 6 }),
  });
}

describe("seccomp profile → classic BPF", () => {
  test("the sandbox profile compiles to a program the kernel takes, and round-trips through its encoding", () => {
    assert.ok(program.length > 0 && program.length <= 4096, `${program.length} instructions`);
    const bytes = encodeBpfProgram(program);
    assert.equal(bytes.length, program.length * 8);
    assert.deepEqual(decodeBpfProgram(bytes), program);
    // Names the 6.1 header has no number for: syscalls newer than the guest's kernel.
    for (const name of compiled.unknownNames) assert.equal(Object.hasOwn(X86_64_SYSCALLS, name), false, name);
    assert.ok(!compiled.unknownNames.includes("read") && !compiled.unknownNames.includes("clone"));
  });

  test("property: the program's verdict is the profile's on random calls", () => {
    const numbers = [...new Set(profile.syscalls.flatMap((rule) => rule.names).map((name) => X86_64_SYSCALLS[name]))]
      .filter((number): number is number => number !== undefined)
      .concat(DENIED_SYSCALLS.map((name) => X86_64_SYSCALLS[name]).filter((n): n is number => n !== undefined));
    const constants = [
      CLONE_NAMESPACE_FLAGS,
      ...ALLOWED_SOCKET_FAMILIES,
      0x8,
      0x20000,
      0x20008,
      17,
      0x10000000,
      0x00020000,
    ];
    fc.assert(
      fc.property(callArbitrary(numbers, constants), (sample) => {
        assert.equal(
          runBpf(program, sample) >>> 0,
          verdict(profile, sample) >>> 0,
          JSON.stringify(sample, (_, v) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v)),
        );
      }),
      { numRuns: 20_000 },
    );
  });

  test("property: the agent's program with its forked one stacked on it is the sandbox profile", () => {
    const agent = compileSeccompProfile(agentSeccompProfile()).program;
    const forked = compileSeccompProfile(forkedSeccompProfile()).program;
    const numbers = [nr("clock_settime"), nr("clock_gettime"), nr("settimeofday"), nr("clock_adjtime"), nr("read")];
    fc.assert(
      fc.property(callArbitrary(numbers, [0, 1, 2, 3, 4, 7, 11]), (sample) => {
        const stacked = stackedVerdict([runBpf(forked, sample), runBpf(agent, sample)]);
        assert.equal(stacked >>> 0, verdict(profile, sample) >>> 0);
      }),
      { numRuns: 5000 },
    );
    // The agent alone may set the wall clock, and only that clock.
    assert.equal(runBpf(agent, call("clock_settime", 0n)) >>> 0, SECCOMP_RET.ALLOW >>> 0);
    assert.equal(runBpf(agent, call("clock_settime", 1n)) >>> 0, EPERM_RET >>> 0);
    assert.equal(runBpf(agent, call("clock_settime", 1n << 32n)) >>> 0, EPERM_RET >>> 0);
    assert.equal(
      stackedVerdict([runBpf(forked, call("clock_settime", 0n)), runBpf(agent, call("clock_settime", 0n))]) >>> 0,
      EPERM_RET >>> 0,
    );
  });

  test("property: random profiles with every operator and action compile to their own verdicts", () => {
    const names = ["read", "write", "openat", "clone", "socket", "personality", "ioctl", "mmap", "kill", "prctl"];
    const constants = [
      0,
      1,
      7,
      0xff,
      0x7fffffff,
      0x80000000,
      0xffffffff,
      2 ** 32,
      2 ** 32 + 5,
      2 ** 40 + 0x10,
      2 ** 52 + 3,
    ];
    const value = fc.constantFrom(...constants);
    const arg: fc.Arbitrary<SeccompArg> = fc.oneof(
      fc.record({
        index: fc.nat({ max: 5 }),
        value,
        op: fc.constantFrom("SCMP_CMP_EQ" as const, "SCMP_CMP_NE" as const, "SCMP_CMP_LT" as const),
      }),
      fc.record({ index: fc.nat({ max: 5 }), value, valueTwo: value, op: fc.constant("SCMP_CMP_MASKED_EQ" as const) }),
    );
    const action = fc.constantFrom<SeccompAction>(
      "SCMP_ACT_ALLOW",
      "SCMP_ACT_ERRNO",
      "SCMP_ACT_KILL_PROCESS",
      "SCMP_ACT_TRACE",
    );
    const rule: fc.Arbitrary<SeccompRule> = fc.record(
      {
        names: fc.subarray(names, { minLength: 1, maxLength: 3 }),
        action,
        errnoRet: fc.nat({ max: 4095 }),
        args: fc.array(arg, { maxLength: 3 }),
      },
      { requiredKeys: ["names", "action"] },
    );
    const randomProfile: fc.Arbitrary<SeccompProfile> = fc.record({
      defaultAction: action,
      defaultErrnoRet: fc.nat({ max: 4095 }),
      architectures: fc.constant(["SCMP_ARCH_X86_64"]),
      syscalls: fc.array(rule, { maxLength: 8 }),
    });
    const numbers = names.map(nr);
    fc.assert(
      fc.property(
        randomProfile,
        fc.array(callArbitrary(numbers, constants), { minLength: 20, maxLength: 20 }),
        (random, calls) => {
          const { program: randomProgram } = compileSeccompProfile(random);
          for (const sample of calls) assert.equal(runBpf(randomProgram, sample) >>> 0, verdict(random, sample) >>> 0);
        },
      ),
      { numRuns: 2000 },
    );
  });

  test("every syscall the profile must deny is refused with EPERM, whatever its arguments", () => {
    for (const name of DENIED_SYSCALLS) {
      if (!Object.hasOwn(X86_64_SYSCALLS, name)) continue;
      fc.assert(
        fc.property(fc.array(fc.bigInt({ min: 0n, max: U64 }), { minLength: 6, maxLength: 6 }), (args) => {
          assert.equal(runBpf(program, call(name, ...args)), EPERM_RET, name);
        }),
        { numRuns: 50 },
      );
    }
  });

  test("foreign entries: the x32 bit and the i386 architecture get EPERM even for getpid", () => {
    assert.equal(runBpf(program, call("getpid")), SECCOMP_RET.ALLOW);
    assert.equal(runBpf(program, { arch: AUDIT_ARCH_X86_64, nr: nr("getpid") | X32_SYSCALL_BIT, args: [] }), EPERM_RET);
    // x32's own numbers (512 and up) with the bit, and -1 (what a tracer's skipped syscall shows).
    assert.equal(runBpf(program, { arch: AUDIT_ARCH_X86_64, nr: (X32_SYSCALL_BIT | 512) >>> 0, args: [] }), EPERM_RET);
    assert.equal(runBpf(program, { arch: AUDIT_ARCH_X86_64, nr: 0xffffffff, args: [] }), EPERM_RET);
    // i386 26 is ptrace, 20 is getpid: both refused, the whole entry is.
    assert.equal(runBpf(program, { arch: AUDIT_ARCH_I386, nr: 26, args: [16n, 999999n] }), EPERM_RET);
    assert.equal(runBpf(program, { arch: AUDIT_ARCH_I386, nr: 20, args: [] }), EPERM_RET);
  });

  test("arguments are compared on both halves", () => {
    const CLONE_NEWUSER = 0x10000000n;
    const SIGCHLD = 17n;
    assert.equal(runBpf(program, call("clone", SIGCHLD)), SECCOMP_RET.ALLOW);
    assert.equal(runBpf(program, call("clone", CLONE_NEWUSER | SIGCHLD)), EPERM_RET);
    // High bits the kernel's clone() drops do not hide a namespace flag in the low word...
    assert.equal(runBpf(program, call("clone", (0xffffffffn << 32n) | CLONE_NEWUSER | SIGCHLD)), EPERM_RET);
    // ...and a namespace bit in the high word only is no namespace flag: clone() truncates to 32 bits.
    assert.equal(runBpf(program, call("clone", (CLONE_NEWUSER << 32n) | SIGCHLD)), SECCOMP_RET.ALLOW);
    assert.equal(runBpf(program, call("socket", 1n)), SECCOMP_RET.ALLOW);
    assert.equal(runBpf(program, call("socket", 17n)), EPERM_RET); // AF_PACKET
    // An allowed family in the low half with anything in the high half is not that family.
    assert.equal(runBpf(program, call("socket", (1n << 32n) | 1n)), EPERM_RET);
    assert.equal(runBpf(program, call("personality", 0xffffffffn)), SECCOMP_RET.ALLOW);
    assert.equal(runBpf(program, call("personality", U64)), EPERM_RET);
    assert.equal(runBpf(program, call("clone3", 0n, 88n)), SECCOMP_RET.ERRNO | 38);
  });

  test("a profile for another architecture, or with a value the compiler cannot represent, is refused", () => {
    assert.throws(
      () => compileSeccompProfile({ ...profile, architectures: ["SCMP_ARCH_X86"] }),
      /only SCMP_ARCH_X86_64/,
    );
    assert.throws(
      () =>
        compileSeccompProfile({
          ...profile,
          syscalls: [
            { names: ["socket"], action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: -1, op: "SCMP_CMP_EQ" }] },
          ],
        }),
      RangeError,
    );
    assert.throws(
      () =>
        compileSeccompProfile({
          ...profile,
          syscalls: [
            { names: ["socket"], action: "SCMP_ACT_ALLOW", args: [{ index: 6, value: 1, op: "SCMP_CMP_EQ" }] },
          ],
        }),
      RangeError,
    );
  });
});
