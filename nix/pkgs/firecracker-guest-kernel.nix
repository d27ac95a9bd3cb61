# The runner microVMs' kernel. Firecracker boots it directly with no initrd, so
# the drivers for its root disk must be built in: virtio-mmio (Firecracker's
# device transport), virtio-blk (the rootfs), ext4. nixpkgs' kernels build those
# as modules (qemu-guest.nix loads them from an initrd), so the host kernel
# cannot serve as the guest's. Like nixos-fireactions, we build a 6.1 LTS
# kernel from Firecracker's own CI guest config (CONFIG_MODULES off, all of the
# above =y), here from nixpkgs' linux_6_1 source, plus
# firecracker-guest-kernel.config; the build fails if a required option is not
# =y after olddefconfig.
{
  lib,
  stdenv,
  fetchurl,
  linux_6_1,
  bc,
  bison,
  elfutils,
  flex,
  hostname,
  openssl,
  perl,
}:
let
  arch =
    if stdenv.hostPlatform.isx86_64 then
      "x86_64"
    else if stdenv.hostPlatform.isAarch64 then
      "aarch64"
    else
      throw "firecracker-guest-kernel: Firecracker runs on x86_64 and aarch64 only";

  firecrackerRelease = "v1.13.0";
  baseConfig =
    {
      x86_64 = fetchurl {
        url = "https://raw.githubusercontent.com/firecracker-microvm/firecracker/${firecrackerRelease}/resources/guest_configs/microvm-kernel-ci-x86_64-6.1.config";
        hash = "sha256-OR2NSY+J5Ws5G+XqSnUB68RObQlDMeyqve/tHaayipY=";
      };
      aarch64 = fetchurl {
        url = "https://raw.githubusercontent.com/firecracker-microvm/firecracker/${firecrackerRelease}/resources/guest_configs/microvm-kernel-ci-aarch64-6.1.config";
        hash = "sha256-yPuMNxRCeCh6aty1F8/TNZ9tsAhhgTcQCqenZxa9BmI=";
      };
    }
    .${arch};

  # Firecracker boots an uncompressed ELF vmlinux on x86_64 and a PE Image on aarch64.
  target = if arch == "x86_64" then "vmlinux" else "Image";
  built = if arch == "x86_64" then "vmlinux" else "arch/arm64/boot/Image";
  kernelArch = if arch == "x86_64" then "x86_64" else "arm64";

  extraConfig = ./firecracker-guest-kernel.config;
  required = lib.filter (l: lib.hasPrefix "CONFIG_" l) (
    lib.splitString "\n" (builtins.readFile extraConfig)
  );
in
stdenv.mkDerivation {
  pname = "firecracker-guest-kernel";
  inherit (linux_6_1) version src;

  nativeBuildInputs = [ bc bison elfutils flex hostname openssl perl ];
  hardeningDisable = [ "all" ];
  # Kernel helper scripts start with #!/usr/bin/env, which the build sandbox lacks.
  postPatch = "patchShebangs scripts";
  makeFlags = [ "ARCH=${kernelArch}" ];

  configurePhase = ''
    runHook preConfigure
    cat ${baseConfig} ${extraConfig} > .config
    make ARCH=${kernelArch} olddefconfig
    missing=0
    for want in ${lib.escapeShellArgs required}; do
      if ! grep -qxF "$want" .config; then
        echo "firecracker-guest-kernel: $want did not survive olddefconfig" >&2
        missing=1
      fi
    done
    [ "$missing" = 0 ]
    runHook postConfigure
  '';

  buildPhase = ''
    runHook preBuild
    make ARCH=${kernelArch} -j$NIX_BUILD_CORES ${target}
    runHook postBuild
  '';

  installPhase = ''
    runHook preInstall
    install -D -m 0644 ${built} $out/${target}
    install -D -m 0644 .config $out/config
    runHook postInstall
  '';

  dontStrip = true;
  dontPatchELF = true;
  dontFixup = true;

  passthru = {
    # The file services.fireactions points kernel_image_path at.
    imagePath = target;
    inherit required;
  };

  meta = {
    description = "Guest kernel for runner-fleet's Firecracker microVMs (no initrd, no modules)";
    license = lib.licenses.gpl2Only;
    platforms = [ "x86_64-linux" "aarch64-linux" ];
  };
}
