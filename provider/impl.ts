// The implementation behind the thin provider objects in index.ts. They load
// this module by package name inside each call (NOTES §5), so this file's
// exports are a stable API: state written by any version calls into them.
import type * as pulumi from "@pulumi/pulumi";
import { secretsOf, type Connection } from "./connection";
import { LibvirtError, redact } from "./errors";
import { setStackConfig, stackSecrets } from "./inputs";
import { domainSnapshot } from "./domainSnapshot";
import { restorePoint as restorePointImpl } from "./restorePoint";

export async function configure(req: pulumi.dynamic.ConfigureRequest): Promise<void> {
    setStackConfig((key) => {
        const v = req.config.get(key) as unknown;
        return v === undefined || v === null ? undefined : typeof v === "string" ? v : JSON.stringify(v);
    });
}

type Methods = Record<string, (...args: any[]) => Promise<unknown>>;

/** Whatever goes wrong, no password or key text leaves the provider in an error. */
function guarded<T extends Methods>(impl: T): T {
    const out: Methods = {};
    for (const [name, fn] of Object.entries(impl)) {
        out[name] = async (...args: unknown[]) => {
            try {
                return await fn(...args);
            } catch (e) {
                const secrets = args.flatMap((a) => {
                    const c = (a && typeof a === "object" ? (a as { connection?: unknown }).connection : undefined) as Connection | undefined;
                    return secretsOf(typeof c === "object" ? c : undefined);
                }).concat(stackSecrets());
                // Always a fresh Error without a numeric `code`: the dynamic-provider server
                // turns such a code into the gRPC status, and a non-Error is never answered.
                const message = redact(e instanceof Error ? e.message : String(e), secrets);
                const clean = e instanceof LibvirtError ? new LibvirtError(e.kind, message) : new Error(message);
                if (e instanceof Error) clean.name = e.name;
                throw clean;
            }
        };
    }
    return out as T;
}

export const snapshot = guarded(domainSnapshot);
export { sshStats, handshakeCount, closeAllTransports } from "./transport";
export { virshStats } from "./virsh";

// ---- DomainCheckpoint and SnapshotRevert (issue 4) ----

// ---- RestorePoint (issue 5) ----
export const restorePoint = guarded(restorePointImpl);
