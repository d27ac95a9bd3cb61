/**
 * runner-fleet: load and validate the stack config, build the fleet, export what `nix/` and
 * operators need. Everything else lives in components/.
 */
import * as pulumi from "@pulumi/pulumi";
import { Fleet } from "./components/fleet";
import { loadFleet } from "./components/load";

// The SDK records a stack trace for every promise it makes; source-mapping each one (tsx turns
// source maps on) costs about a quarter of a large fleet's run. Errors name key paths instead.
process.setSourceMapsEnabled(false);

const { model, secrets } = loadFleet();
for (const warning of model.warnings) pulumi.log.warn(warning);

const fleet = new Fleet("fleet", { model, secrets });

/** inventory.json for nix/: hosts, addresses, arch, roles, tags, SSH user. */
export const inventory = fleet.inventoryJson;
/** Public and private address of every host. */
export const addresses = fleet.addresses;
/** Host names per deploy wave, in rollout order. */
export const deployWaves = fleet.deployWaves;
/** Each host's pools.json, by host name. */
export const pools = fleet.poolsJson;
/** Each host's cloud-init user-data, by host name (secret). */
export const userData = fleet.userData;
/** Prometheus file_sd targets for every host's exporters (README "Monitoring"). */
export const prometheusTargets = fleet.prometheusTargets;
