// Reading a snapshot back: libvirt's XML and snapshot-info, what kind of snapshot it is, and how it differs from a plan.
import type { Virsh } from "../host/virsh";
import { parseSnapshotXml, type SnapshotInfo } from "../host/xml";
import type { SnapshotPlan } from "./plan";

export interface ObservedSnapshot {
    info: SnapshotInfo;
    isCurrent: boolean;
    children: number;
    /** libvirt's snapshot XML with its <domain>, as `snapshot-create --redefine` takes it (dumped without --security-info). */
    xml: string;
}

export async function observeSnapshot(virsh: Virsh, domain: string, name: string): Promise<ObservedSnapshot> {
    const [xml, info] = await Promise.all([
        virsh.query(["snapshot-dumpxml", "--domain", domain, "--snapshotname", name]),
        virsh.query(["snapshot-info", "--domain", domain, "--snapshotname", name]),
    ]);
    return {
        info: parseSnapshotXml(xml),
        isCurrent: /^Current:\s+yes/m.test(info),
        children: Number(/^Children:\s+(\d+)/m.exec(info)?.[1] ?? 0),
        xml,
    };
}

export function kindOf(s: SnapshotInfo): "internal" | "external" {
    return s.memory.snapshot === "external" || s.disks.some((d) => d.snapshot === "external") ? "external" : "internal";
}

export function memoryOf(s: SnapshotInfo): "none" | "internal" | "external" {
    return s.memory.snapshot === "no" ? "none" : s.memory.snapshot === "external" ? "external" : "internal";
}

/** How an existing snapshot differs from the plan; empty when adopting is safe. */
export function differencesFrom(plan: SnapshotPlan, s: SnapshotInfo): string[] {
    const out: string[] = [];
    if (kindOf(s) !== plan.kind) out.push(`kind is '${kindOf(s)}', declared '${plan.kind}'`);
    if (memoryOf(s) !== plan.memory) out.push(`memory is '${memoryOf(s)}', declared '${plan.memory}'`);
    if (plan.spec.memory.file && s.memory.file !== plan.spec.memory.file)
        out.push(`memoryFile is '${s.memory.file ?? "none"}', declared '${plan.spec.memory.file}'`);
    for (const d of plan.spec.disks) {
        const have = s.disks.find((x) => x.name === d.name);
        const mode = have?.snapshot ?? "no";
        if (mode !== d.snapshot) out.push(`disk ${d.name} is '${mode}', declared '${d.snapshot}'`);
        if (d.file && have?.file !== d.file) out.push(`disk ${d.name} overlay is '${have?.file ?? "none"}', declared '${d.file}'`);
    }
    return out;
}
