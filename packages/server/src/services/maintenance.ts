/**
 * The operator's maintenance switch: while on, changes are refused and reads still work. It is
 * kept in the store so that every server sharing it agrees, and read from memory for at most
 * `cacheMs` between store reads.
 */
import type { Clock, SettingsRepository } from "./ports.ts";

export interface MaintenanceState {
  enabled: boolean;
  /** Expected end, RFC 3339, when the operator gave one. */
  maintenanceEnd: string | null;
  message: string | null;
}

const settingName = "maintenance";
const off: MaintenanceState = { enabled: false, maintenanceEnd: null, message: null };

export class MaintenanceService {
  private cached: { state: MaintenanceState; loadedAt: number } | undefined;

  constructor(
    private readonly settings: SettingsRepository,
    private readonly clock: Clock,
    private readonly cacheMs = 1000,
  ) {}

  async current(): Promise<MaintenanceState> {
    const now = this.clock().getTime();
    if (this.cached && now - this.cached.loadedAt < this.cacheMs) return this.cached.state;
    const state = ((await this.settings.get(settingName)) as MaintenanceState | undefined) ?? off;
    this.cached = { state, loadedAt: now };
    return state;
  }

  async set(state: MaintenanceState): Promise<MaintenanceState> {
    const now = this.clock();
    await this.settings.put(settingName, state, now.toISOString());
    this.cached = { state, loadedAt: now.getTime() };
    return state;
  }
}
