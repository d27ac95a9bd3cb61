/**
 * One machine per host, on whichever cloud the host names: every provider's component returns
 * the same HostOutputs, so the rest of the program never asks where a host lives.
 */
import type * as pulumi from "@pulumi/pulumi";
import type { AwsHost as AwsModel, AzureHost as AzureModel, DigitalOceanHost as DoModel, ExistingHost as ExistingModel, HetznerHost as HetznerModel } from "../model";
import { AwsHost } from "./aws";
import { AzureHost } from "./azure";
import { DigitalOceanHost } from "./digitalocean";
import { ExistingHost } from "./existing";
import { HetznerHost } from "./hetzner";
import type { HostArgs, HostOutputs } from "./types";

export { AwsHost } from "./aws";
export { AzureHost } from "./azure";
export { DigitalOceanHost } from "./digitalocean";
export { ExistingHost } from "./existing";
export { HetznerHost } from "./hetzner";
export type { HostArgs, HostOutputs } from "./types";

/** Creates the host's component for its provider; the component is named after the host. */
export function createHost(args: HostArgs, opts: pulumi.ComponentResourceOptions): HostOutputs {
  const { host } = args;
  switch (host.provider) {
    case "aws":
      return new AwsHost(host.name, { ...args, host } as HostArgs<AwsModel>, opts);
    case "azure":
      return new AzureHost(host.name, { ...args, host } as HostArgs<AzureModel>, opts);
    case "hetzner":
      return new HetznerHost(host.name, { ...args, host } as HostArgs<HetznerModel>, opts);
    case "digitalocean":
      return new DigitalOceanHost(host.name, { ...args, host } as HostArgs<DoModel>, opts);
    case "existing":
      return new ExistingHost(host.name, { ...args, host } as HostArgs<ExistingModel>, opts);
  }
}
