// Before a risky upgrade: take a restore point of every VM it touches, at one
// instant, then run the upgrade. If it went wrong, set `rollback` and run
// `pulumi up` again: each VM is reverted to the restore point.
//
//   pulumi config set domains '["db1","app1"]' --path   (or edit Pulumi.<stack>.yaml)
//   pulumi up                                            # restore point, then the upgrade
//   pulumi config set rollback true && pulumi up          # roll back on purpose
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { RestorePoint, SnapshotRevert } from "pulumi-libvirt-snapshots";

const config = new pulumi.Config();
const host = new pulumi.Config("libvirt-snapshots");
const domains = config.getObject<string[]>("domains") ?? ["lab-idle"];

const restorePoint = new RestorePoint("before-upgrade", {
    domains,
    memory: "internal",
    consistency: "simultaneous",
    description: "before the upgrade",
});

// The upgrade itself runs only once the restore point exists.
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
    { dependsOn: [restorePoint] },
);

// Reverting throws away the VMs' current state, so it is its own, declared step.
export const reverts = config.getBoolean("rollback")
    ? domains.map(
          (domain) =>
              new SnapshotRevert(
                  `rollback-${domain}`,
                  {
                      domain,
                      snapshot: restorePoint.snapshotName,
                      afterRevert: "running",
                      // Change this value to roll back again later.
                      triggers: [config.get("rollbackId") ?? "1"],
                  },
                  { dependsOn: [upgrade] },
              ).revertedAt,
      )
    : [];

export const snapshots = restorePoint.snapshots;
export const pausedMilliseconds = restorePoint.pausedMilliseconds;
