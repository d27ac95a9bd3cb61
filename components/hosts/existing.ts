/**
 * A machine runner-fleet does not create (on-prem, Hetzner Robot, ...): no cloud resource, only
 * the common outputs from config, so deploys and the inventory treat it like any other host.
 */
import * as pulumi from "@pulumi/pulumi";
import type { ExistingHost as ExistingHostModel } from "../model";
import { HostComponent } from "./base";
import type { HostArgs } from "./types";

/** An existing machine (`provider: existing`); `image` and `networks` are not used. */
export type ExistingHostArgs = HostArgs<ExistingHostModel>;

export class ExistingHost extends HostComponent {
  readonly provider = "existing" as const;
  readonly publicAddress: pulumi.Output<string>;
  readonly privateAddress: pulumi.Output<string | undefined>;
  /** The address: a first install runs again only when the host points at another machine. */
  readonly identity: pulumi.Output<string>;

  constructor(name: string, args: ExistingHostArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:hosts:ExistingHost", "existing", name, args, opts);
    const { host } = args;
    if (!host.address) throw new Error(`hosts.${host.name}.address: is required for an existing machine`);

    this.publicAddress = pulumi.output(host.address);
    this.privateAddress = pulumi.output(host.privateAddress);
    this.identity = pulumi.output(host.address);
    this.registerOutputs({ publicAddress: this.publicAddress, privateAddress: this.privateAddress, identity: this.identity });
  }
}
