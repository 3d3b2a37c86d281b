# syntax=docker/dockerfile:1
#
# Amazon EBS CSI driver image. One binary, /usr/bin/ebs-csi-driver, serves the
# controller (Deployment) and the node (DaemonSet); the manifests pick the mode
# with the first argument. `deploy/check.sh` lints this file and checks that
# every program it copies or that the driver calls is in the image.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build: the release binary, with the toolchain the project builds with.
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# Manifests first so the dependency download is cached across source edits.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin ebs-csi-driver \
    && install -D -m 0755 target/release/ebs-csi-driver /out/ebs-csi-driver

# ---- runtime: small Debian with the filesystem tools the node calls.
FROM debian:${DEBIAN_RELEASE}-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ebs-csi-driver" \
      org.opencontainers.image.description="Amazon EBS CSI driver (ebs.csi.aws.com), written in Rust" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# ca-certificates: TLS to the EC2 API. e2fsprogs: mkfs.ext4, resize2fs, e2fsck,
# tune2fs, dumpe2fs. xfsprogs: mkfs.xfs, xfs_growfs, xfs_repair, xfs_info. util-linux: blkid,
# lsblk, blockdev, fsck. mount: mount, umount.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates e2fsprogs xfsprogs util-linux mount \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /out/ebs-csi-driver /usr/bin/ebs-csi-driver

# The build fails here if a program the driver runs is missing from the image
# (the same list deploy/check.sh compares with the packages and the source).
RUN for tool in mkfs.ext4 mkfs.ext3 mkfs.ext2 mkfs.xfs resize2fs xfs_growfs e2fsck xfs_repair tune2fs dumpe2fs xfs_info \
        blkid lsblk blockdev fsck mount umount; do \
        command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }; \
    done \
    && /usr/bin/ebs-csi-driver --version

# The node must mount, so the image runs as root; the controller's pod spec
# runs it as an unprivileged user with a read-only root filesystem.
# hadolint ignore=DL3002
USER 0:0
ENTRYPOINT ["/usr/bin/ebs-csi-driver"]
CMD ["--help"]
