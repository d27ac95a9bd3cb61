# Paths on a host that several modules (and the seed contract, docs/contracts.md)
# agree on. Plain data, importable without nixpkgs.
rec {
  etcDir = "/etc/runner-fleet";
  stateDir = "/var/lib/runner-fleet";
  roleIdFile = "${etcDir}/vault/role-id";
  wrappedSecretIdFile = "${etcDir}/vault/wrapped-secret-id";
  secretIdFile = "${stateDir}/vault/secret-id";
  vaultEnv = "${stateDir}/vault.env";
  secretsDir = "/run/secrets";
  hostJson = "${etcDir}/host.json";
  sshHostKeyPub = "/etc/ssh/ssh_host_ed25519_key.pub";
  # Which unit file each runner unit started from (lib/record-unit.nix); per boot.
  unitsDir = "/run/runner-fleet/units";
}
