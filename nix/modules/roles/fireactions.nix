# Role "fireactions": GitHub runners in Firecracker microVMs. The daemon's
# config is rendered at every start from /etc/runner-fleet/pools.json and the
# GitHub App secrets vault-agent writes to /run/secrets.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (config.runnerFleet) host;
  renderer = pkgs.callPackage ../../pkgs/render-fireactions-config.nix { };
  drain = pkgs.callPackage ../../pkgs/runner-fleet-drain.nix { };
  # The guest boots without an initrd: its kernel has virtio and ext4 built in.
  guestKernel = pkgs.callPackage ../../pkgs/firecracker-guest-kernel.nix { };
  kernelImage = "${guestKernel}/${guestKernel.imagePath}";
  tcRedirectTap = pkgs.callPackage ../../pkgs/tc-redirect-tap.nix { };
  vmPort = pkgs.callPackage ../../pkgs/cni-vm-port.nix { };
  thinpool = pkgs.callPackage ../../pkgs/runner-fleet-thinpool.nix { };
  disks = config.runnerFleet.dataDisks;
  # The API's basic-auth password (modules/fireactions-api-auth.nix writes it per boot).
  api = import ../../lib/fireactions-api.nix;
  # fireactions v0.4.0 runs CNI from /opt/cni/bin and /etc/cni/net.d, hard-coded
  # (server/pool.go); the plugins are linked there.
  cniPlugins = pkgs.symlinkJoin {
    name = "fireactions-cni-plugins";
    paths = [ pkgs.cni-plugins tcRedirectTap vmPort ];
  };
  # The config is rendered at every start (preStart) and reload (ExecReload).
  renderFlags = [
    "--pools" "/etc/runner-fleet/pools.json"
    "--app-id-file" "/run/secrets/github-app-id"
    "--app-key-file" "/run/secrets/github-app-key.pem"
    "--out" config.services.fireactions.configFile "--mode" "0640"
    "--firecracker" (lib.getExe pkgs.firecracker)
    "--kernel" kernelImage
    "--api-password-file" api.passwordFile
  ];
  # The registry mirror's VM configs into every pool's MMDS metadata (modules/registry-mirror.nix).
  mirrorFlags = lib.optionals (config.runnerFleet.registryMirror.vmMetadata != null) [
    "--vm-metadata" config.runnerFleet.registryMirror.vmMetadata
  ];
  renderCommand = "${lib.getExe renderer} ${lib.escapeShellArgs (renderFlags ++ mirrorFlags)}";
  # Bridge, subnet, gateway, CNI config and DNS forwarder settings, as data.
  vmNet = import ../../lib/vm-network.nix;
  # The VM port binding table, loaded empty at every start (see ExecStartPre).
  vmPorts = (import ../../lib/nftables-rules.nix { inherit (vmNet) bridge gateway portsTable; }).vmPorts;
  hardening = import ../../lib/host-hardening.nix;
in
{
  imports = [ ../scaler.nix ../fireactions-api-auth.nix ];
  options.runnerFleet.fireactions = {
    bridge = lib.mkOption {
      type = lib.types.str;
      default = vmNet.bridge;
      readOnly = true;
      description = "Bridge the microVMs sit on (security.nix filters it).";
    };
    subnet = lib.mkOption {
      type = lib.types.str;
      default = vmNet.subnet;
      readOnly = true;
      description = "microVM address range.";
    };
    gateway = lib.mkOption {
      type = lib.types.str;
      default = vmNet.gateway;
      readOnly = true;
      description = "The bridge's address: the microVMs' gateway and DNS server.";
    };
  };

  config = lib.mkIf (builtins.elem "fireactions" host.roles) {
    services.fireactions = {
      enable = true;
      path = [ pkgs.firecracker ];
      preStart = renderCommand;
    };

    systemd.services.fireactions = {
      # A switch must not restart it: that stops every microVM and the jobs in them
      # (v0.4.0 server.go Run -> Pool.Stop). runner-fleet-restart-changed restarts it after a
      # drain when its unit changed; pool edits reload it (ExecReload) and restart nothing.
      restartIfChanged = false;
      # preStart renders the API password into the config; the unit writing it never fails.
      requires = [ api.unit ];
      after = [ api.unit ];
      # The VM port binding table, fresh: every VM is gone when fireactions starts, and so must their elements be.
      serviceConfig.ExecStartPre = (import ../../lib/record-unit.nix { inherit pkgs; unit = "fireactions"; }) ++ [ "+${pkgs.nftables}/bin/nft -f ${pkgs.writeText "${vmPorts.name}.nft" vmPorts.text}" ];
      # Render, POST /api/v1/reload, pause and drain the pools that left the config.
      serviceConfig.ExecReload = "${lib.getExe drain} --config ${config.services.fireactions.configFile} --reload -- ${renderCommand}";
      # VM console logs (pools/<pool>/<runner>.log, os.Create: 0666 less the umask) and pool
      # directories were world-readable. Now 0640/2750 in the setgid pools directory, so they
      # belong to the log group, which the scaler (a DynamicUser that reads them) joins.
      serviceConfig.UMask = "0027";
      # Firecracker runs without its jailer (fireactions v0.4.0 never uses it). What the unit
      # can take without breaking KVM, CNI (it writes /proc/sys, loads no modules itself),
      # containerd's devmapper or the VMs' taps; from thpham/nixos-fireactions'
      # modules/fireactions/security/hardening.nix, less the filters that would.
      serviceConfig.NoNewPrivileges = true;
      serviceConfig.LockPersonality = true;
      serviceConfig.RestrictRealtime = true;
      serviceConfig.RestrictSUIDSGID = true;
      serviceConfig.ProtectClock = true;
      serviceConfig.ProtectKernelLogs = true;
      serviceConfig.SystemCallArchitectures = "native";
      serviceConfig.RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" "AF_VSOCK" ];
    };

    users.groups.${hardening.logGroup} = { };
    # The VMs' traffic is routed (security.nix keeps it to the bridge), and the hardened settings.
    boot.kernel.sysctl = hardening.sysctl // { "net.ipv4.ip_forward" = 1; };

    systemd.tmpfiles.rules = [
      "d /opt/cni 0755 root root -"
      "L+ /opt/cni/bin - - - - ${cniPlugins}/bin"
      # dnsmasq's dhcp-hostsdir must exist when it starts; the CNI plugin fills it.
      "d ${vmNet.dhcpHostsDir} 0755 root root -"
      # setgid: the pool directories fireactions makes in it, and the logs in those, take its group.
      "d /var/lib/fireactions/pools 2750 root ${hardening.logGroup} -"
    ];

    # One CNI network for all microVMs: a NATed bridge; tc-redirect-tap hands
    # the veth to Firecracker's tap device. fireactions v0.4.0 asks CNI for the
    # network named "fireactions" in /etc/cni/net.d (server/pool.go). The guest
    # gets address, gateway and nameserver (the gateway) from the kernel's ip=.
    environment.etc."cni/net.d/fireactions.conflist".text = builtins.toJSON vmNet.cniConflist;

    # The guests' DNS: a forwarder on the gateway address only, to the host's
    # own resolvers (which the guard keeps the guests from asking directly),
    # and static DHCP for images that ask (lib/vm-network.nix).
    # resolveLocalQueries = false leaves the host's resolv.conf alone.
    services.dnsmasq = {
      enable = true;
      resolveLocalQueries = false;
      settings = vmNet.dnsmasq;
    };
    # The NixOS firewall drops what its own input chain does not allow, on top
    # of the guard (lib/nftables-rules.nix), which narrows this to the gateway.
    networking.firewall.interfaces.${vmNet.bridge} = {
      allowedUDPPorts = [ 53 67 ];
      allowedTCPPorts = [ 53 ];
    };


    # fireactions turns images into block devices through containerd's
    # devmapper snapshotter, which needs a thin pool: the whole "containerd" data disk when the
    # host has one (data-disks.nix; encrypted with a key for this boot, by default), else sparse
    # files on the root disk.
    virtualisation.containerd.settings.plugins."io.containerd.snapshotter.v1.devmapper" = {
      root_path = "/var/lib/containerd/devmapper";
      pool_name = "containerd-pool";
      base_image_size = "10GB";
    };
    systemd.services.containerd-thinpool = {
      description = "devmapper thin pool for containerd";
      wantedBy = [ "containerd.service" ];
      before = [ "containerd.service" ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = lib.escapeShellArgs ([ (lib.getExe thinpool) "--name" "containerd-pool" ]
          ++ (if disks.thinPoolDisk != null then
            [ "--disk" disks.thinPoolDisk "--state-dir" "/var/lib/containerd" ]
            ++ lib.optional disks.thinPoolEncrypt "--encrypt"
          else
            [ "--dir" "/var/lib/containerd/devmapper" "--size-gib" "40" ]));
      };
    };
    systemd.services.containerd.path = with pkgs; [ lvm2 thin-provisioning-tools e2fsprogs ];
  };
}
