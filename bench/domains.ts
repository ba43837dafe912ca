// Throwaway domains and their existing snapshots, set up locally and not measured.
import { makeDomain, type TestDomain } from "../test/support/lab";
import { virshLocalOk, type SnapshotJob } from "./baselines";
import { onCleanup } from "./lifecycle";

/** A fresh running domain, removed at cleanup. */
export async function newDomain(prefix: string): Promise<TestDomain> {
    const d = await makeDomain({ prefix, running: true });
    onCleanup(() => d.dispose());
    return d;
}

export async function snapshotNames(dom: TestDomain): Promise<string[]> {
    return (await virshLocalOk(["snapshot-list", "--domain", dom.uuid, "--name"])).split("\n").filter(Boolean);
}

/** Existing snapshots on a domain, made locally with one virsh process per batch (fast; not measured). */
export async function fillSnapshots(dom: TestDomain, from: number, to: number): Promise<void> {
    for (let i = from; i < to; i += 25) {
        const cmds: string[] = [];
        for (let j = i; j < Math.min(to, i + 25); j++)
            cmds.push(`snapshot-create-as --domain ${dom.uuid} --name fill-${String(j).padStart(4, "0")} --atomic`);
        await virshLocalOk([cmds.join(" ; ")]);
    }
    const n = (await snapshotNames(dom)).length;
    if (n !== to) throw new Error(`domain ${dom.name} has ${n} snapshots, expected ${to}`);
}

/** Deletes the jobs' snapshots with local virsh, one at a time. */
export async function deleteSnapshotsLocally(jobs: readonly SnapshotJob[]): Promise<void> {
    for (const j of jobs) await virshLocalOk(["snapshot-delete", "--domain", j.dom.uuid, "--snapshotname", j.name]);
}
