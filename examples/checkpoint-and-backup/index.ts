// Checkpoint before an upgrade, then see what changed.
//   pulumi up        → a checkpoint: from now on libvirt tracks every block the VM writes
//   (run the upgrade inside the VM)
//   pulumi refresh   → changedBytes: how much the upgrade wrote since the checkpoint
// A backup tool can later copy just those blocks (virsh backup-begin with
// <incremental>before-upgrade</incremental>).
// The connection comes from stack config (libvirt-snapshots:host and so on);
// without a host, virsh runs on this machine. The domain must be running.
import * as pulumi from "@pulumi/pulumi";
import { DomainCheckpoint } from "pulumi-libvirt-snapshots";

const config = new pulumi.Config();

const beforeUpgrade = new DomainCheckpoint("before-upgrade", {
    domain: config.get("domain") ?? "lab-writer",
    description: "checkpoint-and-backup: every block written after this is tracked",
});

export const checkpointName = beforeUpgrade.checkpointName;
export const creationTime = beforeUpgrade.creationTime;
export const parent = beforeUpgrade.parent;
/** Bytes written since the checkpoint, summed over its disks; measured again by every `pulumi refresh`. */
export const changedBytes = beforeUpgrade.changedBytes;
export const changedBytesAt = beforeUpgrade.changedBytesAt;
/** Per disk: its bitmap and its own changedBytes. */
export const disks = beforeUpgrade.disks;
