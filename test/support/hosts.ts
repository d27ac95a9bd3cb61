/**
 * Builds every host of a model the way the fleet does (shared networks, createHost), under
 * mocks, with options captured. Import dynamically, after installMocks.
 */
import * as pulumi from "@pulumi/pulumi";
import { createHost } from "../../components/hosts";
import { SharedNetworks } from "../../components/hosts/network";
import type { HostOutputs } from "../../components/hosts/types";
import type { ImageRef } from "../../components/images/types";
import type { FleetModel, HostModel } from "../../components/model";
import { settle, type RecordedResource } from "../../scripts/mock-runtime";
import { captureOptions, registrationsSettled, type CapturedOptions } from "./mocks";

export const TEST_USER_DATA = "#cloud-config\nwrite_files: []\n";

export interface BuiltHosts {
  hosts: Record<string, HostOutputs>;
  networks: SharedNetworks;
  captured: CapturedOptions[];
}

export async function buildHosts(
  model: FleetModel,
  resources: RecordedResource[],
  image: (host: HostModel) => Omit<ImageRef, "imageId"> & { imageId: string } | undefined,
): Promise<BuiltHosts> {
  const { captured, transformation } = captureOptions();
  const networks = new SharedNetworks("network", { model });
  const hosts: Record<string, HostOutputs> = {};
  for (const host of model.hosts) {
    const ref = image(host);
    hosts[host.name] = createHost(
      { host, model, userData: pulumi.secret(TEST_USER_DATA), ...(ref ? { image: { ...ref, imageId: pulumi.output(ref.imageId) } } : {}), networks },
      { transformations: [transformation] },
    );
  }
  await Promise.all(Object.values(hosts).map((h) => settle(h.publicAddress)));
  await registrationsSettled(resources);
  return { hosts, networks, captured };
}
