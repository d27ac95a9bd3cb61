// STUB: replaced by the cloud-init work (issue 3).
import type { FleetModel, HostModel } from "./model";

export interface UserDataInput {
  /** The host the user-data is for. */
  host: HostModel;
  /** Fleet-wide settings. */
  model: FleetModel;
  /** The host's pools.json, as rendered by pools.ts. */
  poolsJson: string;
  /** The host's AppRole role_id. */
  roleId: string;
  /** A response-wrapping token for the host's secret_id (single use, short TTL). */
  wrappedSecretId: string;
  /** Only with unsafe.githubAppKeyInUserData. */
  githubAppPrivateKey?: string;
}

export function renderUserData(input: UserDataInput): string {
  return `#cloud-config\n# ${input.host.name}\n`;
}
