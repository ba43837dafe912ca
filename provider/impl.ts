// The frozen ABI. The shims that index.ts serializes into every user's state
// load this module by package name ("pulumi-libvirt-snapshots/impl") inside
// each call, so state written by any release runs today's code through it.
// Every name and signature in `Impl` stays, for ever: add, never rename or remove.
// test/abi.test.ts pins the shim texts of each release and the methods they call.
import type * as pulumi from "@pulumi/pulumi";
import { guarded } from "./guard";
import { setStackConfig } from "./stackConfig";
import { domainSnapshot } from "./resources/domainSnapshot";
import { domainCheckpoint } from "./resources/domainCheckpoint";
import { snapshotRevert } from "./resources/snapshotRevert";
import { restorePoint as restorePointResource } from "./resources/restorePoint";
import { domainBackup } from "./resources/domainBackup";

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

export const snapshot: Impl["snapshot"] = guarded(domainSnapshot);
export const checkpoint: Impl["checkpoint"] = guarded(domainCheckpoint);
export const revert: Impl["revert"] = guarded(snapshotRevert);
export const restorePoint: Impl["restorePoint"] = guarded(restorePointResource);
export const backup: Impl["backup"] = guarded(domainBackup);
