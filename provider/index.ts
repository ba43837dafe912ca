// Public API: the resources a Pulumi program declares, and the provider
// objects behind them. The provider objects are what Pulumi serializes into
// state; each is a thin shim that loads the implementation by package name at
// call time, so its text stays small and stable (NOTES §5).
import * as pulumi from "@pulumi/pulumi";
import type { Connection } from "./connection";
import type { DomainSnapshotInputs } from "./domainSnapshot";
import type { CheckpointDiskState, DomainCheckpointInputs } from "./domainCheckpoint";
import type { SnapshotRevertInputs } from "./snapshotRevert";
import type { MemberSnapshot, RestorePointInputs } from "./restorePoint";

/** Every field may be a plain value or a Pulumi Output. */
export type DeepInput<T> =
    T extends string | number | boolean | undefined | null ? pulumi.Input<T> :
    T extends ReadonlyArray<infer U> ? pulumi.Input<ReadonlyArray<DeepInput<U>>> :
    T extends object ? pulumi.Input<{ [K in keyof T]: DeepInput<T[K]> }> :
    pulumi.Input<T>;

export type ConnectionArgs = DeepInput<Connection>;

export const DomainSnapshotProvider: pulumi.dynamic.ResourceProvider = {
    async configure(req) { return require("pulumi-libvirt-snapshots/impl").configure(req); },
    async check(olds, news) { return require("pulumi-libvirt-snapshots/impl").snapshot.check(olds, news); },
    async diff(id, olds, news) { return require("pulumi-libvirt-snapshots/impl").snapshot.diff(id, olds, news); },
    async create(inputs) { return require("pulumi-libvirt-snapshots/impl").snapshot.create(inputs); },
    async read(id, props) { return require("pulumi-libvirt-snapshots/impl").snapshot.read(id, props); },
    async update(id, olds, news) { return require("pulumi-libvirt-snapshots/impl").snapshot.update(id, olds, news); },
    async delete(id, props) { return require("pulumi-libvirt-snapshots/impl").snapshot.delete(id, props); },
};

/** A resource's arguments: its schema's input type, each field a Pulumi Input; the name field optional (it defaults to the logical name). */
export type ArgsOf<T, NameKey extends keyof T> = InputsOf<Omit<T, NameKey>> & { [K in NameKey]?: pulumi.Input<string> };
type InputsOf<T> = { [K in keyof T]: DeepInput<T[K]> };

export type DomainSnapshotArgs = ArgsOf<DomainSnapshotInputs, "snapshotName">;

const MODULE = "libvirt-snapshots";

/** Connections hold passwords and keys: keep them encrypted in the state's inputs too, however the program passed them. */
function secretInput(v: unknown): pulumi.Output<unknown> | undefined {
    return v === undefined ? undefined : pulumi.secret(v);
}

function secretOpts(opts: pulumi.CustomResourceOptions | undefined): pulumi.CustomResourceOptions {
    // The connection may hold a password or key: keep it encrypted in state even when given in plain text.
    return { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "connection"] };
}

/** A libvirt snapshot of one domain: taken on create, removed (merged into its child) on delete. */
export class DomainSnapshot extends pulumi.dynamic.Resource {
    declare public readonly connection: pulumi.Output<Connection | undefined>;
    declare public readonly domain: pulumi.Output<string>;
    declare public readonly snapshotName: pulumi.Output<string>;
    declare public readonly description: pulumi.Output<string | undefined>;
    declare public readonly kind: pulumi.Output<"internal" | "external">;
    declare public readonly memory: pulumi.Output<"none" | "internal" | "external">;
    declare public readonly memoryFile: pulumi.Output<string | undefined>;
    declare public readonly deletion: pulumi.Output<"delete" | "metadata">;
    declare public readonly domainName: pulumi.Output<string>;
    declare public readonly domainUuid: pulumi.Output<string>;
    declare public readonly creationTime: pulumi.Output<string>;
    declare public readonly state: pulumi.Output<string>;
    declare public readonly parent: pulumi.Output<string | null>;
    declare public readonly isCurrent: pulumi.Output<boolean>;
    declare public readonly diskFiles: pulumi.Output<Record<string, string>>;
    declare public readonly libvirtVersion: pulumi.Output<string>;
    declare public readonly adopted: pulumi.Output<boolean>;

    constructor(name: string, args: DomainSnapshotArgs, opts?: pulumi.CustomResourceOptions) {
        super(DomainSnapshotProvider, name, {
            ...args,
            connection: secretInput(args.connection),
            snapshotName: args.snapshotName ?? name,
            kind: args.kind, memory: args.memory, memoryFile: args.memoryFile, description: args.description,
            domainName: undefined, domainUuid: undefined, creationTime: undefined, state: undefined, parent: undefined,
            isCurrent: undefined, diskFiles: undefined, libvirtVersion: undefined, adopted: undefined, declared: undefined,
        }, secretOpts(opts), MODULE, "DomainSnapshot");
    }
}

// ---- DomainCheckpoint and SnapshotRevert (issue 4) ----

export const DomainCheckpointProvider: pulumi.dynamic.ResourceProvider = {
    async configure(req) { return require("pulumi-libvirt-snapshots/impl").configure(req); },
    async check(olds, news) { return require("pulumi-libvirt-snapshots/impl").checkpoint.check(olds, news); },
    async diff(id, olds, news) { return require("pulumi-libvirt-snapshots/impl").checkpoint.diff(id, olds, news); },
    async create(inputs) { return require("pulumi-libvirt-snapshots/impl").checkpoint.create(inputs); },
    async read(id, props) { return require("pulumi-libvirt-snapshots/impl").checkpoint.read(id, props); },
    async update(id, olds, news) { return require("pulumi-libvirt-snapshots/impl").checkpoint.update(id, olds, news); },
    async delete(id, props) { return require("pulumi-libvirt-snapshots/impl").checkpoint.delete(id, props); },
};

export type DomainCheckpointArgs = ArgsOf<DomainCheckpointInputs, "checkpointName">;

/**
 * A libvirt checkpoint of one running domain: qcow2 dirty bitmaps that track
 * every block written since. `changedBytes` is measured again on every refresh.
 */
export class DomainCheckpoint extends pulumi.dynamic.Resource {
    declare public readonly connection: pulumi.Output<Connection | undefined>;
    declare public readonly domain: pulumi.Output<string>;
    declare public readonly checkpointName: pulumi.Output<string>;
    declare public readonly description: pulumi.Output<string | undefined>;
    declare public readonly deletion: pulumi.Output<"delete" | "metadata">;
    declare public readonly domainName: pulumi.Output<string>;
    declare public readonly domainUuid: pulumi.Output<string>;
    declare public readonly creationTime: pulumi.Output<string>;
    declare public readonly parent: pulumi.Output<string | null>;
    declare public readonly disks: pulumi.Output<CheckpointDiskState[]>;
    declare public readonly changedBytes: pulumi.Output<number | null>;
    declare public readonly changedBytesAt: pulumi.Output<string | null>;
    declare public readonly xml: pulumi.Output<string>;
    declare public readonly lineage: pulumi.Output<Array<{ name: string; xml: string }>>;
    declare public readonly libvirtVersion: pulumi.Output<string>;
    declare public readonly adopted: pulumi.Output<boolean>;
    declare public readonly restoredAt: pulumi.Output<string | null>;

    constructor(name: string, args: DomainCheckpointArgs, opts?: pulumi.CustomResourceOptions) {
        super(DomainCheckpointProvider, name, {
            ...args,
            connection: secretInput(args.connection),
            checkpointName: args.checkpointName ?? name,
            description: args.description, disks: args.disks,
            domainName: undefined, domainUuid: undefined, creationTime: undefined, parent: undefined, changedBytes: undefined,
            changedBytesAt: undefined, xml: undefined, lineage: undefined, libvirtVersion: undefined, adopted: undefined,
            restoredAt: undefined, declared: undefined,
        }, secretOpts(opts), MODULE, "DomainCheckpoint");
    }
}

export const SnapshotRevertProvider: pulumi.dynamic.ResourceProvider = {
    async configure(req) { return require("pulumi-libvirt-snapshots/impl").configure(req); },
    async check(olds, news) { return require("pulumi-libvirt-snapshots/impl").revert.check(olds, news); },
    async diff(id, olds, news) { return require("pulumi-libvirt-snapshots/impl").revert.diff(id, olds, news); },
    async create(inputs) { return require("pulumi-libvirt-snapshots/impl").revert.create(inputs); },
    async read(id, props) { return require("pulumi-libvirt-snapshots/impl").revert.read(id, props); },
    async update(id, olds, news) { return require("pulumi-libvirt-snapshots/impl").revert.update(id, olds, news); },
    async delete(id, props) { return require("pulumi-libvirt-snapshots/impl").revert.delete(id, props); },
};

export type SnapshotRevertArgs = InputsOf<SnapshotRevertInputs>;

/**
 * Reverts a domain to a snapshot when created, and again whenever `triggers`
 * (or the snapshot, domain or afterRevert) change. Deleting it leaves the VM as it is.
 */
export class SnapshotRevert extends pulumi.dynamic.Resource {
    declare public readonly connection: pulumi.Output<Connection | undefined>;
    declare public readonly domain: pulumi.Output<string>;
    declare public readonly snapshot: pulumi.Output<string>;
    declare public readonly triggers: pulumi.Output<unknown[] | undefined>;
    declare public readonly afterRevert: pulumi.Output<"running" | "paused" | "as-snapshotted">;
    declare public readonly force: pulumi.Output<boolean>;
    declare public readonly domainName: pulumi.Output<string>;
    declare public readonly domainUuid: pulumi.Output<string>;
    declare public readonly revertedAt: pulumi.Output<string>;
    declare public readonly domainState: pulumi.Output<string>;
    declare public readonly snapshotCreationTime: pulumi.Output<string>;
    declare public readonly libvirtVersion: pulumi.Output<string>;

    constructor(name: string, args: SnapshotRevertArgs, opts?: pulumi.CustomResourceOptions) {
        super(SnapshotRevertProvider, name, {
            ...args,
            connection: secretInput(args.connection),
            triggers: args.triggers, afterRevert: args.afterRevert, force: args.force,
            domainName: undefined, domainUuid: undefined, revertedAt: undefined, domainState: undefined,
            snapshotCreationTime: undefined, libvirtVersion: undefined, declared: undefined,
        }, secretOpts(opts), MODULE, "SnapshotRevert");
    }
}

// ---- RestorePoint (issue 5) ----
export const RestorePointProvider: pulumi.dynamic.ResourceProvider = {
    async configure(req) { return require("pulumi-libvirt-snapshots/impl").configure(req); },
    async check(olds, news) { return require("pulumi-libvirt-snapshots/impl").restorePoint.check(olds, news); },
    async diff(id, olds, news) { return require("pulumi-libvirt-snapshots/impl").restorePoint.diff(id, olds, news); },
    async create(inputs) { return require("pulumi-libvirt-snapshots/impl").restorePoint.create(inputs); },
    async read(id, props) { return require("pulumi-libvirt-snapshots/impl").restorePoint.read(id, props); },
    async update(id, olds, news) { return require("pulumi-libvirt-snapshots/impl").restorePoint.update(id, olds, news); },
    async delete(id, props) { return require("pulumi-libvirt-snapshots/impl").restorePoint.delete(id, props); },
};

export type RestorePointArgs = ArgsOf<RestorePointInputs, "snapshotName">;

/**
 * One restore point across several domains, on one host (domains) or several
 * (targets). "simultaneous" pauses them all, snapshots each and resumes them;
 * all or nothing either way.
 */
export class RestorePoint extends pulumi.dynamic.Resource {
    declare public readonly snapshotName: pulumi.Output<string>;
    declare public readonly description: pulumi.Output<string | undefined>;
    declare public readonly consistency: pulumi.Output<"simultaneous" | "independent">;
    declare public readonly deletion: pulumi.Output<"delete" | "metadata">;
    declare public readonly snapshots: pulumi.Output<MemberSnapshot[]>;
    declare public readonly pausedMilliseconds: pulumi.Output<number>;

    constructor(name: string, args: RestorePointArgs, opts?: pulumi.CustomResourceOptions) {
        super(RestorePointProvider, name, {
            ...args,
            connection: secretInput(args.connection), targets: secretInput(args.targets),
            snapshotName: args.snapshotName ?? name,
            description: args.description, consistency: args.consistency, deletion: args.deletion,
            snapshots: undefined, pausedMilliseconds: undefined, declared: undefined,
        }, { ...secretOpts(opts), additionalSecretOutputs: [...(secretOpts(opts).additionalSecretOutputs ?? []), "targets"] }, MODULE, "RestorePoint");
    }
}
