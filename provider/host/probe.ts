// Read-only questions to the libvirt host, shared by every resource: what a
// domain looks like right now, and what this libvirt can do. Preview asks
// only these, so it never changes a VM.
import { Virsh, type LibvirtVersion } from "./virsh";
import { parseDomainXml, type DomainInfo } from "./xml";

export type DomainState =
    "running" | "paused" | "shut off" | "crashed" | "pmsuspended" | "in shutdown" | "idle" | "blocked" | "no state" | string;

export interface DomainProbe {
    info: DomainInfo;
    state: DomainState;
    /** running, paused and the like: qemu is up, so memory exists. */
    active: boolean;
    version: LibvirtVersion;
    /** Checkpoints of a shut-off domain, which limit the snapshots libvirt takes of it. Not asked of a running domain. */
    checkpointsWhileOff: string[];
}

/** A name qemu takes in a job ID (util/id.c), after libvirt's own prefix. */
export function isJobIdSafe(name: string): boolean {
    return /^[A-Za-z0-9._-]+$/.test(name);
}

export async function probeDomain(virsh: Virsh, domain: string): Promise<DomainProbe> {
    const [xml, state, version] = await Promise.all([
        virsh.query(["dumpxml", "--domain", domain]),
        stateOf(virsh, domain),
        virsh.version(),
    ]);
    const info = parseDomainXml(xml);
    const active = state !== "shut off" && state !== "crashed" && state !== "no state";
    const checkpointsWhileOff = !active && version.number >= VERSIONS.checkpoints ? await listCheckpoints(virsh, info.uuid) : [];
    return { info, state, active, version, checkpointsWhileOff };
}

/** The domain's state as `virsh domstate` names it: running, paused, shut off... */
export async function stateOf(virsh: Virsh, domain: string): Promise<DomainState> {
    return (await virsh.query(["domstate", "--domain", domain])).trim().split("\n")[0]!.trim();
}

/** The names virsh lists, one per line (`--name` listings end with a blank line). */
export function names(out: string): string[] {
    return out
        .split("\n")
        .map((l) => l.trim())
        .filter(Boolean);
}

export async function listCheckpoints(virsh: Virsh, domain: string): Promise<string[]> {
    return names(await virsh.query(["checkpoint-list", "--domain", domain, "--name"]));
}

export async function listSnapshots(virsh: Virsh, domain: string): Promise<string[]> {
    return names(await virsh.query(["snapshot-list", "--domain", domain, "--name"]));
}

// Capabilities (virsh.capabilities()) decide where libvirt says what it can do;
// these versions decide where it doesn't.
export const VERSIONS = {
    /** libvirt deletes external snapshots itself from 9.0 on (a leaf, or any snapshot of a running domain; NEWS 9.0). */
    externalSnapshotDelete: 9_000_000,
    /**
     * An internal snapshot of a shut-off domain that has checkpoints: 9.0 refuses it ('cannot perform
     * block operations while checkpoint exists'), 11.3 takes it (both measured). No NEWS entry says
     * when it changed, so the versions between are treated as 9.0.
     */
    internalSnapshotWithCheckpointsOffline: 11_003_000,
    /**
     * libvirt 10.9 runs internal snapshots of a running domain as qemu jobs named after the snapshot
     * (NEWS 10.9: snapshot-save/snapshot-delete), and qemu takes only letters, digits, '-', '.' and '_'
     * in a job ID: 11.3 measured ('Invalid job ID'), 9.0 takes any name.
     */
    internalSnapshotJobIds: 10_009_000,
    /** Checkpoints arrived in 5.6. */
    checkpoints: 5_006_000,
} as const;
