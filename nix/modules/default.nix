# Everything a runner-fleet host imports; roles switch themselves on from
# runnerFleet.host. Provider modules change imports, so they are chosen
# outside the module system (hardware/default.nix).
{
  imports = [
    ./host.nix
    ./common.nix
    ./cloud-init.nix
    ./vault-agent.nix
    ./secrets.nix
    ./bootstrap.nix
    ./security.nix
    ./monitoring.nix
    ./fireactions.nix
    ./roles/fireactions.nix
    ./registry-mirror.nix
    ./data-disks.nix
    ./roles/forgejo-runner.nix
    ./roles/gitlab-runner.nix
    ./roles/cache.nix
    ./fleet-cache.nix
  ];
}
