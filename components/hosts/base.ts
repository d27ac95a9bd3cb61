/**
 * What every host component shares: the common identity fields, and the checks that run before
 * any child exists (the right provider, an image of the right cloud and arch to boot from).
 */
import * as pulumi from "@pulumi/pulumi";
import type { ImageRef } from "../images/types";
import type { Arch, Cloud, HostModel, Provider } from "../model";
import type { HostArgs, HostOutputs } from "./types";

export abstract class HostComponent extends pulumi.ComponentResource implements HostOutputs {
  readonly name: string;
  abstract readonly provider: Provider;
  readonly arch: Arch;
  readonly sshUser: string;
  abstract readonly publicAddress: pulumi.Output<string>;
  abstract readonly privateAddress: pulumi.Output<string | undefined>;
  abstract readonly identity: pulumi.Output<string>;

  protected constructor(type: string, provider: Provider, name: string, args: HostArgs, opts?: pulumi.ComponentResourceOptions) {
    super(type, name, {}, opts);
    const { host, model } = args;
    if (host.provider !== provider) throw new Error(`hosts.${host.name}: ${type} got a ${host.provider} host`);
    this.name = host.name;
    this.arch = host.arch;
    this.sshUser = model.deploy.sshUser;
  }
}

/** The image a host boots from: required for `image: nix`, of its cloud and arch. */
export function bootImage(host: HostModel, cloud: Cloud, image: ImageRef | undefined): ImageRef | undefined {
  if (host.image !== "nix") return undefined;
  if (!image || image.cloud !== cloud) {
    throw new Error(`hosts.${host.name}: boots from our image but there is no ${cloud} ${host.arch} image (runner-fleet:images.${cloud}.${host.arch})`);
  }
  if (image.arch !== host.arch) throw new Error(`hosts.${host.name}: the image is ${image.arch} but the host is ${host.arch}`);
  return image;
}
