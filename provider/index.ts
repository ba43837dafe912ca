// Public API: the resources a Pulumi program declares, their arguments and
// outputs, and the provider objects behind them. The provider objects are what
// Pulumi serializes into state; each is a thin shim that loads the
// implementation by package name at call time, so its text stays small and
// stable, and old state runs new code.
import * as pulumi from "@pulumi/pulumi";
import type { z } from "zod";
import type { Connection, ConnectionSchema, ProxySchema } from "./connection";
import type { ResourceKey } from "./impl";
import type { FROM_RESOURCES as FromResourcesKey, MAKER as MakerKey } from "./inputs";
import type { DomainSnapshotOutputs, DomainSnapshotSchema } from "./resources/domainSnapshot";
import type { CheckpointDiskState, DomainCheckpointOutputs, DomainCheckpointSchema } from "./resources/domainCheckpoint";
import type { SnapshotRevertOutputs, SnapshotRevertSchema } from "./resources/snapshotRevert";
import type { MemberSnapshot, RestorePointOutputs, RestorePointSchema } from "./resources/restorePoint";
import type { BackupFile, DomainBackupOutputs, DomainBackupSchema } from "./resources/domainBackup";

export type {
    Connection,
    CheckpointDiskState,
    MemberSnapshot,
    DomainSnapshotOutputs,
    DomainCheckpointOutputs,
    SnapshotRevertOutputs,
    RestorePointOutputs,
    BackupFile,
    DomainBackupOutputs,
};

/**
 * The provider object for one resource. Its text is stored in every user's
 * state and calls `require("pulumi-libvirt-snapshots/impl")` by package name
 * for ever (see impl.ts): never change what it calls.
 */
// prettier-ignore
function shim(resource: ResourceKey): pulumi.dynamic.ResourceProvider {
    return {
        async configure(req) { return require("pulumi-libvirt-snapshots/impl").configure(req); },
        async check(olds, news) { return require("pulumi-libvirt-snapshots/impl")[resource].check(olds, news); },
        async diff(id, olds, news) { return require("pulumi-libvirt-snapshots/impl")[resource].diff(id, olds, news); },
        async create(inputs) { return require("pulumi-libvirt-snapshots/impl")[resource].create(inputs); },
        async read(id, props) { return require("pulumi-libvirt-snapshots/impl")[resource].read(id, props); },
        async update(id, olds, news) { return require("pulumi-libvirt-snapshots/impl")[resource].update(id, olds, news); },
        async delete(id, props) { return require("pulumi-libvirt-snapshots/impl")[resource].delete(id, props); },
    };
}

export const DomainSnapshotProvider = shim("snapshot");
export const DomainCheckpointProvider = shim("checkpoint");
export const SnapshotRevertProvider = shim("revert");
export const RestorePointProvider = shim("restorePoint");
export const DomainBackupProvider = shim("backup");

// ---- arguments ------------------------------------------------------------------

/** The SSH fields of a connection, for the target and for a jump host alike. */
export interface SshArgs {
    /** SSH host of the hypervisor. Without it, virsh runs on the machine that runs Pulumi. */
    host?: pulumi.Input<string>;
    /** Default 22. */
    port?: pulumi.Input<number>;
    /** Default `root`. */
    user?: pulumi.Input<string>;
    /** A secret. */
    password?: pulumi.Input<string>;
    /** The key's text (not its path); a secret. */
    privateKey?: pulumi.Input<string>;
    /** The key's passphrase; a secret. */
    privateKeyPassword?: pulumi.Input<string>;
    /** An ssh-agent to authenticate with. Default `$SSH_AUTH_SOCK`. */
    agentSocketPath?: pulumi.Input<string>;
    /** The server's public key line (`ssh-ed25519 AAAA…`) or fingerprint (`SHA256:…`). */
    hostKey?: pulumi.Input<string>;
    /** Where to look when no `hostKey` is pinned. Default `~/.ssh/known_hosts`. */
    knownHostsPath?: pulumi.Input<string>;
    /** Turns the host-key check off; for throwaway test hosts only. Default false. */
    insecureIgnoreHostKey?: pulumi.Input<boolean>;
    /** Dial attempts before giving up (authentication and host-key failures are not retried). Default 10. */
    dialErrorLimit?: pulumi.Input<number>;
    /** Seconds per dial attempt. Default 15. */
    perDialTimeout?: pulumi.Input<number>;
}

/** A jump host: the same SSH fields, with a host. */
export interface ProxyArgs extends SshArgs {
    host: pulumi.Input<string>;
}

/** Where virsh runs and how to reach it. Without one, the stack config (`libvirt-snapshots:host` and so on) is used. */
export interface ConnectionArgs extends SshArgs {
    /** A jump host. */
    proxy?: pulumi.Input<ProxyArgs>;
    /** Passed to `virsh -c`. Default `qemu:///system`. */
    libvirtUri?: pulumi.Input<string>;
    /** Run `sudo -n virsh` (the login user needs a NOPASSWD rule for virsh, and for rm and qemu-img where they run). Default false. */
    sudo?: pulumi.Input<boolean>;
}

export interface DomainSnapshotArgs {
    /** Where the domain lives. Default: the stack config. */
    connection?: pulumi.Input<ConnectionArgs>;
    /** The domain's name or UUID. */
    domain: pulumi.Input<string>;
    /**
     * The snapshot's name. Default: the resource's logical name. Refused: empty, `/`, `"`, `\`, a leading `-`,
     * control characters, more than 247 bytes (libvirt accepts some of these and then breaks).
     */
    snapshotName?: pulumi.Input<string>;
    /** Free text; changing it updates the snapshot in place (`--redefine`). */
    description?: pulumi.Input<string>;
    /** `internal` (inside the qcow2 image, the default) or `external` (an overlay file per disk; new writes go there). */
    kind?: pulumi.Input<"internal" | "external">;
    /** `none` (disk only), `internal` or `external`. Default: saved while the domain runs, skipped when it is shut off. */
    memory?: pulumi.Input<"none" | "internal" | "external">;
    /** With memory `external`. Default: beside the first disk, `DOMAIN.SNAPSHOT.mem`. */
    memoryFile?: pulumi.Input<string>;
    /** Per-disk overrides, by target (`vda`) or source path. Default: every writable disk by `kind`. */
    disks?: pulumi.Input<pulumi.Input<SnapshotDiskArgs>[]>;
    /** Freeze the guest's filesystems for the snapshot (a connected guest agent, disk-only). Default false. */
    quiesce?: pulumi.Input<boolean>;
    /** All disks or none. Default true. */
    atomic?: pulumi.Input<boolean>;
    /** A live full-system external snapshot. Default false. */
    live?: pulumi.Input<boolean>;
    /** Stop the domain after the snapshot. Default false. */
    halt?: pulumi.Input<boolean>;
    /** `delete` (the default) merges the data into the child on destroy; `metadata` drops libvirt's record and keeps the data. */
    deletion?: pulumi.Input<"delete" | "metadata">;
    /**
     * Take over an existing snapshot of this name, if it matches what is declared (`pulumi import` does not work for
     * dynamic providers). Default false.
     */
    adopt?: pulumi.Input<boolean>;
    /**
     * The room check asks for on the filesystem of each overlay, in MiB, beside the guest's RAM for a memory
     * state (check refuses a snapshot that doesn't fit, giving both figures). Default 64.
     */
    spaceMarginMiB?: pulumi.Input<number>;
    /** The time limit for each virsh command. Default 300. */
    timeoutSeconds?: pulumi.Input<number>;
}

export interface SnapshotDiskArgs {
    /** A disk target (`vda`) or its source path. */
    name: pulumi.Input<string>;
    /** `internal`, `external` (an overlay file) or `no` (leave the disk out). */
    snapshot: pulumi.Input<"internal" | "external" | "no">;
    /** The overlay file, with `external`. */
    file?: pulumi.Input<string>;
    /** The overlay's format, with `external`. */
    driverType?: pulumi.Input<"qcow2" | "raw" | "qed">;
}

export interface DomainCheckpointArgs {
    /** Where the domain lives. Default: the stack config. */
    connection?: pulumi.Input<ConnectionArgs>;
    /** The domain's name or UUID. */
    domain: pulumi.Input<string>;
    /**
     * The checkpoint's name. Default: the resource's logical name. Letters, digits, `_`, `-` and `.`, not starting
     * with `.` or `-`: libvirt's checkpoint schema is stricter than its snapshot schema.
     */
    checkpointName?: pulumi.Input<string>;
    /** Changed in place (`checkpoint-create --redefine`), without a new checkpoint. */
    description?: pulumi.Input<string>;
    /** Per-disk overrides. Default: every writable disk gets a bitmap. */
    disks?: pulumi.Input<pulumi.Input<CheckpointDiskArgs>[]>;
    /** libvirt's QEMU driver rejects it, so true is refused at check; a checkpoint copies no data. Default false. */
    quiesce?: pulumi.Input<boolean>;
    /** `delete` (the default) removes the bitmaps, and the parent keeps covering their changes; `metadata` drops only libvirt's record. */
    deletion?: pulumi.Input<"delete" | "metadata">;
    /** Take over an existing checkpoint of that name, if its disks match the declaration. Default false. */
    adopt?: pulumi.Input<boolean>;
    /** The time limit for each virsh command. Default 300. */
    timeoutSeconds?: pulumi.Input<number>;
}

export interface CheckpointDiskArgs {
    /** A disk target (`vda`) or its source path. */
    name: pulumi.Input<string>;
    /** `bitmap` (track the disk's changes) or `no` (leave the disk out, for example a raw one). */
    checkpoint: pulumi.Input<"bitmap" | "no">;
    /** libvirt's QEMU driver names every bitmap after its checkpoint, so this may only be the checkpoint name. */
    bitmap?: pulumi.Input<string>;
}

export interface SnapshotRevertArgs {
    /** Where the domain lives. Default: the stack config. */
    connection?: pulumi.Input<ConnectionArgs>;
    /** The domain's name or UUID. */
    domain: pulumi.Input<string>;
    /** The snapshot's name, or a DomainSnapshot's `snapshotName` output. */
    snapshot: pulumi.Input<string>;
    /** A change in any value reverts again. */
    triggers?: pulumi.Input<unknown[]>;
    /** The state after the revert: `running`, `paused`, or `as-snapshotted` (the default: the state the snapshot was taken in). */
    afterRevert?: pulumi.Input<"running" | "paused" | "as-snapshotted">;
    /** `--force`, for risky reverts, for example to a snapshot without a domain definition. Default false. */
    force?: pulumi.Input<boolean>;
    /** The time limit for each virsh command. Default 300. */
    timeoutSeconds?: pulumi.Input<number>;
}

export interface RestorePointTargetArgs {
    /** Where these domains live. Default: the stack config. */
    connection?: pulumi.Input<ConnectionArgs>;
    /** Names or UUIDs. */
    domains: pulumi.Input<pulumi.Input<string>[]>;
}

export interface RestorePointArgs {
    /** The one connection, with `domains`. Default: the stack config. */
    connection?: pulumi.Input<ConnectionArgs>;
    /** The domains on the one connection. Give either this or `targets`. */
    domains?: pulumi.Input<pulumi.Input<string>[]>;
    /** One entry per host, to span hosts. Give either this or `domains`. */
    targets?: pulumi.Input<pulumi.Input<RestorePointTargetArgs>[]>;
    /** The snapshot's name on every domain. Default: the resource's logical name. */
    snapshotName?: pulumi.Input<string>;
    /** As for DomainSnapshot. */
    description?: pulumi.Input<string>;
    /** As for DomainSnapshot. */
    kind?: pulumi.Input<"internal" | "external">;
    /** `none` or `internal`; external memory needs a file per domain (use DomainSnapshot). */
    memory?: pulumi.Input<"none" | "internal" | "external">;
    /** `simultaneous` (the default) pauses every running domain, snapshots each and resumes them all; `independent` doesn't pause. */
    consistency?: pulumi.Input<"simultaneous" | "independent">;
    /** As for DomainSnapshot. */
    deletion?: pulumi.Input<"delete" | "metadata">;
    /**
     * Freeze each running guest's filesystems through its guest agent for the snapshots (disk-only snapshots:
     * memory 'none'), with a guard on each host that thaws them if the provider is cut off. With `simultaneous`
     * every guest is frozen, then every domain paused, snapshotted and resumed, then the guests thawed. Default false.
     */
    quiesce?: pulumi.Input<boolean>;
    /** The room check asks for on the filesystem of each overlay, in MiB (and the guest's RAM for memory: 'internal'). Default 64. */
    spaceMarginMiB?: pulumi.Input<number>;
    /** The time limit for each virsh command. Default 300. */
    timeoutSeconds?: pulumi.Input<number>;
}

export interface DomainBackupArgs {
    /** Where the domain lives. Default: the stack config. */
    connection?: pulumi.Input<ConnectionArgs>;
    /** The domain's name or UUID; it must be running or paused. */
    domain: pulumi.Input<string>;
    /**
     * The folder on the libvirt host for the backup files (made if missing). Each disk goes to
     * `DOMAIN.CHECKPOINT.DISK.qcow2`; an incremental finds its base there by the same rule.
     */
    targetDir: pulumi.Input<string>;
    /**
     * The checkpoint of an earlier backup (typically its `checkpointName` output): only the blocks written since are
     * copied. Default: a full backup.
     */
    incrementalFrom?: pulumi.Input<string>;
    /** Per-disk choices. Default: every writable disk is backed up. */
    disks?: pulumi.Input<pulumi.Input<BackupDiskArgs>[]>;
    /** The checkpoint this backup creates, atomically with it. Default: the resource's logical name. Same rules as DomainCheckpoint's. */
    checkpointName?: pulumi.Input<string>;
    /**
     * Freeze the guest's filesystems (guest agent) while the job starts; a guard on the host thaws them if the provider
     * is cut off. Default false.
     */
    quiesce?: pulumi.Input<boolean>;
    /** `checkpoint` (the default) removes the checkpoint on destroy and keeps the files; `files` removes the files too. */
    deletion?: pulumi.Input<"checkpoint" | "files">;
    /** The bound for the whole backup job; a job that outlives it is aborted and its partial files removed. Default 3600. */
    timeoutSeconds?: pulumi.Input<number>;
}

export interface BackupDiskArgs {
    /** A disk target (`vda`) or its source path. */
    name: pulumi.Input<string>;
    /** `yes` (copy the disk) or `no` (leave it out, for example a raw one). */
    backup: pulumi.Input<"yes" | "no">;
}

// Each interface above is exactly its schema's input type, with every value a
// Pulumi Input and the name (which defaults to the logical name) optional.
type Resolved<T> =
    T extends pulumi.OutputInstance<infer U>
        ? Resolved<U>
        : T extends Promise<infer U>
          ? Resolved<U>
          : T extends ReadonlyArray<infer E>
            ? Resolved<E>[]
            : T extends object
              ? { [K in keyof T]: Resolved<T[K]> }
              : T;
/** Exactly the same type, optional fields included (mutual assignability would not see a missing optional field). */
type Same<A, B> = (<T>() => T extends Resolved<A> ? 1 : 2) extends <T>() => T extends Resolved<B> ? 1 : 2 ? true : false;
type Assert<T extends true> = T;
type WithOptional<T, K extends keyof T> = Omit<T, K> & { [P in K]?: T[P] };
// eslint-disable-next-line @typescript-eslint/no-unused-vars
type ArgsMatchSchemas = [
    Assert<Same<ConnectionArgs, z.input<typeof ConnectionSchema>>>,
    Assert<Same<ProxyArgs, z.input<typeof ProxySchema>>>,
    Assert<Same<DomainSnapshotArgs, WithOptional<z.input<typeof DomainSnapshotSchema>, "snapshotName">>>,
    Assert<Same<DomainCheckpointArgs, WithOptional<z.input<typeof DomainCheckpointSchema>, "checkpointName">>>,
    Assert<Same<SnapshotRevertArgs, z.input<typeof SnapshotRevertSchema>>>,
    Assert<Same<RestorePointArgs, WithOptional<z.input<typeof RestorePointSchema>, "snapshotName">>>,
    Assert<Same<DomainBackupArgs, WithOptional<z.input<typeof DomainBackupSchema>, "checkpointName">>>,
];

// ---- resources --------------------------------------------------------------------

const MODULE = "libvirt-snapshots";

/** Connections hold passwords and keys: keep them encrypted in the state's inputs too, however the program passed them. */
function secretInput(v: unknown): pulumi.Output<unknown> | undefined {
    return v === undefined ? undefined : pulumi.secret(v);
}

/** The connection may hold a password or key: keep it encrypted in the outputs too, even when given in plain text. */
function secretOpts(opts: pulumi.CustomResourceOptions | undefined, keys: string[] = ["connection"]): pulumi.CustomResourceOptions {
    return { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), ...keys] };
}

type Outputs<T> = { readonly [K in keyof T]-?: pulumi.Output<T[K]> };

/** The words of a list written as one string, split at white space, as a type. */
type Words<S extends string> = S extends `${infer W extends string}${" " | "\n"}${infer Rest extends string}`
    ? Words<W> | Words<Rest>
    : S extends ""
      ? never
      : S;

/**
 * The engine makes an Output of each key a resource registers, so every declared output is named once more, here.
 * A missing or a stray name fails to compile: an output declared but never registered never resolves.
 */
function outputNames<T>() {
    return <S extends string>(names: [Words<S>] extends [keyof T] ? ([keyof T] extends [Words<S>] ? S : never) : never): string[] =>
        names.split(/\s+/).filter(Boolean);
}

/**
 * What a constructor registers: every output (unknown until the provider answers), the inputs with the connection
 * made a secret, what the resource fills in itself, and the state kept for diff.
 */
function registered(outputs: string[], args: { connection?: unknown }, own: Record<string, unknown> = {}): pulumi.Inputs {
    const fields = Object.fromEntries(outputs.map((k) => [k, undefined]));
    const given = args as Record<string, unknown>;
    const later = REFERENCES.filter((k) => pulumi.Output.isInstance(given[k]) || given[k] instanceof Promise);
    const pending = later.length ? { [FROM_RESOURCES]: later } : {};
    return { ...fields, ...args, connection: secretInput(args.connection), ...own, ...pending, declared: undefined };
}

/** The resource's URN, recorded for the maker's mark a snapshot or checkpoint carries (MAKER in inputs.ts). */
function makerOf(name: string, type: string, opts: pulumi.CustomResourceOptions | undefined): pulumi.Inputs {
    return { [MAKER]: pulumi.createUrn(name, `pulumi-nodejs:dynamic/${MODULE}:${type}`, opts?.parent) };
}

/** Inputs that name something on the host another resource may make in the same run (see FROM_RESOURCES in inputs.ts). */
const REFERENCES = ["domain", "snapshot", "incrementalFrom"];
/** The same key as inputs.ts's, checked by the compiler without loading that module into a user's program. */
const FROM_RESOURCES: typeof FromResourcesKey = "__fromResources";
const MAKER: typeof MakerKey = "__maker";

const DOMAIN_SNAPSHOT_OUTPUTS = outputNames<DomainSnapshotOutputs>()(`
    connection domain snapshotName description kind memory memoryFile deletion domainName domainUuid
    creationTime state parent isCurrent diskFiles libvirtVersion adopted xml recordLost restoredAt
`);
const DOMAIN_CHECKPOINT_OUTPUTS = outputNames<DomainCheckpointOutputs>()(`
    connection domain checkpointName description deletion domainName domainUuid creationTime parent
    disks changedBytes changedBytesAt xml lineage libvirtVersion adopted recordLost restoredAt
    bitmapsHealthy bitmapProblems
`);
const SNAPSHOT_REVERT_OUTPUTS = outputNames<SnapshotRevertOutputs>()(`
    connection domain snapshot triggers afterRevert force domainName domainUuid revertedAt domainState
    snapshotCreationTime libvirtVersion
`);
const RESTORE_POINT_OUTPUTS = outputNames<RestorePointOutputs>()(`
    connection targets domains snapshotName description consistency deletion snapshots
    pausedMilliseconds
`);
const DOMAIN_BACKUP_OUTPUTS = outputNames<DomainBackupOutputs>()(`
    connection domain targetDir incrementalFrom checkpointName deletion domainName domainUuid kind
    basedOn files bytesProcessed completedAt frozenMilliseconds adopted libvirtVersion intact drift
    checkedAt
`);

/** A libvirt snapshot of one domain: taken on create, removed (merged into its child) on delete. */
export class DomainSnapshot extends pulumi.dynamic.Resource implements Outputs<DomainSnapshotOutputs> {
    declare public readonly connection: pulumi.Output<Connection | undefined>;
    declare public readonly domain: pulumi.Output<string>;
    declare public readonly snapshotName: pulumi.Output<string>;
    declare public readonly description: pulumi.Output<string | undefined>;
    declare public readonly kind: pulumi.Output<DomainSnapshotOutputs["kind"]>;
    declare public readonly memory: pulumi.Output<DomainSnapshotOutputs["memory"]>;
    declare public readonly memoryFile: pulumi.Output<string | undefined>;
    declare public readonly deletion: pulumi.Output<DomainSnapshotOutputs["deletion"]>;
    declare public readonly domainName: pulumi.Output<string>;
    declare public readonly domainUuid: pulumi.Output<string>;
    declare public readonly creationTime: pulumi.Output<string>;
    declare public readonly state: pulumi.Output<string>;
    declare public readonly parent: pulumi.Output<string | null>;
    declare public readonly isCurrent: pulumi.Output<boolean>;
    declare public readonly diskFiles: pulumi.Output<Record<string, string>>;
    declare public readonly libvirtVersion: pulumi.Output<string>;
    declare public readonly adopted: pulumi.Output<boolean>;
    declare public readonly xml: pulumi.Output<string | undefined>;
    declare public readonly recordLost: pulumi.Output<boolean | undefined>;
    declare public readonly restoredAt: pulumi.Output<string | null | undefined>;

    constructor(name: string, args: DomainSnapshotArgs, opts?: pulumi.CustomResourceOptions) {
        super(
            DomainSnapshotProvider,
            name,
            registered(DOMAIN_SNAPSHOT_OUTPUTS, args, {
                snapshotName: args.snapshotName ?? name,
                ...makerOf(name, "DomainSnapshot", opts),
            }),
            secretOpts(opts),
            MODULE,
            "DomainSnapshot",
        );
    }
}

/**
 * A libvirt checkpoint of one running domain: qcow2 dirty bitmaps that track
 * every block written since. `changedBytes` is measured again on every refresh.
 */
export class DomainCheckpoint extends pulumi.dynamic.Resource implements Outputs<DomainCheckpointOutputs> {
    declare public readonly connection: pulumi.Output<Connection | undefined>;
    declare public readonly domain: pulumi.Output<string>;
    declare public readonly checkpointName: pulumi.Output<string>;
    declare public readonly description: pulumi.Output<string | undefined>;
    declare public readonly deletion: pulumi.Output<DomainCheckpointOutputs["deletion"]>;
    declare public readonly domainName: pulumi.Output<string>;
    declare public readonly domainUuid: pulumi.Output<string>;
    declare public readonly creationTime: pulumi.Output<string>;
    declare public readonly parent: pulumi.Output<string | null>;
    declare public readonly disks: pulumi.Output<CheckpointDiskState[]>;
    declare public readonly changedBytes: pulumi.Output<number | null>;
    declare public readonly changedBytesAt: pulumi.Output<string | null>;
    declare public readonly xml: pulumi.Output<string>;
    declare public readonly lineage: pulumi.Output<DomainCheckpointOutputs["lineage"]>;
    declare public readonly libvirtVersion: pulumi.Output<string>;
    declare public readonly adopted: pulumi.Output<boolean>;
    declare public readonly recordLost: pulumi.Output<boolean>;
    declare public readonly restoredAt: pulumi.Output<string | null>;
    declare public readonly bitmapsHealthy: pulumi.Output<boolean | null>;
    declare public readonly bitmapProblems: pulumi.Output<string[]>;

    constructor(name: string, args: DomainCheckpointArgs, opts?: pulumi.CustomResourceOptions) {
        super(
            DomainCheckpointProvider,
            name,
            registered(DOMAIN_CHECKPOINT_OUTPUTS, args, {
                checkpointName: args.checkpointName ?? name,
                ...makerOf(name, "DomainCheckpoint", opts),
            }),
            secretOpts(opts),
            MODULE,
            "DomainCheckpoint",
        );
    }
}

/**
 * Reverts a domain to a snapshot when created, and again whenever `triggers`
 * (or the snapshot, domain or afterRevert) change. Deleting it leaves the VM as it is.
 */
export class SnapshotRevert extends pulumi.dynamic.Resource implements Outputs<SnapshotRevertOutputs> {
    declare public readonly connection: pulumi.Output<Connection | undefined>;
    declare public readonly domain: pulumi.Output<string>;
    declare public readonly snapshot: pulumi.Output<string>;
    declare public readonly triggers: pulumi.Output<unknown[] | undefined>;
    declare public readonly afterRevert: pulumi.Output<SnapshotRevertOutputs["afterRevert"]>;
    declare public readonly force: pulumi.Output<boolean>;
    declare public readonly domainName: pulumi.Output<string>;
    declare public readonly domainUuid: pulumi.Output<string>;
    declare public readonly revertedAt: pulumi.Output<string>;
    declare public readonly domainState: pulumi.Output<string>;
    declare public readonly snapshotCreationTime: pulumi.Output<string>;
    declare public readonly libvirtVersion: pulumi.Output<string>;

    constructor(name: string, args: SnapshotRevertArgs, opts?: pulumi.CustomResourceOptions) {
        super(SnapshotRevertProvider, name, registered(SNAPSHOT_REVERT_OUTPUTS, args), secretOpts(opts), MODULE, "SnapshotRevert");
    }
}

/**
 * One restore point across several domains, on one host (domains) or several
 * (targets). "simultaneous" pauses them all, snapshots each and resumes them;
 * all or nothing either way.
 */
export class RestorePoint extends pulumi.dynamic.Resource implements Outputs<RestorePointOutputs> {
    declare public readonly connection: pulumi.Output<Connection | undefined>;
    declare public readonly targets: pulumi.Output<RestorePointOutputs["targets"]>;
    declare public readonly domains: pulumi.Output<string[] | undefined>;
    declare public readonly snapshotName: pulumi.Output<string>;
    declare public readonly description: pulumi.Output<string | undefined>;
    declare public readonly consistency: pulumi.Output<RestorePointOutputs["consistency"]>;
    declare public readonly deletion: pulumi.Output<RestorePointOutputs["deletion"]>;
    declare public readonly snapshots: pulumi.Output<MemberSnapshot[]>;
    declare public readonly pausedMilliseconds: pulumi.Output<number>;

    constructor(name: string, args: RestorePointArgs, opts?: pulumi.CustomResourceOptions) {
        super(
            RestorePointProvider,
            name,
            registered(RESTORE_POINT_OUTPUTS, args, {
                targets: secretInput(args.targets),
                snapshotName: args.snapshotName ?? name,
                ...makerOf(name, "RestorePoint", opts),
            }),
            secretOpts(opts, ["connection", "targets"]),
            MODULE,
            "RestorePoint",
        );
    }
}

/**
 * A libvirt push-mode backup of one running (or paused) domain: a full copy of
 * its disks, or only the blocks written since an earlier backup's checkpoint.
 * It makes its own checkpoint, for the next incremental. Refresh reports a
 * missing or changed file in `intact` and `drift`; destroy keeps the files
 * unless `deletion: "files"`.
 */
export class DomainBackup extends pulumi.dynamic.Resource implements Outputs<DomainBackupOutputs> {
    declare public readonly connection: pulumi.Output<Connection | undefined>;
    declare public readonly domain: pulumi.Output<string>;
    declare public readonly targetDir: pulumi.Output<string>;
    declare public readonly incrementalFrom: pulumi.Output<string | undefined>;
    declare public readonly checkpointName: pulumi.Output<string>;
    declare public readonly deletion: pulumi.Output<DomainBackupOutputs["deletion"]>;
    declare public readonly domainName: pulumi.Output<string>;
    declare public readonly domainUuid: pulumi.Output<string>;
    declare public readonly kind: pulumi.Output<DomainBackupOutputs["kind"]>;
    declare public readonly basedOn: pulumi.Output<Record<string, string> | null>;
    declare public readonly files: pulumi.Output<BackupFile[]>;
    declare public readonly bytesProcessed: pulumi.Output<number>;
    declare public readonly completedAt: pulumi.Output<string>;
    declare public readonly frozenMilliseconds: pulumi.Output<number | null>;
    declare public readonly adopted: pulumi.Output<boolean>;
    declare public readonly libvirtVersion: pulumi.Output<string>;
    declare public readonly intact: pulumi.Output<boolean>;
    declare public readonly drift: pulumi.Output<string | null>;
    declare public readonly checkedAt: pulumi.Output<string>;

    constructor(name: string, args: DomainBackupArgs, opts?: pulumi.CustomResourceOptions) {
        super(
            DomainBackupProvider,
            name,
            registered(DOMAIN_BACKUP_OUTPUTS, args, { checkpointName: args.checkpointName ?? name }),
            secretOpts(opts),
            MODULE,
            "DomainBackup",
        );
    }
}
