# Roles "forgejo-runner" / "gitea-runner": an Actions runner that executes jobs
# directly on the host (label native-nix:host), so builds reuse the host's Nix
# store. Only for trusted repositories: jobs are not isolated from the host.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (config.runnerFleet) inventory host;

  # The runner registers against this URL at build time; inventory.json carries
  # it whenever the stack config sets runner-fleet:forgejo / runner-fleet:gitea.
  urlOf = kind: inventory.${kind}.url or "https://${kind}.invalid";
  labelsOf = kind: inventory.${kind}.labels or [ "native-nix:host" ];
  # deploy.drainTimeoutMinutes: how long a stop waits for running jobs (forgejo-runner's own
  # [runner].shutdown_timeout: on TERM it stops polling and waits that long; docs/upstream.md).
  drainMinutes = inventory.drain.timeoutMinutes or 60;

  mkInstance = kind: {
    enable = true;
    name = "${host.name}-${kind}";
    url = urlOf kind;
    # vault-agent renders "TOKEN=..." here; see vault-agent.nix.
    tokenFile = "/run/secrets/${kind}-runner-token";
    labels = labelsOf kind;
    hostPackages = with pkgs; [
      bash
      coreutils
      curl
      gawk
      git
      gnused
      nodejs
      wget
      config.nix.package
    ];
    settings.runner.capacity = 4;
    settings.runner.shutdown_timeout = "${toString drainMinutes}m";
  };

  # The unit of an instance (nixpkgs' gitea-actions-runner module names it so).
  unitOf = kind: "gitea-runner-${kind}";
  gracefulUnit = kind: {
    # A switch must not restart it mid-job; runner-fleet-restart-changed restarts it after the
    # switch, and the stop then waits for running jobs (shutdown_timeout). systemd must not
    # kill it first: TimeoutStopSec outlasts shutdown_timeout.
    restartIfChanged = false;
    serviceConfig.TimeoutStopSec = "${toString (drainMinutes + 2)}min";
    serviceConfig.ExecStartPre = (import ../../lib/record-unit.nix { inherit pkgs; unit = unitOf kind; });
  };

  enabled = kind: builtins.elem "${kind}-runner" host.roles;

  # The module loads tokenFile as the unit's EnvironmentFile, and act_runner (Forgejo's and
  # Gitea's) copies the daemon's whole environment into every host-mode job
  # (act/runner/run_context.go startHostEnvironment: `for _, env := range os.Environ()`). So a
  # job could read TOKEN. Only `act_runner register` (the module's ExecStartPre) needs it: the
  # daemon starts without it. The registration the daemon keeps (.runner in its state
  # directory) stays readable to jobs: host runners are for trusted repositories (README).
  withoutToken = real: pkgs.writeShellApplication {
    name = "act_runner";
    text = ''
      if [ "''${1:-}" = daemon ]; then unset TOKEN; fi
      exec ${real}/bin/act_runner "$@"
    '';
  } // (if real ? version then { inherit (real) version; } else { });
in
{
  # The upstream module has one package for all its instances
  # (services.gitea-actions-runner.package); instances have none of their own.
  # So one host runs either Forgejo's runner or Gitea's, not both.
  # The units start once the token is rendered: modules/secrets.nix.
  config = lib.mkMerge [
    {
      assertions = [
        {
          assertion = !(enabled "forgejo" && enabled "gitea");
          message = "runner-fleet: host ${host.name} has both forgejo-runner and gitea-runner; nixpkgs' gitea-actions-runner module runs one package per host";
        }
      ];
    }
    (lib.mkIf (enabled "forgejo") {
      services.gitea-actions-runner.package = withoutToken pkgs.forgejo-runner;
      services.gitea-actions-runner.instances.forgejo = mkInstance "forgejo";
      systemd.services.${unitOf "forgejo"} = gracefulUnit "forgejo";
      warnings = lib.optional (!(inventory ? forgejo)) "runner-fleet: inventory has no forgejo.url; ${host.name}'s runner cannot register";
    })
    (lib.mkIf (enabled "gitea") {
      services.gitea-actions-runner.package = withoutToken pkgs.gitea-actions-runner;
      services.gitea-actions-runner.instances.gitea = mkInstance "gitea";
      systemd.services.${unitOf "gitea"} = gracefulUnit "gitea";
      warnings = lib.optional (!(inventory ? gitea)) "runner-fleet: inventory has no gitea.url; ${host.name}'s runner cannot register";
    })
  ];
}
