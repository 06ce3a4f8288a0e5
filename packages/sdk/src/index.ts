/**
 * @shoal/sdk: the typed client of Shoal.
 *
 * @example
 *   import { Sandbox } from "@shoal/sdk";
 *   const sandbox = await Sandbox.create();
 *   console.log((await sandbox.commands.run("node -v")).stdout);
 *   await sandbox.kill();
 */
export { ApiKeys } from "./api-keys.ts";
export type * from "./api-types.ts";
export { buildFailure, type FollowBuildOptions } from "./build-log.ts";
export { CodeContexts, type CodeLanguage, type CreateContextOptions, type RunCodeOptions } from "./code.ts";
export {
  type CommandHandle,
  type CommandLogs,
  Commands,
  type LogsOptions,
  type OutputCallbacks,
  type RunOptions,
  type WaitOptions,
} from "./commands.ts";
export { type CallOptions, type ConnectionOptions, DEFAULT_API_URL, resolveConnection } from "./config.ts";
export { SandboxEnvironment } from "./env.ts";
export * from "./errors.ts";
export {
  type ByteRange,
  type FileData,
  Files,
  type Progress,
  type ReadOptions,
  type UnpackResult,
  type WatchEvent,
} from "./files.ts";
export { errorCatalog } from "./generated/catalog.ts";
export type { components, paths } from "./generated/openapi.ts";
export {
  type CreateSandboxOptions,
  type ForkedSandbox,
  type ListSandboxesOptions,
  Sandbox,
  type SnapshotOptions,
} from "./sandbox.ts";
export { type ListSnapshotsOptions, Snapshots } from "./snapshots.ts";
export {
  type ArchiveData,
  type BuildLogsOptions,
  type CreateTemplateOptions,
  type ListTemplatesOptions,
  Templates,
  type UploadOptions,
} from "./templates.ts";
export type { Terminal, TerminalExit, TerminalOptions } from "./terminal.ts";
export { Transport } from "./transport.ts";
