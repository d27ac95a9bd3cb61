# Role "gitlab-runner": a GitLab Runner with a shell executor, so jobs run on the host and
# build with its Nix (trusted projects only: jobs are not isolated from the host). nixpkgs'
# services.gitlab-runner registers it with a runner authentication token (glrt-...) from
# authenticationTokenConfigFile, which vault-agent renders as CI_SERVER_TOKEN=... (root-only:
# the module's configure step runs as root and writes the runner's own config.toml).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (config.runnerFleet) inventory host;
  enabled = builtins.elem "gitlab-runner" host.roles;
  # gitlab.url in the stack config; inventory.json carries it whenever it is set.
  url = inventory.gitlab.url or "https://gitlab.invalid";
  # deploy.drainTimeoutMinutes: on SIGQUIT gitlab-runner stops taking jobs and waits for the
  # running ones (commands/multi.go handleGracefulShutdown; docs/upstream.md); systemd turns the
  # stop into a kill only after this.
  drainMinutes = inventory.drain.timeoutMinutes or 60;
  unit = "gitlab-runner";
in
{
  config = lib.mkIf enabled {
    services.gitlab-runner = {
      enable = true;
      # KillSignal=SIGQUIT, KillMode=process, TimeoutStopSec=gracefulTimeout (upstream module).
      gracefulTermination = true;
      gracefulTimeout = "${toString drainMinutes}min";
      # Jobs at once on this host, across its runners.
      settings.concurrent = 4;
      extraPackages = with pkgs; [
        bash
        coreutils
        curl
        gawk
        git
        gnused
        config.nix.package
      ];
      services.nix = {
        executor = "shell";
        description = host.name;
        authenticationTokenConfigFile = "/run/secrets/gitlab-runner-token";
        # The file holds the token alone; the URL comes from config (same as CI_SERVER_URL).
        registrationFlags = [ "--url ${url}" ];
      };
    };

    systemd.services.${unit} = {
      # A switch must not restart (or reload) it mid-job; runner-fleet-restart-changed restarts
      # it after the switch when its unit changed, and the stop waits for running jobs.
      restartIfChanged = false;
      reloadIfChanged = lib.mkForce false;
      serviceConfig.ExecStartPre = import ../../lib/record-unit.nix { inherit pkgs unit; };
    };

    warnings = lib.optional (!(inventory ? gitlab)) "runner-fleet: inventory has no gitlab.url; ${host.name}'s runner cannot register";
  };
}
