# STAND-IN, not nixpkgs: the few package attributes our modules name, as
# records that remember how they were built, so test/nix.test.ts can read a
# script's text or a package's name. Every attribute used here exists in
# nixpkgs; docs/upstream.md cites each one.
let
  pkg = name: {
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = name;
  };
  names = [
    "awscli2" "azure-cli" "bash" "cni-plugins" "coreutils" "curl" "e2fsprogs" "firecracker"
    "forgejo-runner" "gawk" "git" "gitea-actions-runner" "gnused" "hcloud" "hcloud-upload-image"
    "htop" "iproute2" "iptables" "jq" "lvm2" "nftables" "nix" "nixos-anywhere" "nodejs" "openssh" "openssl" "systemd"
    "thin-provisioning-tools" "util-linux" "vault" "wget"
    # registry-mirror.nix (#23)
    "distribution"
  ];
in
builtins.listToAttrs (map (n: { name = n; value = pkg n; }) names)
// {
  writeShellApplication = args: pkg args.name // { inherit (args) text runtimeInputs; };
  # imagePath: the guest kernel package (nix/pkgs/firecracker-guest-kernel.nix) carries one.
  callPackage = path: args: pkg (baseNameOf (toString path)) // { imagePath = "vmlinux"; };
  writers.writePython3Bin = name: _: _: pkg name;
  writeShellScript = name: text: pkg name // { inherit text; };
  writeText = name: text: pkg name // { inherit text; };
  runCommand = name: env: script: pkg name // { inherit script; };
  runtimeShell = "/nix/store/00000000000000000000000000000000-bash/bin/bash";
}
