// Reading a snapshot back: libvirt's XML and snapshot-info, and what kind of snapshot it is.
import type { Virsh } from "../host/virsh";
import { parseSnapshotXml, type SnapshotInfo } from "../host/xml";

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
