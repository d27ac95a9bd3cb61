// Azure hosts under mocks: VM settings, the shared per-location network, change options.
import { beforeAll, describe, expect, it } from "vitest";
import { containsSecret, installMocks, reveal, settle } from "../scripts/mock-runtime";
import { type CapturedOptions } from "./support/mocks";
import { TEST_USER_DATA } from "./support/hosts";
import { baseConfig, mockConfig, modelFrom, SSH_KEY } from "./support/fixtures";

const cfg = baseConfig();
cfg.ssh.adminCidrs = ["198.51.100.0/24", "2001:db8:100::/48"];
cfg.pools = { medium: { size: "medium" } };
cfg.hosts = {
  "az-1": { provider: "azure", size: "Standard_D16ds_v5", roles: ["fireactions"], pools: ["medium"], dataDiskGib: 256, protect: true },
  "az-2": { provider: "azure", size: "Standard_D8_v3", roles: ["cache"] },
  "az-north": { provider: "azure", size: "Standard_D8ds_v5", roles: ["cache"], location: "northeurope", replaceOnImageChange: true },
};
cfg.images = { azure: { x86_64: { path: "/nix/store/6nzfbdasmrlnpmjmxh2n3gpl8qyzi4hc-nixos-azure-image-25.11-x86_64-linux" } } };
const { resources } = installMocks({ stack: "test", ...mockConfig(cfg) });

let hosts: Record<string, any>;
let captured: CapturedOptions[];
const USER_DATA = TEST_USER_DATA;

const byType = (type: string) => resources.filter((r) => r.type === type);
const vm = (name: string) => byType("azure-native:compute:VirtualMachine").find((r) => r.name === name)!.inputs as any;
const optsOf = (type: string, name: string) => captured.find((c) => c.type === type && c.name === name)!.opts;

beforeAll(async () => {
  const { buildHosts } = await import("./support/hosts");
  ({ hosts, captured } = await buildHosts(modelFrom(cfg), resources, () => ({ cloud: "azure", arch: "x86_64", hash: "h", imageId: "/subscriptions/s/images/nixos-h" })));
});

describe("Azure VM", () => {
  it("boots the uploaded image with SSH-key-only login for the deploy user", () => {
    const inputs = vm("az-1");
    expect(inputs.hardwareProfile).toEqual({ vmSize: "Standard_D16ds_v5" });
    expect(inputs.storageProfile.imageReference).toEqual({ id: "/subscriptions/s/images/nixos-h" });
    const os = reveal(inputs.osProfile) as any;
    expect(os.adminUsername).toBe("deploy");
    expect(os.linuxConfiguration.disablePasswordAuthentication).toBe(true);
    expect(os.linuxConfiguration.ssh.publicKeys).toEqual([{ path: "/home/deploy/.ssh/authorized_keys", keyData: SSH_KEY }]);
    expect(os.adminPassword).toBeUndefined();
  });

  it("passes the user-data base64-encoded as customData, kept secret", () => {
    const inputs = vm("az-1");
    expect(containsSecret(inputs.osProfile)).toBe(true);
    const os = reveal(inputs.osProfile) as any;
    expect(Buffer.from(os.customData, "base64").toString("utf8")).toBe(USER_DATA);
  });

  it("sizes the OS disk and adds the containerd data disk only when asked", () => {
    expect(vm("az-1").storageProfile.osDisk).toMatchObject({ createOption: "FromImage", diskSizeGB: 64, managedDisk: { storageAccountType: "Premium_LRS" } });
    expect(vm("az-1").storageProfile.dataDisks).toEqual([expect.objectContaining({ lun: 0, createOption: "Empty", diskSizeGB: 256 })]);
    expect(vm("az-2").storageProfile.dataDisks).toBeUndefined();
    expect(vm("az-2").storageProfile.osDisk.managedDisk.storageAccountType).toBe("StandardSSD_LRS");
  });

  it("has a static Standard public IP and a NIC in the location's subnet", () => {
    const ip = byType("azure-native:network:PublicIPAddress").find((r) => r.name === "az-1-ip")!.inputs as any;
    expect(ip).toMatchObject({ publicIPAllocationMethod: "Static", sku: { name: "Standard" } });
    const nic = byType("azure-native:network:NetworkInterface").find((r) => r.name === "az-north-nic")!.inputs as any;
    expect(nic.ipConfigurations[0].subnet).toEqual({ id: "northeurope-hosts-id" });
    expect(nic.location).toBe("northeurope");
  });

  it("ignores customData and image changes; the opt-in replaces on image change", () => {
    const opts = optsOf("azure-native:compute:VirtualMachine", "az-1");
    const firstBoot = ["osProfile.customData", "osProfile.adminUsername", "osProfile.linuxConfiguration.ssh.publicKeys"];
    expect(opts.ignoreChanges).toEqual([...firstBoot, "storageProfile.imageReference"]);
    expect(opts.replaceOnChanges).toBeUndefined();
    const optIn = optsOf("azure-native:compute:VirtualMachine", "az-north");
    expect(optIn.ignoreChanges).toEqual(firstBoot);
    expect(optIn.replaceOnChanges).toEqual(["storageProfile.imageReference"]);
  });

  it("protects the VM (and with it its disks) only when asked", () => {
    expect(optsOf("azure-native:compute:VirtualMachine", "az-1").protect).toBe(true);
    expect(optsOf("azure-native:compute:VirtualMachine", "az-2").protect).toBe(false);
  });

  it("exposes the common outputs", async () => {
    const h = hosts["az-1"];
    expect([h.provider, h.arch, h.sshUser]).toEqual(["azure", "x86_64", "deploy"]);
    expect((await settle(h.publicAddress)).value).toMatch(/^198\.51\.100\.\d+$/);
    expect((await settle(h.privateAddress)).value).toMatch(/^10\.20\.\d+\.\d+$/);
    expect((await settle(h.identity)).value).toBe("az-1-id");
  });
});

describe("Azure shared network", () => {
  it("creates resource group, VNet, subnet and NSG once per location", () => {
    for (const type of ["azure-native:resources:ResourceGroup", "azure-native:network:VirtualNetwork", "azure-native:network:Subnet", "azure-native:network:NetworkSecurityGroup"]) {
      expect(byType(type), type).toHaveLength(2);
    }
    expect(byType("azure-native:network:NetworkSecurityGroup").map((r) => r.name).sort()).toEqual(["northeurope-ssh", "westeurope-ssh"]);
  });

  it("admits SSH from the admin CIDRs only, one rule per IP family, on the subnet", () => {
    const nsg = byType("azure-native:network:NetworkSecurityGroup").find((r) => r.name === "westeurope-ssh")!.inputs as any;
    expect(nsg.securityRules).toEqual([
      expect.objectContaining({ direction: "Inbound", access: "Allow", destinationPortRange: "22", sourceAddressPrefixes: ["198.51.100.0/24"] }),
      expect.objectContaining({ direction: "Inbound", access: "Allow", destinationPortRange: "22", sourceAddressPrefixes: ["2001:db8:100::/48"] }),
    ]);
    expect(JSON.stringify(nsg.securityRules)).not.toMatch(/0\.0\.0\.0\/0|::\/0|"\*"\]|Internet/);
    const subnet = byType("azure-native:network:Subnet").find((r) => r.name === "westeurope-hosts")!.inputs as any;
    expect(subnet.networkSecurityGroup).toEqual({ id: "westeurope-ssh-id" });
    expect(subnet.resourceGroupName).toBe("runner-fleet-test-westeurope");
  });
});
