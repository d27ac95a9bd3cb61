/**
 * An Azure VM booted from our uploaded image, in its location's shared resource group and subnet
 * (the subnet's NSG admits SSH from the admin networks only). Login is by SSH key only, as the
 * deploy user. Nested virtualization depends on the size alone (catalog.ts decides KVM).
 */
import * as compute from "@pulumi/azure-native/compute";
import * as network from "@pulumi/azure-native/network";
import * as pulumi from "@pulumi/pulumi";
import type { AzureHost as AzureHostModel } from "../model";
import { azureStorageType, hostTags, instanceChangeOptions } from "./common";
import { bootImage, HostComponent } from "./base";
import type { HostArgs } from "./types";

/** A host on Azure (`provider: azure`). */
export type AzureHostArgs = HostArgs<AzureHostModel>;

/** Azure wants customData base64-encoded; it reaches the provisioning agent at first boot only. */
export function azureCustomData(userData: string): string {
  return Buffer.from(userData, "utf8").toString("base64");
}

/** Azure applies these only at creation and refuses to change them on a running VM. */
export const AZURE_FIRST_BOOT = ["osProfile.customData", "osProfile.adminUsername", "osProfile.linuxConfiguration.ssh.publicKeys"];

export class AzureHost extends HostComponent {
  readonly provider = "azure" as const;
  readonly publicAddress: pulumi.Output<string>;
  readonly privateAddress: pulumi.Output<string | undefined>;
  readonly instance: compute.VirtualMachine;
  readonly identity: pulumi.Output<string>;

  constructor(name: string, args: AzureHostArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:hosts:AzureHost", "azure", name, args, opts);
    const { host, model, image } = args;
    const vmImage = bootImage(host, "azure", image)!;
    const net = args.networks.azure(host.location);

    const tags = hostTags(host, model);
    const location = host.location;
    const resourceGroupName = net.resourceGroupName;

    // Static: the address must not move when the VM is deallocated (inventory and deploys use it).
    const ip = new network.PublicIPAddress(`${host.name}-ip`, {
      resourceGroupName,
      location,
      sku: { name: "Standard" },
      publicIPAllocationMethod: "Static",
      publicIPAddressVersion: "IPv4",
      tags,
    }, { parent: this, protect: host.protect });
    const nic = new network.NetworkInterface(`${host.name}-nic`, {
      resourceGroupName,
      location,
      ipConfigurations: [{
        name: "primary",
        primary: true,
        subnet: { id: net.subnetId },
        privateIPAllocationMethod: "Dynamic",
        publicIPAddress: { id: ip.id },
      }],
      tags,
    }, { parent: this });

    const user = model.deploy.sshUser;
    const storageAccountType = azureStorageType(host.size);
    this.instance = new compute.VirtualMachine(host.name, {
      resourceGroupName,
      location,
      hardwareProfile: { vmSize: host.size },
      networkProfile: { networkInterfaces: [{ id: nic.id, primary: true }] },
      osProfile: {
        computerName: host.name,
        adminUsername: user,
        customData: pulumi.output(args.userData).apply(azureCustomData),
        linuxConfiguration: {
          disablePasswordAuthentication: true,
          ssh: { publicKeys: model.ssh.authorizedKeys.map((keyData) => ({ path: `/home/${user}/.ssh/authorized_keys`, keyData })) },
        },
      },
      storageProfile: {
        imageReference: { id: vmImage.imageId },
        osDisk: {
          createOption: "FromImage",
          diskSizeGB: host.osDiskGib,
          managedDisk: { storageAccountType },
          deleteOption: "Delete",
        },
        // containerd's images and snapshots: a separate disk so the OS disk stays small.
        ...(host.dataDiskGib
          ? { dataDisks: [{ lun: 0, createOption: "Empty", diskSizeGB: host.dataDiskGib, managedDisk: { storageAccountType }, deleteOption: "Delete" }] }
          : {}),
      },
      tags,
    }, {
      parent: this,
      protect: host.protect,
      // Azure would try to change the image of a running VM in place (and fail): force a
      // replacement when the user opted in, ignore the change otherwise.
      ...instanceChangeOptions(host, { firstBoot: AZURE_FIRST_BOOT, image: ["storageProfile.imageReference"], forceReplaceOnImage: true }),
    });

    this.publicAddress = ip.ipAddress.apply((a) => a ?? "");
    this.privateAddress = nic.ipConfigurations.apply((configs) => configs?.[0]?.privateIPAddress ?? undefined);
    this.identity = this.instance.id;
    this.registerOutputs({ publicAddress: this.publicAddress, privateAddress: this.privateAddress, identity: this.identity });
  }
}
