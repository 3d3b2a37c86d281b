//! The compatibility contract with the reference driver
//! (kubernetes-sigs/aws-ebs-csi-driver): names, keys and data that a
//! cluster's objects depend on, so it can swap drivers without touching a
//! StorageClass, PersistentVolume or node. Not ours to invent; see DESIGN.md.

pub mod attach_limits;
