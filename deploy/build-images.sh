#!/usr/bin/env bash
# Builds the attestd container images from binaries cargo already built,
# without pulling anything: each image is `FROM scratch` plus a root file
# system made here from the host — the stripped binary, exactly the shared
# libraries `ldd` lists, the dynamic loader, /etc/passwd and /etc/group with
# the non-root user `attestd` (10001:10001), an empty CA directory, /tmp, and
# the data and certificate mount points owned by that user (a fresh named
# volume takes the ownership of its mount point in the image).
#
#   deploy/build-images.sh [--profile release|debug] [--tag TAG] [--bin-dir DIR]
#                          [--with-prometheus]
#
#   attestd/node:TAG        attestd              (ports 8443 API, 7443 Raft)
#   attestd/gateway:TAG     attest-gateway       (port 8443)
#   attestd/wan:TAG         attest-chaos wan     (WAN emulator, control 7400)
#   attestd/prometheus:TAG  with --with-prometheus: this host's `prometheus`
#                           (Debian's package), for compose.monitoring.yaml
#
# Binaries come from $CARGO_TARGET_DIR/<profile> (default target dir
# ~/.cache/attestd/target), or from --bin-dir. Operators use the release
# profile (the default; `cargo build --release --bins` first). CI (the
# docker_deploy test) uses the debug binaries the test run already built:
# a release build does not fit CI's time budget. The glibc of the build
# host is copied in, so build the binaries and the images on one machine.
set -euo pipefail

profile="${ATTESTD_PROFILE:-release}"
tag="${ATTESTD_IMAGE_TAG:-local}"
bindir=""
prometheus=no
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --bin-dir) bindir="$2"; shift 2 ;;
    --with-prometheus) prometheus=yes; shift ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
target="${bindir:-${CARGO_TARGET_DIR:-$HOME/.cache/attestd/target}/$profile}"
for tool in docker ldd readelf strip tar; do
  command -v "$tool" >/dev/null || { echo "build-images: $tool not found" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
uid=10001

# make_rootfs BIN DIR: the binary (stripped) and what it needs to start;
# /var/lib/attestd is the data mount point of every image.
make_rootfs() {
  local src="$1" root="$2" lib interp
  [ -x "$src" ] || { echo "build-images: $src not found; build it first (cargo build --bins$([ "$profile" = release ] && echo ' --release'))" >&2; exit 1; }
  mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/var/lib/attestd" "$root/certs" "$root/etc/attestd"
  strip -o "$root/usr/local/bin/$(basename "$src")" "$src"
  # Libraries by the path the loader will look for; symlinks resolved.
  for lib in $(ldd "$src" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  interp="$(readelf -l "$src" | sed -n 's/.*interpreter: \(.*\)]$/\1/p')"
  if [ -n "$interp" ]; then
    mkdir -p "$root$(dirname "$interp")"
    cp -L "$interp" "$root$interp"
  fi
  printf 'root:x:0:0:root:/:/sbin/nologin\nattestd:x:%s:%s:attestd:/var/lib/attestd:/sbin/nologin\n' $uid $uid >"$root/etc/passwd"
  printf 'root:x:0:\nattestd:x:%s:\n' $uid >"$root/etc/group"
  # Host names from /etc/hosts (Docker writes it), then DNS (Docker's resolver).
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  chmod 1777 "$root/tmp"
  chown -R 0:0 "$root"
  chown $uid:$uid "$root/var/lib/attestd" "$root/certs"
}

# build IMAGE BINARY-PATH DOCKERFILE-TAIL
build() {
  local image="$1" bin="$2" tail="$3" ctx="$work/$1"
  mkdir -p "$ctx"
  make_rootfs "$bin" "$ctx/rootfs"
  # A tarball keeps the ownership set above (COPY would make it root's).
  tar -C "$ctx/rootfs" --numeric-owner --sort=name --mtime=@0 -cf "$ctx/rootfs.tar" .
  {
    echo "FROM scratch"
    echo "ADD rootfs.tar /"
    echo "LABEL org.opencontainers.image.title=\"$image\" org.opencontainers.image.source=\"https://example.invalid/attestd\" org.opencontainers.image.licenses=\"Apache-2.0\" io.attestd.profile=\"$profile\""
    echo "ENV PATH=/usr/local/bin"
    echo "USER $uid:$uid"
    printf '%s\n' "$tail"
  } >"$ctx/Dockerfile"
  # The legacy builder: no buildx here, and nothing to pull for FROM scratch.
  DOCKER_BUILDKIT=0 docker build -q -t "attestd/$image:$tag" "$ctx" >/dev/null 2>"$ctx/build.log" || {
    cat "$ctx/build.log" >&2
    exit 1
  }
  printf '%-28s %s\n' "attestd/$image:$tag" "$(docker image inspect -f '{{.Size}}' "attestd/$image:$tag" | awk '{printf "%.1f MB", $1/1e6}')"
}

build node "$target/attestd" '
ENV ATTESTD_URL=https://127.0.0.1:8443 ATTESTD_CA=/certs/ca.pem
WORKDIR /var/lib/attestd
EXPOSE 8443 7443
ENTRYPOINT ["/usr/local/bin/attestd"]
CMD ["run", "--config", "/etc/attestd/attestd.toml"]
HEALTHCHECK --interval=5s --timeout=4s --start-period=60s --retries=3 CMD ["/usr/local/bin/attestd", "admin", "health"]'

build gateway "$target/attest-gateway" '
ENV ATTEST_GATEWAY_CONFIG=/etc/attestd/gateway.toml ATTEST_GATEWAY_HEALTH_URL=https://127.0.0.1:8443/gateway/status ATTEST_GATEWAY_HEALTH_CA=/certs/ca.pem
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/attest-gateway"]
CMD ["run"]
HEALTHCHECK --interval=5s --timeout=4s --start-period=30s --retries=3 CMD ["/usr/local/bin/attest-gateway", "health"]'

build wan "$target/attest-chaos" '
EXPOSE 7400
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/attest-chaos"]'

if [ "$prometheus" = yes ]; then
  prom="$(command -v prometheus)" || { echo "build-images: --with-prometheus needs prometheus (apt-get install prometheus)" >&2; exit 1; }
  build prometheus "$prom" '
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/var/lib/attestd", "--web.listen-address=0.0.0.0:9090"]'
fi
