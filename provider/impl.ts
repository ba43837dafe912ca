// The frozen ABI. The shims that index.ts serializes into every user's state
// load this module by package name ("pulumi-libvirt-snapshots/impl") inside
// each call, so state written by any release runs today's code through it.
// Every name and signature in `Impl` stays, for ever: add, never rename or remove.
// test/abi.test.ts pins the shim texts of each release and the methods they call.
import type * as pulumi from "@pulumi/pulumi";
import { guarded } from "./guard";
import { setStackConfig } from "./stackConfig";

/** What the engine passes: plain JSON, validated inside each method. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Wire = any;

/**
 * One resource's CRUD, as the shims call it, and the contract every resource keeps: what each call may do.
 *
 * Only create, update and delete change anything on a host. check and diff run at `pulumi preview` as well as
 * at `pulumi up`, and read at `pulumi refresh`: they only read (virsh's queries, `qemu-img info -U`, `stat`,
 * `df`), so neither a preview nor a refresh changes a VM or libvirt's records. Where only a write could tell
 * (a lost checkpoint record on a running domain), diff plans the update, and the update finds out and keeps
 * what it learnt as an init failure. test/unit/previewReads.test.ts holds check, diff and read of a lost record
 * to this, command by command.
 *
 * An init failure (the engine's ErrorResourceInitFailed): create or update made something on the host but could
 * not finish, or can't tell whether it did (a lost connection, a timeout). It throws an Error carrying `id` (the
 * id create would have returned), `properties` (the outputs known so far: enough for update to finish the job
 * and for delete to remove it) and `reasons` (what to tell the user); guard.ts adds `__provider`. Pulumi keeps
 * the resource in its state: the next `pulumi up` calls update, which looks at the host and finishes, and
 * `pulumi destroy` calls delete. Any other error from create means nothing was made that the state must keep.
 */
export interface ResourceImpl {
    /** Validates `news`, naming each failing property; tolerates unknowns; asks the host, only reading, only for a new one. */
    check(olds: Wire, news: Wire): Promise<pulumi.dynamic.CheckResult>;
    /** Plans a replace or an update (`changes` always set); only reads the host, to see drift, and never repairs it. */
    diff(id: string, olds: Wire, news: Wire): Promise<pulumi.dynamic.DiffResult>;
    /** Makes it on the host and returns a non-empty id; if it fails, nothing was made, unless it is an init failure. */
    create(inputs: Wire): Promise<pulumi.dynamic.CreateResult>;
    /** Returns the resource as the host has it now, only reading; `id: ""` means it is gone, and refresh drops it. */
    read(id: string, props: Wire): Promise<pulumi.dynamic.ReadResult>;
    /** Brings the host to `news` in place, the id unchanged (a lost record given back, a description redefined). */
    update(id: string, olds: Wire, news: Wire): Promise<pulumi.dynamic.UpdateResult>;
    /** Removes it from the host; one already gone deletes successfully; if it fails, it is assumed to still exist. */
    delete(id: string, props: Wire): Promise<void>;
}

/** The module's exports, as the shims of every release call them. */
export interface Impl {
    configure(req: pulumi.dynamic.ConfigureRequest): Promise<void>;
    snapshot: ResourceImpl;
    checkpoint: ResourceImpl;
    revert: ResourceImpl;
    restorePoint: ResourceImpl;
    backup: ResourceImpl;
}

/** The resources' keys in `Impl`, one per shim. */
export type ResourceKey = Exclude<keyof Impl, "configure">;

export const configure: Impl["configure"] = async (req) => {
    setStackConfig((key) => {
        const v = req.config.get(key) as unknown;
        return v === undefined || v === null ? undefined : typeof v === "string" ? v : JSON.stringify(v);
    });
};

/**
 * A resource's module is loaded on its first call, as ssh2 is on the first dial: a program
 * that declares only snapshots never loads the checkpoint, revert, restore-point and
 * backup code (their schemas are built when their module loads). The object has the same
 * six methods the shims call, from the first require on.
 */
function onFirstCall<T extends ResourceImpl & Parameters<typeof guarded>[0]>(load: () => T): ResourceImpl {
    let impl: T | undefined;
    const get = (): ResourceImpl => (impl ??= guarded(load()));
    return {
        check: (olds, news) => get().check(olds, news),
        diff: (id, olds, news) => get().diff(id, olds, news),
        create: (inputs) => get().create(inputs),
        read: (id, props) => get().read(id, props),
        update: (id, olds, news) => get().update(id, olds, news),
        delete: (id, props) => get().delete(id, props),
    };
}

export const snapshot: Impl["snapshot"] = onFirstCall(
    () => (require("./resources/domainSnapshot") as typeof import("./resources/domainSnapshot")).domainSnapshot,
);
export const checkpoint: Impl["checkpoint"] = onFirstCall(
    () => (require("./resources/domainCheckpoint") as typeof import("./resources/domainCheckpoint")).domainCheckpoint,
);
export const revert: Impl["revert"] = onFirstCall(
    () => (require("./resources/snapshotRevert") as typeof import("./resources/snapshotRevert")).snapshotRevert,
);
export const restorePoint: Impl["restorePoint"] = onFirstCall(
    () => (require("./resources/restorePoint") as typeof import("./resources/restorePoint")).restorePoint,
);
export const backup: Impl["backup"] = onFirstCall(
    () => (require("./resources/domainBackup") as typeof import("./resources/domainBackup")).domainBackup,
);
