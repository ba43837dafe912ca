// Concurrency through the engine path, on real running domains.
//  (a) 20 DomainSnapshot resources across 3 running domains, created and then
//      deleted in parallel with at most 10 operations in flight, as the engine
//      runs them (pulumi up --parallel defaults to 10 for small stacks).
//  (b) Two provider processes (two dynamic-provider servers, so two separate
//      in-process lock tables) on one domain at once: the case of two stacks
//      sharing a host. Each creates and deletes 5 snapshots concurrently.
//  (c) Both processes create the same snapshot name at the same moment.
// A virsh wrapper in front of each server's virsh (test/support/virshWrapper.ts)
// records every virsh call that failed, with its stderr, to show what libvirt said
// while the runner retried. The providers' virsh shells (which carry queries and
// most deletes) run unwrapped: a shell's stderr has to flow as it is written.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { DomainSnapshotProvider } from "pulumi-libvirt-snapshots";
import { EngineHarness, PACKAGE_ROOT, dynamicType, type ResourceState } from "./harness/engine";
import { limiter, qcow2Snapshots, snapshotNames } from "./support/helpers";
import { makeDomain, type TestDomain } from "./support/lab";
import { installVirshWrapper, type VirshWrapper } from "./support/virshWrapper";

const TYPE = dynamicType("libvirt-snapshots", "DomainSnapshot");

/** The wrapper's text; LOG is its log file (quoted for the shell). */
const wrapper = (log: string) => `#!/bin/bash
# Runs the real virsh. A failed call is logged with its arguments and stderr;
# every snapshot-create and snapshot-delete is logged with its start and end time.
# A virsh shell (no command: the provider's session) runs as it is.
[ -z "$3" ] && exec /usr/bin/virsh "$@"
case "$3" in snapshot-create|snapshot-delete) timed=1 ;; *) timed= ;; esac
start=$(date +%s%3N)
err=$(mktemp)
/usr/bin/virsh "$@" 2>"$err"
rc=$?
cat "$err" >&2
if [ $rc -ne 0 ]; then { printf '%s\\n' "virsh $* (exit $rc)"; sed 's/^/    /' "$err"; } >> ${log}; fi
if [ -n "$timed" ]; then printf '%s %s %s %s\\n' "$start" "$(date +%s%3N)" "$3" "$rc" >> ${log}.times; fi
rm -f "$err"
exit $rc
`;
/** Run every task, collecting failures instead of stopping at the first. */
async function settle<T>(tasks: Array<() => Promise<T>>): Promise<{ ok: T[]; errors: string[] }> {
    const results = await Promise.allSettled(tasks.map((t) => t()));
    return {
        ok: results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : [])),
        errors: results.flatMap((r) => (r.status === "rejected" ? [(r.reason as Error).message] : [])),
    };
}

describe("concurrency (engine path, real running domains)", function () {
    this.timeout(300_000);
    const doms: TestDomain[] = [];
    const engines: EngineHarness[] = [];
    const wrappers: VirshWrapper[] = [];
    const logs: string[] = [];

    async function startEngine(label: string): Promise<EngineHarness> {
        const w = installVirshWrapper((dir) => wrapper(`${dir}/virsh-failures-${label}.log`));
        wrappers.push(w);
        const log = path.join(w.dir, `virsh-failures-${label}.log`);
        fs.writeFileSync(log, "");
        logs.push(log);
        const e = await EngineHarness.start({ cwd: PACKAGE_ROOT, ...w.server, callTimeoutMs: 240_000 });
        engines.push(e);
        return e;
    }
    const failuresIn = (log: string) => fs.readFileSync(log, "utf8");
    /** The snapshot-create/-delete calls a server ran, as [start, end] in ms. */
    const intervals = (log: string, since = 0) =>
        (fs.existsSync(`${log}.times`) ? fs.readFileSync(`${log}.times`, "utf8") : "")
            .split("\n")
            .filter(Boolean)
            .map((l) => l.split(" "))
            .map(([a, b, cmd]) => ({ start: Number(a), end: Number(b), cmd: cmd! }))
            .filter((x) => x.start >= since);
    /** How many calls of one server ran while a call of the other was running. */
    const overlapping = (a: Array<{ start: number; end: number }>, b: Array<{ start: number; end: number }>) =>
        a.filter((x) => b.some((y) => x.start < y.end && y.start < x.end)).length;

    before(async () => {
        doms.push(...(await Promise.all(Array.from({ length: 3 }, () => makeDomain({ prefix: "labtmp-conc-", running: true })))));
    });
    after(async () => {
        for (const e of engines) await e.close();
        for (const d of doms) await d.dispose().catch(() => undefined);
        for (const w of wrappers) w.dispose();
    });

    it("(a) 20 snapshots across 3 running domains, created then deleted with 10 operations in flight: none fails, nothing left", async () => {
        const engine = await startEngine("a");
        const slots = limiter(10);
        const plan = Array.from({ length: 20 }, (_, i) => ({ name: `par-${String(i).padStart(2, "0")}`, dom: doms[i % 3]! }));
        const t0 = Date.now();
        const created = await settle(
            plan.map(
                (p) => () =>
                    slots(() => engine.up(p.name, DomainSnapshotProvider, { domain: p.dom.name, snapshotName: p.name }, { type: TYPE })),
            ),
        );
        const tCreate = Date.now() - t0;
        assert.deepEqual(created.errors, [], `creates failed:\n${created.errors.join("\n")}\nvirsh failures:\n${failuresIn(logs[0]!)}`);
        for (const d of doms) {
            const want = plan
                .filter((p) => p.dom === d)
                .map((p) => p.name)
                .sort();
            assert.deepEqual((await snapshotNames(d.uuid)).sort(), want, `libvirt's snapshots of ${d.name}`);
            assert.deepEqual((await qcow2Snapshots(d.disk)).sort(), want, `qcow2 snapshots of ${d.name}`);
        }
        const t1 = Date.now();
        const deleted = await settle(created.ok.map((s: ResourceState) => () => slots(() => engine.destroy(s))));
        const tDelete = Date.now() - t1;
        assert.deepEqual(deleted.errors, [], `deletes failed:\n${deleted.errors.join("\n")}\nvirsh failures:\n${failuresIn(logs[0]!)}`);
        for (const d of doms) {
            assert.deepEqual((await snapshotNames(d.uuid)).sort(), [], `no snapshot left on ${d.name}`);
            assert.deepEqual((await qcow2Snapshots(d.disk)).sort(), [], `no orphan qcow2 snapshot on ${d.name}`);
        }
        assert.equal(slots.peak(), 10, "10 operations were in flight at once");
        const busy = failuresIn(logs[0]!);
        assert.doesNotMatch(
            busy,
            /cannot acquire state change lock|domain is busy/i,
            "one provider process queues per domain: libvirt never saw two jobs at once",
        );
        console.log(
            `      (a) 20 creates in ${(tCreate / 1000).toFixed(1)} s, 20 deletes in ${(tDelete / 1000).toFixed(1)} s, peak ${slots.peak()} in flight; ` +
                `failed virsh calls: ${busy.split("\n").filter((l) => l.startsWith("virsh")).length}`,
        );
    });

    it("(a') the same domain named by name in some resources and by UUID in others: still none fails", async () => {
        const engine = engines[0]!;
        const slots = limiter(10);
        const plan = Array.from({ length: 12 }, (_, i) => ({
            name: `mix-${String(i).padStart(2, "0")}`,
            dom: doms[i % 3]!,
            byUuid: i % 2 === 1,
        }));
        const before = failuresIn(logs[0]!).length;
        const created = await settle(
            plan.map(
                (p) => () =>
                    slots(() =>
                        engine.up(
                            p.name,
                            DomainSnapshotProvider,
                            { domain: p.byUuid ? p.dom.uuid : p.dom.name, snapshotName: p.name },
                            { type: TYPE },
                        ),
                    ),
            ),
        );
        const deleted = await settle(created.ok.map((s: ResourceState) => () => slots(() => engine.destroy(s))));
        const seen = failuresIn(logs[0]!).slice(before);
        console.log(
            `      (a') 12 creates + ${created.ok.length} deletes, failed virsh calls (retried by the runner): ${seen.split("\n").filter((l) => l.startsWith("virsh")).length}`,
        );
        if (seen)
            console.log(
                seen
                    .split("\n")
                    .slice(0, 6)
                    .map((l) => `        ${l}`)
                    .join("\n"),
            );
        assert.deepEqual(
            [...created.errors, ...deleted.errors],
            [],
            `operations failed:\n${[...created.errors, ...deleted.errors].join("\n")}`,
        );
        for (const d of doms) {
            assert.deepEqual((await snapshotNames(d.uuid)).sort(), []);
            assert.deepEqual((await qcow2Snapshots(d.disk)).sort(), []);
        }
    });

    it("(b) two provider processes each create and delete 5 snapshots of one running domain at once: all succeed, no orphan", async () => {
        const [p1, p2] = [engines[0]!, await startEngine("b2")];
        const dom = doms[0]!;
        const before = failuresIn(logs[0]!).length;
        const names = (p: number) => Array.from({ length: 5 }, (_, i) => `proc${p}-${i}`);
        const t0 = Date.now();
        const since = Date.now();
        // Creates run in each provider's virsh shell (their XML in a file on the host), which the wrapper doesn't see
        // command by command: each provider's create calls are timed here.
        const calls: Array<Array<{ start: number; end: number }>> = [[], []];
        const timedUp = (p: EngineHarness, i: 0 | 1, n: string) => async () => {
            const start = Date.now();
            try {
                return await p.up(n, DomainSnapshotProvider, { domain: dom.name, snapshotName: n }, { type: TYPE });
            } finally {
                calls[i]!.push({ start, end: Date.now() });
            }
        };
        const created = await settle([...names(1).map((n) => timedUp(p1, 0, n)), ...names(2).map((n) => timedUp(p2, 1, n))]);
        const tCreate = Date.now() - t0;
        const seenCreate = failuresIn(logs[0]!).slice(before) + failuresIn(logs[1]!);
        assert.deepEqual(created.errors, [], `creates failed:\n${created.errors.join("\n")}\nvirsh failures:\n${seenCreate}`);
        const all = [...names(1), ...names(2)].sort();
        assert.deepEqual((await snapshotNames(dom.uuid)).sort(), all);
        assert.deepEqual((await qcow2Snapshots(dom.disk)).sort(), all);
        const t1 = Date.now();
        const deleted = await settle(created.ok.map((s: ResourceState) => () => (s.urn.includes("proc1-") ? p1 : p2).destroy(s)));
        const tDelete = Date.now() - t1;
        const seen = failuresIn(logs[0]!).slice(before) + failuresIn(logs[1]!);
        assert.deepEqual(deleted.errors, [], `deletes failed:\n${deleted.errors.join("\n")}\nvirsh failures:\n${seen}`);
        assert.deepEqual((await snapshotNames(dom.uuid)).sort(), []);
        assert.deepEqual((await qcow2Snapshots(dom.disk)).sort(), [], "no orphan qcow2 snapshot");
        const lockHits = seen.split("\n").filter((l) => /cannot acquire state change lock|another job|already being/i.test(l)).length;
        const [i1, i2] = [intervals(logs[0]!, since), intervals(logs[1]!, since)];
        const overlap = overlapping(i1, i2) + overlapping(i2, i1);
        const createOverlap = overlapping(calls[0]!, calls[1]!) + overlapping(calls[1]!, calls[0]!);
        const worst = Math.max(0, ...[...i1, ...i2, ...calls[0]!, ...calls[1]!].map((x) => x.end - x.start));
        const creates = [...i1, ...i2].filter((x) => x.cmd === "snapshot-create").length;
        const deleteProcesses = [...i1, ...i2].filter((x) => x.cmd === "snapshot-delete").length;
        console.log(
            `      (b) 10 creates in ${(tCreate / 1000).toFixed(1)} s, 10 deletes in ${(tDelete / 1000).toFixed(1)} s; ` +
                `${creates} snapshot-create and ${deleteProcesses} snapshot-delete processes (the other ${10 - creates} creates and ${10 - deleteProcesses} deletes ran in the providers' virsh shells), ` +
                `${overlap} of those processes ran while the other provider's was running, ${createOverlap} of the create calls while the other provider's were ` +
                `(libvirt queued them on the domain's job; longest call ${worst} ms); virsh calls that failed and were retried: ` +
                `${seen.split("\n").filter((l) => l.startsWith("virsh")).length} (${lockHits} on libvirt's job lock)`,
        );
        if (seen)
            console.log(
                seen
                    .split("\n")
                    .slice(0, 8)
                    .map((l) => `        ${l}`)
                    .join("\n"),
            );
        assert.ok(creates <= 10 && deleteProcesses <= 10, "no create or delete ran twice");
        assert.ok(createOverlap > 0 || overlap > 0, "the two providers' operations really ran at the same time");
    });

    it("(c) two provider processes create the same snapshot name at once: one wins, the other fails clearly, nothing extra is left", async () => {
        const [p1, p2] = engines;
        const dom = doms[1]!;
        const created = await settle(
            [p1!, p2!].map(
                (p) => () => p.up("same-name", DomainSnapshotProvider, { domain: dom.name, snapshotName: "same-name" }, { type: TYPE }),
            ),
        );
        assert.equal(created.ok.length, 1, `exactly one create succeeds (errors: ${created.errors.join(" | ")})`);
        assert.equal(created.errors.length, 1);
        assert.match(
            created.errors[0]!,
            /snapshot 'same-name' already exists on domain '.*'.*Set adopt: true to take it over, or choose another snapshotName/s,
        );
        console.log(`      (c) the loser's error: ${created.errors[0]!.split("\n")[0]}`);
        assert.deepEqual((await snapshotNames(dom.uuid)).sort(), ["same-name"]);
        assert.deepEqual((await qcow2Snapshots(dom.disk)).sort(), ["same-name"], "one qcow2 snapshot, no duplicate or orphan");
        await (created.ok[0]!.urn ? p1! : p2!).destroy(created.ok[0]!);
        assert.deepEqual((await snapshotNames(dom.uuid)).sort(), []);
        assert.deepEqual((await qcow2Snapshots(dom.disk)).sort(), []);
    });
});
