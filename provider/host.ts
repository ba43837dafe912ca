// Read-only questions to the libvirt host, shared by every resource: what a
// domain looks like right now, and what this libvirt can do. Preview asks
// only these, so it never changes a VM.
import { Virsh, type LibvirtVersion } from "./virsh";
import { parseDomainXml, type DomainInfo } from "./xml";

export type DomainState = "running" | "paused" | "shut off" | "crashed" | "pmsuspended" | "in shutdown" | "idle" | "blocked" | "no state" | string;

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
        virsh.run(["dumpxml", "--domain", domain], { timeoutMs: 60_000 }),
        stateOf(virsh, domain),
        virsh.version(),
    ]);
    const info = parseDomainXml(xml);
    const active = state !== "shut off" && state !== "crashed" && state !== "no state";
    const checkpointsWhileOff = !active && version.number >= VERSIONS.checkpoints
        ? (await virsh.run(["checkpoint-list", "--domain", info.uuid, "--name"], { timeoutMs: 60_000 })).split("\n").map((l) => l.trim()).filter(Boolean)
        : [];
    return { info, state, active, version, checkpointsWhileOff };
}

/** The domain's state as `virsh domstate` names it: running, paused, shut off... */
export async function stateOf(virsh: Virsh, domain: string): Promise<DomainState> {
    return (await virsh.run(["domstate", "--domain", domain], { timeoutMs: 60_000 })).trim().split("\n")[0]!.trim();
}

/** Is this string a UUID (so the domain is addressed by UUID)? */
export function isUuid(s: string): boolean {
    return /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i.test(s);
}

export const VERSIONS = {
    /** libvirt deletes external snapshots itself from 9.0 on. */
    externalSnapshotDelete: 9_000_000,
    /** Reverting an external snapshot arrived in 9.9. */
    externalSnapshotRevert: 9_009_000,
    /** Checkpoints arrived in 5.6. */
    checkpoints: 5_006_000,
} as const;
