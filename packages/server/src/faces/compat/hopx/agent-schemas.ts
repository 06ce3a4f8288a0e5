/**
 * What the VM-agent routes share: the path parameter, HopX's request fields for a working
 * directory (the SDK sends `workdir`, HopX's reference names `working_dir`) and per-call variables,
 * and the check that text reaching argv or env holds no NUL byte.
 */
import { Type } from "typebox";
import { ShoalError } from "../../../errors/shoal-error.ts";
import { envNamePattern, StringMapSchema } from "../../v1/sandboxes.routes.ts";

export const AgentParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });

const DirText = Type.String({ minLength: 1, maxLength: 4096, pattern: "^/", description: "An absolute path" });

/** Body fields every execution route accepts besides its own. */
export const ExecutionFields = {
  workdir: Type.Optional(DirText),
  working_dir: Type.Optional(DirText),
  env: Type.Optional(
    Type.Union([
      StringMapSchema("Added over the sandbox's environment, for this call", 256, envNamePattern),
      Type.Null(),
    ]),
  ),
};

export interface ExecutionBody {
  workdir?: string;
  working_dir?: string;
  env?: Record<string, string> | null;
}

/** The call's working directory: HopX's default is /workspace. */
export function workingDirOf(body: ExecutionBody): string {
  return body.working_dir ?? body.workdir ?? "/workspace";
}

export function envOf(body: ExecutionBody): Record<string, string> | undefined {
  return body.env ?? undefined;
}

/** Text that reaches a process through argv or env: a NUL byte would cut it short. */
export function refuseNul(fields: Record<string, string | undefined>): void {
  for (const [field, value] of Object.entries(fields)) {
    if (value?.includes("\0")) {
      throw new ShoalError("VALIDATION_ERROR", { details: { fields: { [field]: "must not contain NUL bytes" } } });
    }
  }
}

export function envFields(env: Readonly<Record<string, string>> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(env ?? {}).map(([name, value]) => [`env.${name}`, value]));
}
