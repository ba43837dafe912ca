// Quickstart: one restore point of one VM, declared in code.
// The connection comes from stack config (libvirt-snapshots:host and so on);
// without a host, virsh runs on this machine.
import * as pulumi from "@pulumi/pulumi";
import { DomainSnapshot } from "pulumi-libvirt-snapshots";

const config = new pulumi.Config();

const beforeUpgrade = new DomainSnapshot("before-upgrade", {
    domain: config.get("domain") ?? "lab-idle",
    description: "quickstart: a restore point before a risky change",
});

export const snapshotName = beforeUpgrade.snapshotName;
export const domainUuid = beforeUpgrade.domainUuid;
export const creationTime = beforeUpgrade.creationTime;
export const state = beforeUpgrade.state;
export const kind = beforeUpgrade.kind;
export const memory = beforeUpgrade.memory;
