/**
 * The one shape every host has, whatever runs it: the rest of the program never asks which
 * cloud a host lives on.
 */
import type * as pulumi from "@pulumi/pulumi";
import type { ImageRef } from "../images/types";
import type { Arch, FleetModel, HostModel, Provider } from "../model";
import type { SharedNetworks } from "./network";

export interface HostOutputs {
  name: string;
  provider: Provider;
  arch: Arch;
  /** The user the deploy tools log in as. */
  sshUser: string;
  /** The address deploy tools reach the host at. */
  publicAddress: pulumi.Output<string>;
  privateAddress: pulumi.Output<string | undefined>;
  /**
   * The public IPv6 the machine sends from, as an address or the network it owns whole, where
   * its cloud gives it one (Hetzner, DigitalOcean): its Vault role is bound to it too, since a
   * dual-stack Vault is reached over IPv6.
   */
  publicIpv6?: pulumi.Output<string | undefined>;
  /** The machine itself; undefined for existing machines. */
  instance?: pulumi.CustomResource;
  /**
   * Changes only when the machine is a new machine (its instance id, or the address of an
   * existing one): the trigger for a first install.
   */
  identity: pulumi.Output<string>;
}

/** What every host component receives. */
export interface HostArgs<H extends HostModel = HostModel> {
  /** The validated host from the fleet model. */
  host: H;
  /** Fleet-wide settings (stack name, SSH keys and admin CIDRs, deploy user). */
  model: FleetModel;
  /** Rendered cloud-init user-data; a secret, and never a reason to replace the machine. */
  userData: pulumi.Input<string>;
  /** The image to boot from, for hosts that boot from our image. */
  image?: ImageRef;
  /** Network pieces shared by every host in a region (created once by the fleet). */
  networks: SharedNetworks;
}
