// The two kinds of "domain moments", as libvirt calls snapshots and checkpoints: the virsh
// commands and XML root of each, for the code that treats both alike (creates.ts, description.ts).

export type MomentKind = "snapshot" | "checkpoint";

/** The virsh commands and XML root of each kind. */
export const VIRSH = {
    snapshot: {
        info: "snapshot-info",
        dump: "snapshot-dumpxml",
        create: "snapshot-create",
        del: "snapshot-delete",
        nameFlag: "--snapshotname",
        root: "domainsnapshot",
    },
    checkpoint: {
        info: "checkpoint-info",
        dump: "checkpoint-dumpxml",
        create: "checkpoint-create",
        del: "checkpoint-delete",
        nameFlag: "--checkpointname",
        root: "domaincheckpoint",
    },
} as const;
