// STUB: replaced by the host work (issue 4).
import * as pulumi from "@pulumi/pulumi";
import type { HostArgs, HostOutputs } from "./types";

export function createHost(args: HostArgs, opts: pulumi.ComponentResourceOptions): HostOutputs {
  void opts;
  const addr = args.host.provider === "existing" ? args.host.address : "203.0.113.1";
  return {
    name: args.host.name, provider: args.host.provider, arch: args.host.arch, sshUser: args.model.deploy.sshUser,
    publicAddress: pulumi.output(addr), privateAddress: pulumi.output(undefined), identity: pulumi.output(addr),
  };
}
