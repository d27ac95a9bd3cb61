/**
 * The floor stack of `npm run bench -- --engine` (scripts/bench-engine.ts): `count` bare
 * command:local:Command resources (create `true`), plus the vault provider configured against
 * the same OpenBao as the fleet's, so both providers are loaded. `changed` commands get another
 * create text: the floor of a preview after an edit that updates that many resources.
 */
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import * as vault from "@pulumi/vault";

const config = new pulumi.Config("floor");
const count = config.requireNumber("count");
const changed = config.getNumber("changed") ?? 0;
new vault.Provider("floor", { address: config.require("vaultAddress") });
for (let i = 0; i < count; i++) {
  new command.local.Command(`c-${i}`, { create: i < changed ? "true # edited" : "true" });
}
