// STUB: replaced by the Vault work (issue 6).
import * as pulumi from "@pulumi/pulumi";
import type { FleetSecrets } from "./load";
import type { FleetModel } from "./model";

export interface FleetVaultArgs {
  /** The validated fleet model. */
  model: FleetModel;
  /** Secret config values to write into Vault. */
  secrets: FleetSecrets;
}

export interface HostVaultAccess {
  roleId: pulumi.Output<string>;
  /** Secret: a response-wrapping token for the host's secret_id. */
  wrappedSecretId: pulumi.Output<string>;
}

export class FleetVault extends pulumi.ComponentResource {
  constructor(name: string, args: FleetVaultArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:vault:FleetVault", name, {}, opts);
    void args;
    this.registerOutputs({});
  }
  access(host: string): HostVaultAccess {
    return { roleId: pulumi.output(`role-${host}`), wrappedSecretId: pulumi.secret(`wrapped-${host}`) };
  }
}
