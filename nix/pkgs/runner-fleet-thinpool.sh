# runner-fleet-thinpool: the devmapper thin pool containerd's snapshotter (and so fireactions'
# VMs) use, sized from what it is given (#23).
#   runner-fleet-thinpool --name POOL (--disk DEV [--state-dir DIR] | --dir DIR --size-gib N)
#                         [--encrypt] [--print]
# --disk: the whole disk (a data disk with purpose "thinpool"). --dir: sparse files under DIR
# (no such disk; the old layout). --encrypt: dm-crypt plain mode with a fresh random key every
# boot (nothing on a runner disk needs to survive a reboot) and discards passed down, so freed
# blocks of finished VMs are discarded. A pool on a disk starts empty at every boot, so
# --state-dir (containerd's /var/lib/containerd) is emptied with it: containerd must not remember
# snapshots the new pool does not have; images come back through the registry mirror. Metadata takes 1/256 of the data, 2 MiB to 16 GiB
# (dm-thin's metadata limit). --print shows the plan and changes nothing.
name="" disk="" dir="" size_gib="" state_dir="" encrypt=0 print=0
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name=$2; shift 2 ;;
    --disk) disk=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --size-gib) size_gib=$2; shift 2 ;;
    --state-dir) state_dir=$2; shift 2 ;;
    --encrypt) encrypt=1; shift ;;
    --print) print=1; shift ;;
    *) echo "runner-fleet-thinpool: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$name" ] || { [ -z "$disk" ] && [ -z "$dir" ]; } || { [ -n "$disk" ] && [ -n "$dir" ]; }; then
  echo "runner-fleet-thinpool: --name and one of --disk or --dir are required" >&2
  exit 2
fi
if [ -n "$dir" ] && ! [ "$size_gib" -ge 1 ] 2>/dev/null; then
  echo "runner-fleet-thinpool: --dir needs --size-gib (a positive number)" >&2
  exit 2
fi
if [ "$print" -eq 0 ] && dmsetup status "$name" >/dev/null 2>&1; then
  echo "runner-fleet-thinpool: $name exists"
  exit 0
fi

run() {
  if [ "$print" -eq 1 ]; then echo "$*"; else "$@"; fi
}
sectors_of() {
  if [ -n "$disk" ]; then blockdev --getsz "$1"; else echo $((size_gib * 2097152)); fi
}

if [ -n "$disk" ]; then
  [ -b "$disk" ] || { echo "runner-fleet-thinpool: $disk is not a block device" >&2; exit 1; }
  total=$(sectors_of "$disk")
  base=$disk
else
  total=$(sectors_of "")
fi
# Metadata: 1/256 of the whole, within 2 MiB (4096 sectors) and 16 GiB (33554432 sectors).
meta=$((total / 256))
[ "$meta" -lt 4096 ] && meta=4096
[ "$meta" -gt 33554432 ] && meta=33554432
data=$((total - meta))
# 64 KiB blocks (128 sectors); low-water mark 32768 blocks, as the sparse-file pool had.
echo "# $name: $((total / 2048)) MiB: metadata $((meta / 2048)) MiB, data $((data / 2048)) MiB$([ "$encrypt" -eq 1 ] && echo ', encrypted with a key for this boot only, discards on')"

if [ -n "$dir" ]; then
  run mkdir -p "$dir"
  # Files from before are kept as they are: the pool in them keeps its metadata and VMs' disks.
  [ -f "$dir/data" ] || run truncate -s "$((data * 512))" "$dir/data"
  [ -f "$dir/metadata" ] || run truncate -s "$((meta * 512))" "$dir/metadata"
  if [ "$print" -eq 1 ]; then
    datadev="\$data_loop" metadev="\$meta_loop"
    echo "data_loop=\$(losetup --find --show $dir/data)"
    echo "meta_loop=\$(losetup --find --show $dir/metadata)"
  else
    datadev=$(losetup --find --show "$dir/data")
    metadev=$(losetup --find --show "$dir/metadata")
    data=$(blockdev --getsz "$datadev")
  fi
  base=""
fi
if [ -n "$base" ]; then
  if [ "$encrypt" -eq 1 ]; then
    # plain mode: no header on the disk, the key from /dev/urandom is never stored anywhere.
    run cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --key-file /dev/urandom \
      --allow-discards "$base" "$name-crypt"
    base=/dev/mapper/$name-crypt
  fi
  run dmsetup create "$name-meta" --table "0 $meta linear $base 0"
  run dmsetup create "$name-data" --table "0 $data linear $base $meta"
  metadev=/dev/mapper/$name-meta datadev=/dev/mapper/$name-data
  # A new key means old metadata is noise: zero its first block so the pool starts empty.
  run dd if=/dev/zero of="$metadev" bs=4096 count=1 conv=fsync status=none
  if [ -n "$state_dir" ]; then
    run find "$state_dir" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +
  fi
fi
# skip_block_zeroing: a fresh (or freshly keyed) pool has nothing to leak; discards pass down
# by default (no ignore_discard/no_discard_passdown).
run dmsetup create "$name" --table "0 $data thin-pool $metadev $datadev 128 32768 1 skip_block_zeroing"
