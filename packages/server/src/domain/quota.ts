/**
 * Owner limits and host capacity, as pure arithmetic: given what is in use and what a sandbox
 * asks for, the first limit it would cross. The store runs this inside the same locked
 * transaction that inserts the sandbox, so concurrent creates cannot overshoot.
 *
 * @example
 *   checkQuota(usage, { sandboxes: 1, vcpu: 2, memoryMib: 512, diskMib: 1024 }, limits, capacity)
 *   // undefined, or { kind: "owner", resource: "vcpu", requested: 2, limit: 64, current: 63 }
 */
export interface ResourceAmounts {
  readonly sandboxes: number;
  readonly vcpu: number;
  readonly memoryMib: number;
  readonly diskMib: number;
}

export type OwnerLimits = ResourceAmounts;

/** What this node's host can hold, over all owners. */
export interface HostCapacity {
  readonly vcpu: number;
  readonly memoryMib: number;
}

export interface Usage {
  /** This owner's sandboxes everywhere. */
  readonly owner: ResourceAmounts;
  /** Every owner's sandboxes on this node. */
  readonly node: HostCapacity;
}

export type QuotaViolation =
  | {
      readonly kind: "owner";
      readonly resource: keyof ResourceAmounts;
      readonly requested: number;
      readonly limit: number;
      readonly current: number;
    }
  | {
      readonly kind: "capacity";
      readonly resource: keyof HostCapacity;
      readonly requested: number;
      readonly limit: number;
      readonly current: number;
    };

const ownerOrder: readonly (keyof ResourceAmounts)[] = ["sandboxes", "vcpu", "memoryMib", "diskMib"];
const hostOrder: readonly (keyof HostCapacity)[] = ["vcpu", "memoryMib"];

export function checkQuota(
  usage: Usage,
  request: ResourceAmounts,
  limits: OwnerLimits,
  capacity: HostCapacity,
): QuotaViolation | undefined {
  for (const resource of ownerOrder) {
    const requested = request[resource];
    if (requested > 0 && usage.owner[resource] + requested > limits[resource]) {
      return { kind: "owner", resource, requested, limit: limits[resource], current: usage.owner[resource] };
    }
  }
  for (const resource of hostOrder) {
    const requested = request[resource];
    if (requested > 0 && usage.node[resource] + requested > capacity[resource]) {
      return { kind: "capacity", resource, requested, limit: capacity[resource], current: usage.node[resource] };
    }
  }
  return undefined;
}
