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

/** One resource's CRUD, as the shims call it. */
export interface ResourceImpl {
    check(olds: Wire, news: Wire): Promise<pulumi.dynamic.CheckResult>;
    diff(id: string, olds: Wire, news: Wire): Promise<pulumi.dynamic.DiffResult>;
    create(inputs: Wire): Promise<pulumi.dynamic.CreateResult>;
    read(id: string, props: Wire): Promise<pulumi.dynamic.ReadResult>;
    update(id: string, olds: Wire, news: Wire): Promise<pulumi.dynamic.UpdateResult>;
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
