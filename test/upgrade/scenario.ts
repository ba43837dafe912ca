// The stack that every recorded state (test/fixtures/state/VERSION.json) was
// made from, and what the libvirt host must hold for that state to be true
// again. The recorder (record.ts) runs it with the code of a release; the
// upgrade test replays the recorded state through today's code.
import { makeDomain, virshOk, type TestDomain } from "../support/lab";

export interface UpgradeDomain {
    key: string;
    name: string;
    uuid: string;
    running: boolean;
}

/** Fixed names and UUIDs: the recorded outputs name them. */
export const UPGRADE_DOMAINS: readonly UpgradeDomain[] = [
    { key: "off", name: "labtmp-upgrade-off", uuid: "5e1ec7ed-0100-4000-8000-000000000001", running: false },
    { key: "run", name: "labtmp-upgrade-run", uuid: "5e1ec7ed-0100-4000-8000-000000000002", running: true },
    { key: "idle", name: "labtmp-upgrade-idle", uuid: "5e1ec7ed-0100-4000-8000-000000000003", running: true },
];

export type UpgradeType = "DomainSnapshot" | "DomainCheckpoint" | "SnapshotRevert" | "RestorePoint";

export interface UpgradeResource {
    name: string;
    type: UpgradeType;
    inputs: Record<string, unknown>;
    /**
     * What it needs made first, as a program states it (dependsOn) and the engine keeps in the state's dependencies.
     * The recorder runs one resource after another, so its record has none; the deployment made from a record takes
     * them from here.
     */
    dependsOn?: string[];
}

const [off, run, idle] = UPGRADE_DOMAINS.map((d) => d.name) as [string, string, string];

/** In creation order; deleted in reverse. Local connection (the stack default), so no secret is recorded. */
export const UPGRADE_RESOURCES: readonly UpgradeResource[] = [
    {
        name: "snap",
        type: "DomainSnapshot",
        inputs: { domain: off, snapshotName: "before-upgrade", description: "recorded before the upgrade" },
    },
    { name: "ckpt", type: "DomainCheckpoint", inputs: { domain: run, checkpointName: "ckpt-before", description: "recorded checkpoint" } },
    // It reverts to snap's snapshot; the restore point then takes the reverted domain.
    {
        name: "revert",
        type: "SnapshotRevert",
        inputs: { domain: off, snapshot: "before-upgrade", triggers: ["first"] },
        dependsOn: ["snap"],
    },
    {
        name: "rp",
        type: "RestorePoint",
        inputs: { domains: [off, idle], snapshotName: "rp-before", description: "recorded restore point" },
        dependsOn: ["revert"],
    },
];

/** The lab domains the scenario runs on, fresh (any leftovers of an earlier run are removed first). */
export async function upgradeDomains(): Promise<TestDomain[]> {
    const out: TestDomain[] = [];
    for (const d of UPGRADE_DOMAINS) {
        await virshOk(["destroy", d.name]).catch(() => undefined);
        await virshOk(["undefine", d.name, "--snapshots-metadata", "--checkpoints-metadata"]).catch(() => undefined);
        out.push(await makeDomain({ name: d.name, uuid: d.uuid, running: d.running }));
    }
    return out;
}

/**
 * What the recorded stack left on the host, made again with plain virsh:
 * the snapshots and the checkpoint the recorded outputs describe.
 */
export async function recreateHostObjects(): Promise<void> {
    await virshOk(["snapshot-create-as", "--domain", off, "--name", "before-upgrade", "--description", "recorded before the upgrade"]);
    await virshOk(["checkpoint-create-as", "--domain", run, "--name", "ckpt-before", "--description", "recorded checkpoint"]);
    await virshOk(["snapshot-create-as", "--domain", off, "--name", "rp-before", "--description", "recorded restore point"]);
    await virshOk(["snapshot-create-as", "--domain", idle, "--name", "rp-before", "--description", "recorded restore point"]);
}
