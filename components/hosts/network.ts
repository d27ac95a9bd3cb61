// STUB: replaced by the host work (issue 4).
import * as pulumi from "@pulumi/pulumi";
import type { FleetModel } from "../model";

export interface SharedNetworksArgs {
  /** The validated fleet model: which regions need network pieces. */
  model: FleetModel;
}

export class SharedNetworks extends pulumi.ComponentResource {
  constructor(name: string, args: SharedNetworksArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:hosts:SharedNetworks", name, {}, opts);
    void args;
    this.registerOutputs({});
  }
}
