// The shared fixture of the engine-path suites: one SDK dynamic-provider
// server for a describe block, lab domains made for it and disposed after it,
// and the calls every suite makes through the engine.
import * as fs from "node:fs";
import type * as pulumi from "@pulumi/pulumi";
import { DYNAMIC_TYPE, EngineHarness, PACKAGE_ROOT, type Props, type ResourceState, type StartOptions } from "../harness/engine";
import { loadLab, makeDomain, type LabInfo, type MakeDomainOptions, type TestDomain } from "./lab";

export interface EngineSuite {
    /** The server; started in the suite's `before`. */
    readonly engine: EngineHarness;
    /** Every domain the suite made and has not disposed of yet. */
    readonly domains: readonly TestDomain[];
    /** A fresh lab domain named PREFIX…, disposed after the suite. */
    newDomain(o?: MakeDomainOptions): Promise<TestDomain>;
    newDomains(n: number, o?: MakeDomainOptions): Promise<TestDomain[]>;
    /** Dispose of a domain now rather than after the suite. */
    dispose(d: TestDomain): Promise<void>;
    /** Check then create, as `pulumi up` does for a new resource. */
    up(name: string, provider: pulumi.dynamic.ResourceProvider, inputs: Props): Promise<ResourceState>;
    /** What `pulumi preview` would print for these inputs: "property: reason" lines, "" when check passes. */
    failuresOf(provider: pulumi.dynamic.ResourceProvider, inputs: Props, olds?: Props): Promise<string>;
}

/** Registers `before`/`after` hooks in the calling describe block. */
/**
 * A resource that names no connection uses the stack's. On this machine that is
 * local virsh; a host of its own (another network namespace) is reached over SSH,
 * as `pulumi config set libvirt-snapshots:host ...` would set it.
 */
export function stackConfigFor(lab: LabInfo): { config: Record<string, string>; secretConfig: Record<string, string> } {
    if (lab.local) return { config: {}, secretConfig: {} };
    return {
        config: {
            "libvirt-snapshots:host": lab.host,
            "libvirt-snapshots:port": String(lab.port),
            "libvirt-snapshots:user": lab.user,
            "libvirt-snapshots:hostKey": lab.hostKey,
        },
        secretConfig: { "libvirt-snapshots:privateKey": fs.readFileSync(lab.privateKeyPath, "utf8") },
    };
}

/** `opts` may be a function, for options that exist only once the suite's own earlier hooks ran. */
export function engineSuite(prefix: string, opts: Partial<StartOptions> | (() => Partial<StartOptions>) = {}): EngineSuite {
    let engine: EngineHarness | undefined;
    const domains: TestDomain[] = [];
    const started = (): EngineHarness => {
        if (!engine) throw new Error("the engine starts in the suite's before hook");
        return engine;
    };
    before(async () => {
        const o = typeof opts === "function" ? opts() : opts;
        const stack = stackConfigFor(loadLab());
        engine = await EngineHarness.start({
            cwd: PACKAGE_ROOT,
            ...o,
            config: { ...stack.config, ...o.config },
            secretConfig: { ...stack.secretConfig, ...o.secretConfig },
        });
    });
    after(async () => {
        await engine?.close();
        for (const d of domains) await d.dispose().catch(() => undefined);
    });
    const suite: EngineSuite = {
        get engine() {
            return started();
        },
        domains,
        async newDomain(o = {}) {
            const d = await makeDomain({ prefix, ...o });
            domains.push(d);
            return d;
        },
        async newDomains(n, o = {}) {
            const ds = await Promise.all(Array.from({ length: n }, () => makeDomain({ prefix, ...o })));
            domains.push(...ds);
            return ds;
        },
        async dispose(d) {
            domains.splice(domains.indexOf(d) >>> 0, 1);
            await d.dispose();
        },
        up: (name, provider, inputs) => started().up(name, provider, inputs),
        async failuresOf(provider, inputs, olds = {}) {
            const e = started();
            const reply = await e.check(e.urn(DYNAMIC_TYPE, `${prefix}check`), olds, await e.programInputs(provider, inputs));
            return reply.failures.map((f) => `${f.property}: ${f.reason}`).join("\n");
        },
    };
    return suite;
}
