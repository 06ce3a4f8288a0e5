/**
 * Compiles a seccomp profile (the OCI form of seccomp-profile.ts) to a classic BPF program for
 * x86_64, the program the microVM guest's agent installs on itself with seccomp(2). A container
 * gets the same profile compiled by crun's libseccomp; the guest's agent is a static binary
 * without libseccomp, so the host compiles it here and writes it to the root disk.
 *
 * The program: a syscall from any other audit architecture (the i386 `int 0x80` entry) or with
 * `__X32_SYSCALL_BIT` (the x32 ABI) gets the profile's default action; the others are found by a
 * binary search over their numbers, then each rule's argument conditions are checked in profile
 * order (the first rule that matches decides) and anything unmatched gets the default action.
 * Arguments are 64-bit and classic BPF loads 32 bits, so every comparison is made on both halves.
 *
 * @example
 *   const program = compileSeccompProfile(seccompProfile());
 *   await writeFile(join(tree, "opt/shoal/seccomp.bpf"), encodeBpfProgram(program));
 */
import {
  EPERM,
  type SeccompAction,
  type SeccompArg,
  type SeccompProfile,
  type SeccompRule,
} from "../linux/seccomp-profile.ts";
import { X86_64_SYSCALLS } from "./x86-64-syscalls.ts";

/** One `struct sock_filter`. */
export interface BpfInstruction {
  readonly code: number;
  readonly jt: number;
  readonly jf: number;
  readonly k: number;
}

export const AUDIT_ARCH_X86_64 = 0xc000003e;
export const X32_SYSCALL_BIT = 0x40000000;

/** Offsets in `struct seccomp_data`: nr, arch, instruction_pointer, then args[6] (little-endian u64). */
export const SECCOMP_DATA_NR = 0;
export const SECCOMP_DATA_ARCH = 4;
export function argOffset(index: number, half: "low" | "high"): number {
  return 16 + 8 * index + (half === "high" ? 4 : 0);
}

/** Opcodes (linux/bpf_common.h), each with its class, size and source folded in. */
export const BPF = {
  LD_W_ABS: 0x20,
  ALU_AND_K: 0x54,
  JMP_JA: 0x05,
  JMP_JEQ_K: 0x15,
  JMP_JGT_K: 0x25,
  JMP_JGE_K: 0x35,
  RET_K: 0x06,
} as const;

/** Return values (linux/seccomp.h); the low 16 bits carry the action's data. */
export const SECCOMP_RET = {
  KILL_PROCESS: 0x80000000,
  ERRNO: 0x00050000,
  TRACE: 0x7ff00000,
  ALLOW: 0x7fff0000,
} as const;

/** BPF_MAXINSNS: the kernel refuses longer programs. */
const MAX_INSTRUCTIONS = 4096;
/** Syscall numbers searched linearly once a branch of the search holds this few. */
const LINEAR_BELOW = 4;

/** The 32-bit value a filter returns for an action; `data` is the rule's errnoRet (runc's reading for TRACE too). */
export function actionValue(action: SeccompAction, data: number | undefined): number {
  switch (action) {
    case "SCMP_ACT_ALLOW":
      return SECCOMP_RET.ALLOW;
    case "SCMP_ACT_KILL_PROCESS":
      return SECCOMP_RET.KILL_PROCESS;
    case "SCMP_ACT_ERRNO":
      return (SECCOMP_RET.ERRNO | ((data ?? EPERM) & 0xffff)) >>> 0;
    case "SCMP_ACT_TRACE":
      return (SECCOMP_RET.TRACE | ((data ?? EPERM) & 0xffff)) >>> 0;
  }
}

/** A 64-bit argument value as its two 32-bit halves. */
export function halves(value: number): { high: number; low: number } {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`seccomp argument value ${value} is not an unsigned 64-bit integer this compiler takes`);
  }
  return { high: Math.floor(value / 2 ** 32) >>> 0, low: value >>> 0 };
}

type Label = symbol;
type Item =
  | { readonly kind: "label"; readonly label: Label }
  | { readonly kind: "op"; readonly code: number; readonly k: number; readonly jt?: Label; readonly jf?: Label }
  | { readonly kind: "ja"; readonly to: Label };

/** Emits instructions with symbolic forward jumps; `next` (no label) falls through. */
class Assembler {
  readonly items: Item[] = [];

  label(): Label {
    return Symbol();
  }

  place(label: Label): void {
    this.items.push({ kind: "label", label });
  }

  op(code: number, k: number, jt?: Label, jf?: Label): void {
    this.items.push({
      kind: "op",
      code,
      k: k >>> 0,
      ...(jt === undefined ? {} : { jt }),
      ...(jf === undefined ? {} : { jf }),
    });
  }

  ja(to: Label): void {
    this.items.push({ kind: "ja", to });
  }

  ret(value: number): void {
    this.op(BPF.RET_K, value);
  }

  assemble(): BpfInstruction[] {
    const at = new Map<Label, number>();
    let pc = 0;
    for (const item of this.items) {
      if (item.kind === "label") at.set(item.label, pc);
      else pc++;
    }
    const offset = (from: number, label: Label | undefined, limit: number): number => {
      if (label === undefined) return 0;
      const target = at.get(label);
      if (target === undefined) throw new Error("seccomp compiler: a jump to a label never placed");
      const distance = target - (from + 1);
      if (distance < 0 || distance > limit) throw new Error(`seccomp compiler: a jump of ${distance} does not fit`);
      return distance;
    };
    const program: BpfInstruction[] = [];
    for (const item of this.items) {
      if (item.kind === "label") continue;
      const pc = program.length;
      if (item.kind === "ja") {
        program.push({ code: BPF.JMP_JA, jt: 0, jf: 0, k: offset(pc, item.to, 0xffffffff) });
      } else {
        program.push({ code: item.code, jt: offset(pc, item.jt, 255), jf: offset(pc, item.jf, 255), k: item.k });
      }
    }
    return program;
  }
}

/** Falls through when the condition holds, jumps to `fail` when it does not. */
function emitCondition(asm: Assembler, arg: SeccompArg, fail: Label): void {
  const high = argOffset(arg.index, "high");
  const low = argOffset(arg.index, "low");
  if (!Number.isInteger(arg.index) || arg.index < 0 || arg.index > 5) {
    throw new RangeError(`seccomp argument index ${arg.index} is not 0-5`);
  }
  const pass = asm.label();
  switch (arg.op) {
    case "SCMP_CMP_EQ": {
      const value = halves(arg.value);
      asm.op(BPF.LD_W_ABS, high);
      asm.op(BPF.JMP_JEQ_K, value.high, undefined, fail);
      asm.op(BPF.LD_W_ABS, low);
      asm.op(BPF.JMP_JEQ_K, value.low, undefined, fail);
      break;
    }
    case "SCMP_CMP_NE": {
      const value = halves(arg.value);
      asm.op(BPF.LD_W_ABS, high);
      asm.op(BPF.JMP_JEQ_K, value.high, undefined, pass);
      asm.op(BPF.LD_W_ABS, low);
      asm.op(BPF.JMP_JEQ_K, value.low, fail, pass);
      break;
    }
    case "SCMP_CMP_LT": {
      // Unsigned: a lower high half passes, a higher one fails, an equal one leaves it to the low half.
      const value = halves(arg.value);
      asm.op(BPF.LD_W_ABS, high);
      asm.op(BPF.JMP_JGE_K, value.high, undefined, pass);
      asm.op(BPF.JMP_JGT_K, value.high, fail, undefined);
      asm.op(BPF.LD_W_ABS, low);
      asm.op(BPF.JMP_JGE_K, value.low, fail, pass);
      break;
    }
    case "SCMP_CMP_MASKED_EQ": {
      // OCI's MASKED_EQ: (arg & value) == valueTwo.
      const mask = halves(arg.value);
      const datum = halves(arg.valueTwo ?? 0);
      asm.op(BPF.LD_W_ABS, high);
      asm.op(BPF.ALU_AND_K, mask.high);
      asm.op(BPF.JMP_JEQ_K, datum.high, undefined, fail);
      asm.op(BPF.LD_W_ABS, low);
      asm.op(BPF.ALU_AND_K, mask.low);
      asm.op(BPF.JMP_JEQ_K, datum.low, undefined, fail);
      break;
    }
  }
  asm.place(pass);
}

/** One syscall's rules in profile order; always ends in a return. */
function emitSyscall(asm: Assembler, rules: readonly SeccompRule[], fallback: number): void {
  for (const rule of rules) {
    const action = actionValue(rule.action, rule.errnoRet);
    if (rule.args === undefined || rule.args.length === 0) {
      asm.ret(action);
      return; // later rules for this syscall can never match
    }
    const next = asm.label();
    for (const arg of rule.args) emitCondition(asm, arg, next);
    asm.ret(action);
    asm.place(next);
  }
  asm.ret(fallback);
}

interface SyscallEntry {
  readonly nr: number;
  readonly rules: readonly SeccompRule[];
}

/** A = the syscall number on entry. A branch ends in returns only, so loading arguments is free to clobber A. */
function emitSearch(asm: Assembler, entries: readonly SyscallEntry[], fallback: number): void {
  if (entries.length <= LINEAR_BELOW) {
    for (const entry of entries) {
      const other = asm.label();
      asm.op(BPF.JMP_JEQ_K, entry.nr, undefined, other);
      emitSyscall(asm, entry.rules, fallback);
      asm.place(other);
    }
    asm.ret(fallback);
    return;
  }
  const middle = Math.floor(entries.length / 2);
  const pivot = entries[middle] as SyscallEntry;
  const below = asm.label();
  const above = asm.label();
  // Conditional jumps reach 255 instructions at most; the jump over the lower half is a `ja`.
  asm.op(BPF.JMP_JGE_K, pivot.nr, undefined, below);
  asm.ja(above);
  asm.place(below);
  emitSearch(asm, entries.slice(0, middle), fallback);
  asm.place(above);
  emitSearch(asm, entries.slice(middle), fallback);
}

export interface CompiledSeccomp {
  readonly program: readonly BpfInstruction[];
  /** Names of the profile that the syscall table lacks: syscalls the kernel does not have, left out as libseccomp does. */
  readonly unknownNames: readonly string[];
}

export function compileSeccompProfile(
  profile: SeccompProfile,
  syscalls: Readonly<Record<string, number>> = X86_64_SYSCALLS,
): CompiledSeccomp {
  const unsupported = profile.architectures.filter((arch) => arch !== "SCMP_ARCH_X86_64");
  if (unsupported.length > 0) throw new Error(`seccomp compiler: only SCMP_ARCH_X86_64, not ${unsupported.join(", ")}`);
  const fallback = actionValue(profile.defaultAction, profile.defaultErrnoRet);
  const byNumber = new Map<number, SeccompRule[]>();
  const unknownNames = new Set<string>();
  for (const rule of profile.syscalls) {
    for (const name of rule.names) {
      const nr = Object.hasOwn(syscalls, name) ? syscalls[name] : undefined;
      if (nr === undefined) {
        unknownNames.add(name);
        continue;
      }
      const rules = byNumber.get(nr) ?? [];
      rules.push(rule);
      byNumber.set(nr, rules);
    }
  }
  const entries = [...byNumber.entries()].sort(([a], [b]) => a - b).map(([nr, rules]) => ({ nr, rules }));

  const asm = new Assembler();
  const refuse = asm.label();
  asm.op(BPF.LD_W_ABS, SECCOMP_DATA_ARCH);
  asm.op(BPF.JMP_JEQ_K, AUDIT_ARCH_X86_64, undefined, refuse);
  asm.op(BPF.LD_W_ABS, SECCOMP_DATA_NR);
  // x32 numbers carry the bit; as unsigned, every number at or above it is x32 or not a syscall.
  const search = asm.label();
  asm.op(BPF.JMP_JGE_K, X32_SYSCALL_BIT, refuse, search);
  asm.place(refuse);
  asm.ret(fallback);
  asm.place(search);
  emitSearch(asm, entries, fallback);
  const program = asm.assemble();
  if (program.length > MAX_INSTRUCTIONS) {
    throw new Error(`seccomp compiler: ${program.length} instructions, the kernel takes ${MAX_INSTRUCTIONS}`);
  }
  return { program, unknownNames: [...unknownNames].sort() };
}

/** The program as the kernel's `struct sock_filter` array (u16 code, u8 jt, u8 jf, u32 k; little-endian). */
export function encodeBpfProgram(program: readonly BpfInstruction[]): Uint8Array {
  const bytes = new Uint8Array(program.length * 8);
  const view = new DataView(bytes.buffer);
  program.forEach((instruction, index) => {
    view.setUint16(index * 8, instruction.code, true);
    view.setUint8(index * 8 + 2, instruction.jt);
    view.setUint8(index * 8 + 3, instruction.jf);
    view.setUint32(index * 8 + 4, instruction.k, true);
  });
  return bytes;
}

export function decodeBpfProgram(bytes: Uint8Array): BpfInstruction[] {
  if (bytes.length % 8 !== 0)
    throw new Error(`a BPF program is a whole number of 8-byte instructions, not ${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const program: BpfInstruction[] = [];
  for (let at = 0; at < bytes.length; at += 8) {
    program.push({
      code: view.getUint16(at, true),
      jt: view.getUint8(at + 2),
      jf: view.getUint8(at + 3),
      k: view.getUint32(at + 4, true),
    });
  }
  return program;
}
