// The host shell's lifecycle, with this machine's own `sh` behind a transport that counts what it starts.
// Over SSH every shell holds a channel of the connection until it ends, so a shell started beside the live
// one and never closed is a channel lost for good; enough of them once left no channel for any command
// (the hostile suite's hang on a machine without KVM, issue #26).
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { hostShellFor } from "../../provider/host/hostShell";
import { LocalTransport, type HostProcess, type Transport } from "../../provider/host/transport";

/** This machine's transport, counting the long-lived processes it starts and those still running. */
function countingTransport() {
    const local = new LocalTransport();
    const live = new Set<HostProcess>();
    const counts = { started: 0 };
    const t: Transport = {
        exec: (argv, opts) => local.exec(argv, opts),
        spawn: async (argv) => {
            counts.started++;
            const p = await local.spawn(argv);
            live.add(p);
            p.onClose(() => live.delete(p));
            return p;
        },
        attached: new Map(),
        secrets: [],
        description: "this machine (counted)",
        remote: false,
    };
    return { t, counts, live };
}

const burst = (n: number, write: (i: number) => Promise<string | undefined>) => Promise.all(Array.from({ length: n }, (_, i) => write(i)));

describe("host shell: one per connection", function () {
    this.timeout(20_000);

    it("callers that arrive together share one shell, also after it was closed, and each file holds its own text", async () => {
        const { t, counts, live } = countingTransport();
        const slot = hostShellFor(t);
        try {
            const first = await burst(8, (i) => slot.write(`<x n='${i}'/>`));
            assert.equal(counts.started, 1, "shells started for 8 writes at once");
            first.forEach((f, i) => assert.equal(fs.readFileSync(f!, "utf8"), `<x n='${i}'/>\n`));
            slot.close(); // as the idle timer does
            const second = await burst(8, (i) => slot.write(`<y n='${i}'/>`));
            assert.equal(counts.started, 2, "shells started in all, after the first was closed and 8 writes came at once");
            second.forEach((f, i) => assert.equal(fs.readFileSync(f!, "utf8"), `<y n='${i}'/>\n`));
            await new Promise((r) => setTimeout(r, 300));
            assert.equal(live.size, 1, "shells still running: only the current one");
        } finally {
            slot.close();
        }
    });

    it("a shell that died is replaced once, however many callers find it dead", async () => {
        const { t, counts, live } = countingTransport();
        const slot = hostShellFor(t);
        let killedFolder: string | undefined;
        try {
            const first = await slot.write("<a/>");
            assert.ok(first);
            killedFolder = path.dirname(first);
            for (const p of live) p.close(); // SIGKILL: the shell is gone without a word, and its trap can't remove its folder
            await new Promise((r) => setTimeout(r, 200));
            const files = await burst(6, () => slot.write("<b/>"));
            assert.ok(files.every((f) => f !== undefined && fs.readFileSync(f, "utf8") === "<b/>\n"));
            assert.equal(counts.started, 2, "shells started: the first, and one replacement");
            assert.equal(live.size, 1);
        } finally {
            slot.close();
            // The hostile suite's final check counts any XML file left on this host as a leak.
            if (killedFolder?.startsWith(os.tmpdir())) fs.rmSync(killedFolder, { recursive: true, force: true });
        }
    });

    it("a request queued behind a slow one waits no longer than its own timeout, and leaves the shell working", async () => {
        const { t } = countingTransport();
        const slot = hostShellFor(t);
        try {
            assert.ok(await slot.write("<warm/>"));
            const slow = slot.run(["sleep", "3"], 10_000);
            const queued = await slot.run(["echo", "late"], 300);
            assert.equal(queued, undefined, "the queued request gave up when its time ran out (its caller then runs it as a process)");
            assert.equal((await slow)?.code, 0, "the slow request still finished in the same shell");
            assert.equal((await slot.run(["echo", "again"], 5_000))?.stdout, "again\n");
        } finally {
            slot.close();
        }
    });
});
