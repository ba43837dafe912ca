// Back up a VM before an upgrade, and again after it, copying only what the upgrade wrote.
//   pulumi up        → a checkpoint (libvirt tracks every block written from now on), a full backup,
//                      the upgrade, then an incremental backup of just the blocks the upgrade wrote
//   pulumi refresh   → changedBytes of the checkpoint; intact/drift of each backup's files
// To rebuild the disk as it was before or after the upgrade, see "Restore" under DomainBackup in the README.
// The connection comes from stack config (libvirt-snapshots:host and so on); the domain must be running.
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { DomainBackup, DomainCheckpoint } from "pulumi-libvirt-snapshots";

const config = new pulumi.Config();
const host = new pulumi.Config("libvirt-snapshots");
const domain = config.get("domain") ?? "lab-writer";
/** A folder on the libvirt host; keep a chain of backups in one folder. */
const targetDir = config.get("targetDir") ?? "/var/tmp/pulumi-libvirt-backups";
/** Backups outlive the stack by default; `files` removes them on destroy too. */
const deletion = config.get("deletion") === "files" ? "files" : "checkpoint";

// Measures how much the upgrade writes (changedBytes, on refresh).
const upgradeStart = new DomainCheckpoint("upgrade-start", {
    domain,
    description: "backup-before-upgrade: every block written after this is tracked",
});

const beforeUpgrade = new DomainBackup("full-before-upgrade", { domain, targetDir, deletion }, { dependsOn: [upgradeStart] });

// The upgrade itself runs only once the full backup is complete.
const upgrade = new command.remote.Command(
    "upgrade",
    {
        connection: {
            host: host.get("host") ?? "127.0.0.1",
            port: host.getNumber("port") ?? 22,
            user: host.get("user") ?? "root",
            privateKey: host.getSecret("privateKey"),
        },
        create: config.get("upgradeCommand") ?? "echo 'the upgrade runs here'",
    },
    { dependsOn: [beforeUpgrade] },
);

// Only the blocks written since the full backup's checkpoint.
const afterUpgrade = new DomainBackup(
    "incremental-after-upgrade",
    { domain, targetDir, deletion, incrementalFrom: beforeUpgrade.checkpointName },
    { dependsOn: [upgrade] },
);

export const changedBytes = upgradeStart.changedBytes;
export const fullBackup = beforeUpgrade.files;
export const incrementalBackup = afterUpgrade.files;
/** Per disk: the backup file the incremental builds on (a restore rebases onto it). */
export const basedOn = afterUpgrade.basedOn;
