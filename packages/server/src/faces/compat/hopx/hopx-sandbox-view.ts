/**
 * A Shoal sandbox as HopX's control plane answers it: HopX's status names, its resource fields,
 * and `public_host`, the base URL of the sandbox's VM-agent API on this server. The HopX template
 * a sandbox was created from is kept in its metadata, since several HopX templates share one
 * Shoal template; a sandbox created through Shoal's own API shows its Shoal template.
 *
 * @example
 *   const body = hopxSandboxView(sandbox, "http://127.0.0.1:8080");
 *   body.public_host; // "http://127.0.0.1:8080/compat/hopx/sandboxes/sbx_…/agent"
 */
import type { Sandbox } from "../../../domain/sandbox.ts";
import type { SandboxState } from "../../../domain/sandbox-state.ts";

export const hopxStatuses = ["creating", "running", "stopped", "paused", "error", "deleted"] as const;
export type HopxStatus = (typeof hopxStatuses)[number];

const statusOfState: Readonly<Record<SandboxState, HopxStatus>> = {
  pending: "creating",
  starting: "creating",
  running: "running",
  stopping: "stopped",
  stopped: "stopped",
  paused: "paused",
  failed: "error",
  deleted: "deleted",
};

/** The metadata entry naming the HopX template a sandbox was created from. */
export const HOPX_TEMPLATE_METADATA = "hopx_template";

export function hopxStatus(state: SandboxState): HopxStatus {
  return statusOfState[state];
}

/** The Shoal states that HopX shows as `status` (the list filter). */
export function statesOfStatus(status: HopxStatus): SandboxState[] {
  return (Object.keys(statusOfState) as SandboxState[]).filter((state) => statusOfState[state] === status);
}

/** Where the SDK sends the sandbox's VM-agent calls: `${public_host}/execute`, `/files/read`, … */
export function publicHostOf(origin: string, sandboxId: string): string {
  return `${origin}/compat/hopx/sandboxes/${encodeURIComponent(sandboxId)}/agent`;
}

export function hopxSandboxView(sandbox: Sandbox, origin: string) {
  const templateName = sandbox.metadata[HOPX_TEMPLATE_METADATA] ?? sandbox.template;
  const publicHost = publicHostOf(origin, sandbox.id);
  return {
    id: sandbox.id,
    object: "sandbox",
    status: hopxStatus(sandbox.state),
    public_host: publicHost,
    direct_url: publicHost,
    template_id: templateName,
    template_name: templateName,
    organization_id: sandbox.ownerId,
    node_id: sandbox.nodeId,
    // Shoal has no regions; a sandbox runs where its server runs.
    region: null,
    resources: { vcpu: sandbox.vcpuCount, memory_mb: sandbox.memSizeMib, disk_mb: sandbox.diskMib },
    // Shoal sandboxes get an empty network namespace.
    internet_access: false,
    timeout_seconds: sandbox.timeoutSeconds,
    expires_at: sandbox.state === "running" ? sandbox.expiresAt : null,
    created_at: sandbox.createdAt,
    updated_at: sandbox.updatedAt,
    started_at: sandbox.startedAt,
  };
}
