// STUB: replaced by the deploy work (issue 7).
import * as pulumi from "@pulumi/pulumi";
import type { HostOutputs } from "./hosts/types";
import type { FleetModel } from "./model";

export interface FleetDeployArgs {
  /** The validated fleet model (deploy settings, hosts). */
  model: FleetModel;
  /** Every host, in the order of model.hosts. */
  hosts: HostOutputs[];
  /** inventory.json content for the flake. */
  inventoryJson: pulumi.Output<string>;
  /** Each host's pools.json, by host name. */
  poolsJson: Record<string, string>;
}

export class FleetDeploy extends pulumi.ComponentResource {
  constructor(name: string, args: FleetDeployArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:deploy:FleetDeploy", name, {}, opts);
    void args;
    this.registerOutputs({});
  }
}
