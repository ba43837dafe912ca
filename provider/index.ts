// Public API: the resources a Pulumi program declares, and the provider
// objects behind them. The provider objects are what Pulumi serializes into
// state; each is a thin shim that loads the implementation by package name at
// call time, so its text stays small and stable (NOTES §5).
import * as pulumi from "@pulumi/pulumi";
import type { Connection } from "./connection";

/** Every field may be a plain value or a Pulumi Output. */
export type DeepInput<T> =
    T extends string | number | boolean | undefined | null ? pulumi.Input<T> :
    T extends ReadonlyArray<infer U> ? pulumi.Input<ReadonlyArray<DeepInput<U>>> :
    T extends object ? pulumi.Input<{ [K in keyof T]: DeepInput<T[K]> }> :
    pulumi.Input<T>;

export type ConnectionArgs = DeepInput<Connection>;

export const MODULE = "libvirt-snapshots";

export function secretOpts(opts: pulumi.CustomResourceOptions | undefined): pulumi.CustomResourceOptions {
    // The connection may hold a password or key: keep it encrypted in state even when given in plain text.
    return { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "connection"] };
}

