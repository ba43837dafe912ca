// Every output a resource class declares must be an Output on its instances
// that resolves to what the engine returned. The SDK registers an Output only
// for the keys of the props a constructor passes to super(); a `declare`d
// field emits no code, so one missing from the props is simply undefined on
// the instance (`res.x.apply` throws), whatever the provider returns.
import * as assert from "node:assert/strict";
import * as pulumi from "@pulumi/pulumi";
import { DomainBackup, DomainCheckpoint, DomainSnapshot, RestorePoint, SnapshotRevert } from "pulumi-libvirt-snapshots";

/**
 * The outputs a class declares: its Output-typed members, less the resource's
 * own (urn, id). Only the types know them (`declare` leaves nothing at run
 * time), so each list below is checked against this at compile time.
 */
type DeclaredOutputs<C> = Exclude<
    { [K in keyof C]-?: C[K] extends pulumi.OutputInstance<unknown> ? K : never }[keyof C],
    keyof pulumi.CustomResource
>;

/** The object literal must name every declared output and nothing else, so a new output can't be left out of this test. */
function declared<C>(all: Record<DeclaredOutputs<C>, true>): string[] {
    return Object.keys(all);
}

interface Case {
    type: string;
    outputs: string[];
    /** Only the arguments the type requires: `...args` in the constructor would register any other, hiding a missing prop. */
    make: (name: string) => pulumi.CustomResource;
}

const CASES: Case[] = [
    {
        type: "DomainSnapshot",
        make: (name) => new DomainSnapshot(name, { domain: "d" }),
        outputs: declared<DomainSnapshot>({
            connection: true,
            domain: true,
            snapshotName: true,
            description: true,
            kind: true,
            memory: true,
            memoryFile: true,
            deletion: true,
            domainName: true,
            domainUuid: true,
            creationTime: true,
            state: true,
            parent: true,
            isCurrent: true,
            diskFiles: true,
            libvirtVersion: true,
            adopted: true,
            xml: true,
            recordLost: true,
            restoredAt: true,
        }),
    },
    {
        type: "DomainCheckpoint",
        make: (name) => new DomainCheckpoint(name, { domain: "d" }),
        outputs: declared<DomainCheckpoint>({
            connection: true,
            domain: true,
            checkpointName: true,
            description: true,
            deletion: true,
            domainName: true,
            domainUuid: true,
            creationTime: true,
            parent: true,
            disks: true,
            changedBytes: true,
            changedBytesAt: true,
            xml: true,
            lineage: true,
            libvirtVersion: true,
            adopted: true,
            recordLost: true,
            restoredAt: true,
            bitmapsHealthy: true,
            bitmapProblems: true,
        }),
    },
    {
        type: "SnapshotRevert",
        make: (name) => new SnapshotRevert(name, { domain: "d", snapshot: "s" }),
        outputs: declared<SnapshotRevert>({
            connection: true,
            domain: true,
            snapshot: true,
            triggers: true,
            afterRevert: true,
            force: true,
            domainName: true,
            domainUuid: true,
            revertedAt: true,
            domainState: true,
            snapshotCreationTime: true,
            libvirtVersion: true,
        }),
    },
    {
        // Neither `domains` nor `targets` is required by the type (check wants one; the mocks never call it).
        type: "RestorePoint",
        make: (name) => new RestorePoint(name, {}),
        outputs: declared<RestorePoint>({
            connection: true,
            targets: true,
            domains: true,
            snapshotName: true,
            description: true,
            consistency: true,
            deletion: true,
            snapshots: true,
            pausedMilliseconds: true,
        }),
    },
    {
        type: "DomainBackup",
        make: (name) => new DomainBackup(name, { domain: "d", targetDir: "/backups" }),
        outputs: declared<DomainBackup>({
            connection: true,
            domain: true,
            targetDir: true,
            incrementalFrom: true,
            checkpointName: true,
            deletion: true,
            domainName: true,
            domainUuid: true,
            kind: true,
            basedOn: true,
            files: true,
            bytesProcessed: true,
            completedAt: true,
            frozenMilliseconds: true,
            adopted: true,
            libvirtVersion: true,
            intact: true,
            drift: true,
            checkedAt: true,
        }),
    },
];

/** What the mock engine returns for an output: unique, so a resolved value can't come from the inputs by chance. */
const sentinel = (type: string, key: string) => `mock ${type}.${key}`;

/** The output's value, or why not: not an Output at all, or not resolved within `ms`. */
function settle(res: pulumi.CustomResource, key: string, ms: number): Promise<{ value: unknown } | { problem: string }> {
    const out = (res as unknown as Record<string, unknown>)[key];
    if (!pulumi.Output.isInstance(out)) {
        return Promise.resolve({ problem: `${key}: not an Output on the instance (${typeof out}); missing from the constructor's props?` });
    }
    return new Promise((resolve) => {
        const timer = setTimeout(() => resolve({ problem: `${key}: did not resolve within ${ms} ms` }), ms);
        out.apply((value) => {
            clearTimeout(timer);
            resolve({ value });
        });
    });
}

/** The inputs each resource registered, by name, as the mock engine got them. */
const registeredInputs = new Map<string, Record<string, unknown>>();

describe("declared outputs", function () {
    // Registration serializes each provider (about 250 ms for the first on an idle machine).
    this.timeout(60_000);

    before(async () => {
        await pulumi.runtime.setMocks(
            {
                newResource(args) {
                    const c = CASES.find((c) => args.type.endsWith(`:${c.type}`));
                    assert.ok(c, `unexpected resource type ${args.type}`);
                    registeredInputs.set(args.name, args.inputs as Record<string, unknown>);
                    const state = { ...(args.inputs as Record<string, unknown>) };
                    for (const k of c.outputs) state[k] = sentinel(c.type, k);
                    return { id: `${args.name}-id`, state };
                },
                call: () => ({}),
            },
            "outputs-test",
            "unit",
            false,
        );
    });

    // setMocks' state is global to the process: put the runtime back as it was for the test files after this one.
    after(() => pulumi.runtime.resetOptions("", "", -1, "", "", false, ""));

    for (const c of CASES) {
        it(`every output ${c.type} declares resolves to what the engine returned`, async () => {
            const res = c.make(`${c.type.toLowerCase()}-1`);
            // Wait for registration first, so a slow serialization doesn't eat into each output's time.
            const urn = await settle(res, "urn", 30_000);
            assert.ok("value" in urn, `${c.type} ${"problem" in urn ? urn.problem : ""}`);

            const results = await Promise.all(c.outputs.map(async (key) => ({ key, r: await settle(res, key, 2_000) })));
            const problems = results.flatMap(({ key, r }) =>
                "problem" in r
                    ? [r.problem]
                    : r.value === sentinel(c.type, key)
                      ? []
                      : [`${key}: resolved to ${JSON.stringify(r.value)}, not the engine's ${JSON.stringify(sentinel(c.type, key))}`],
            );
            assert.deepEqual(problems, [], `${c.type}: ${problems.join("; ")}`);
        });
    }
    it("an input taken from another resource is recorded as such, so preview doesn't refuse what that resource will make", async () => {
        const taken = new DomainSnapshot("from-1", { domain: "d" });
        const chained = new SnapshotRevert("from-2", { domain: "d", snapshot: taken.snapshotName });
        const literal = new SnapshotRevert("from-3", { domain: "d", snapshot: "s" });
        const incremental = new DomainBackup("from-4", {
            domain: pulumi.output("d"),
            targetDir: "/b",
            incrementalFrom: taken.snapshotName,
        });
        for (const r of [chained, literal, incremental]) await settle(r, "urn", 30_000);
        assert.deepEqual(registeredInputs.get("from-2")?.__fromResources, ["snapshot"]);
        assert.equal("__fromResources" in registeredInputs.get("from-3")!, false, "a literal is checked at preview as always");
        assert.deepEqual(registeredInputs.get("from-4")?.__fromResources, ["domain", "incrementalFrom"]);
    });
});
