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
    /** Checkpoints of a shut-off domain: while any exists, libvirt refuses every snapshot of it. Not asked of a running domain. */
    checkpointsWhileOff: string[];
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

export const VERSIONS = {
    /** libvirt deletes external snapshots itself from 9.0 on. */
    externalSnapshotDelete: 9_000_000,
    /** Reverting an external snapshot arrived in 9.9. */
    externalSnapshotRevert: 9_009_000,
    /** Checkpoints arrived in 5.6. */
    checkpoints: 5_006_000,
} as const;
