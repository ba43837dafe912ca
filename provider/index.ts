// Public API: the resources a Pulumi program declares, and the provider
// objects behind them. The provider objects are what Pulumi serializes into
// state; each is a thin shim that loads the implementation by package name at
// call time, so its text stays small and stable (NOTES §5).
import * as pulumi from "@pulumi/pulumi";
import type { Connection } from "./connection";
import type { DomainSnapshotInputs } from "./domainSnapshot";
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

export type DomainSnapshotArgs = { [K in keyof DomainSnapshotInputs]: DeepInput<DomainSnapshotInputs[K]> } & {
    /** Defaults to the resource's logical name. */
    snapshotName?: pulumi.Input<string>;
};

const MODULE = "libvirt-snapshots";

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
            snapshotName: args.snapshotName ?? name,
            kind: args.kind, memory: args.memory, memoryFile: args.memoryFile, description: args.description,
            domainName: undefined, domainUuid: undefined, creationTime: undefined, state: undefined, parent: undefined,
            isCurrent: undefined, diskFiles: undefined, libvirtVersion: undefined, adopted: undefined, declared: undefined,
        }, secretOpts(opts), MODULE, "DomainSnapshot");
    }
}

// ---- DomainCheckpoint and SnapshotRevert (issue 4) ----

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

export type RestorePointArgs = { [K in keyof RestorePointInputs]: DeepInput<RestorePointInputs[K]> } & {
    /** The snapshot name on every domain. Defaults to the resource's logical name. */
    snapshotName?: pulumi.Input<string>;
};

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
            snapshotName: args.snapshotName ?? name,
            description: args.description, consistency: args.consistency, deletion: args.deletion,
            snapshots: undefined, pausedMilliseconds: undefined, declared: undefined,
        }, { ...secretOpts(opts), additionalSecretOutputs: [...(secretOpts(opts).additionalSecretOutputs ?? []), "targets"] }, MODULE, "RestorePoint");
    }
}
