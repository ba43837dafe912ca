// virsh sessions (provider/virsh.ts): read-only queries run in a long-lived
// `virsh` shell per host. These tests hold them to what the process-per-command
// path does, byte for byte, with names built to break quoting or the framing.
import * as assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import type { Connection } from "../provider/connection";
import { LibvirtError } from "../provider/errors";
import { closeAllTransports } from "../provider/host/transport";
import { Virsh } from "../provider/host/virsh";
import { virshStats } from "../provider/host/virshSessions";
import { loadLab, makeDomain, virshLocal, virshOk, type TestDomain } from "./support/lab";

const lab = loadLab();
const root: Connection = {
    host: lab.host,
    port: lab.port,
    user: "root",
    privateKey: fs.readFileSync(lab.privateKeyPath, "utf8"),
    hostKey: lab.hostKey,
};

/** The process path's answer, for comparison: the same argv through transport.exec. */
async function viaExec(v: Virsh, args: string[]): Promise<{ code: number | null; stdout: string }> {
    const r = await v.transport.exec(v.argv(args), { timeoutMs: 60_000 });
    return { code: r.code, stdout: r.stdout };
}

async function errorOf(p: Promise<unknown>): Promise<LibvirtError> {
    try {
        await p;
    } catch (e) {
        assert.ok(e instanceof LibvirtError, String(e));
        return e;
    }
    assert.fail("expected an error");
}

describe("virsh sessions: read-only queries in a long-lived virsh shell", function () {
    this.timeout(120_000);
    let dom: TestDomain;
    const names: string[] = [];
    const victim = "victim";
    const marker = (n: string) => `description of ${n}\nerror: not an error\nS0&lt;\n'"; echo --err x`;

    before(async () => {
        dom = await makeDomain({ prefix: "labtmp-session-" });
        const candidates = [
            "plain",
            "with space",
            "it's",
            "a;b",
            "#hash",
            "-dash",
            "$(touch /tmp/pwned)",
            `q 'single' "double" \\back`,
            "x".repeat(200),
            "<&>",
            "ünïcode",
            "tab\there",
            `v ; snapshot-delete --domain ${dom.name} --snapshotname ${victim}`,
            `v' ; snapshot-delete --domain ${dom.name} --snapshotname ${victim} ; echo '`,
            `v" ; snapshot-delete --domain ${dom.name} --snapshotname ${victim} ; echo "`,
        ];
        await virshOk(["snapshot-create-as", "--domain", dom.name, "--name", victim]);
        for (const n of candidates) {
            const r = await virshLocal(["snapshot-create-as", "--domain", dom.name, "--name", n, "--description", marker(n)]);
            if (r.code === 0) names.push(n);
        }
        assert.ok(names.length >= 12, `libvirt took only ${names.length} of the names`);
    });
    after(async () => {
        closeAllTransports();
        await dom?.dispose();
    });

    // Local virsh reaches only the host this machine is; a host of its own is reached over SSH.
    for (const [label, conn] of [...(lab.local ? [["local", {}]] : []), ["ssh", root]] as Array<[string, Connection]>) {
        describe(label, () => {
            it("answers exactly what a virsh process prints, for every name, and never runs what a name contains", async () => {
                const v = new Virsh(conn);
                const before = virshStats.sessionCommands;
                for (const n of names) {
                    for (const cmd of [
                        ["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", n],
                        ["snapshot-info", "--domain", dom.name, "--snapshotname", n],
                    ]) {
                        const mine = await v.run(cmd);
                        const theirs = await viaExec(v, cmd);
                        assert.equal(theirs.code, 0);
                        assert.equal(mine, theirs.stdout, `${cmd[0]} of ${JSON.stringify(n)}`);
                    }
                }
                const xml = await v.run(["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", "it's"]);
                assert.ok(xml.includes("<name>it&apos;s</name>") || xml.includes("<name>it's</name>"), xml);
                assert.ok(xml.includes("error: not an error"), "a description that looks like an error is data");
                const asciiOnly = names.filter((n) => /^[\x20-\x7e]*$/.test(n)).length;
                assert.ok(virshStats.sessionCommands - before >= 2 * asciiOnly, "printable-ASCII names were answered by sessions");
                assert.deepEqual(
                    (await v.run(["snapshot-list", "--domain", dom.name, "--name"])).split("\n").filter(Boolean).sort(),
                    [...names, victim].sort(),
                );
                assert.ok(!fs.existsSync("/tmp/pwned"));
            });

            it("fails like a process does, and stays in step after a failure and after a command it can't parse", async () => {
                const v = new Virsh(conn);
                const started = virshStats.sessionsStarted;
                const e1 = await errorOf(v.run(["snapshot-info", "--domain", dom.name, "--snapshotname", "nope"]));
                assert.equal(e1.kind, "snapshot-not-found");
                assert.equal(e1.exitCode, 1);
                assert.match(e1.message, /no domain snapshot with matching name 'nope'/);
                const e2 = await errorOf(v.run(["snapshot-list", "--domain", dom.name, "--no-such-option"]));
                assert.match(e2.message, /doesn't support option --no-such-option/);
                const e3 = await errorOf(v.run(["domstate", "--domain", "no-such-domain"]));
                assert.equal(e3.kind, "domain-not-found");
                for (const n of names.slice(0, 5)) {
                    assert.match(
                        await v.run(["snapshot-info", "--domain", dom.name, "--snapshotname", n]),
                        new RegExp(`^Name: +${n.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`, "m"),
                    );
                }
                assert.ok(virshStats.sessionsStarted - started <= 1, "failures don't cost a new session");
            });

            it("keeps answers apart under concurrency", async () => {
                const v = new Virsh(conn);
                const picks = Array.from({ length: 40 }, (_, i) => names[i % names.length]!);
                const outs = await Promise.all(picks.map((n) => v.run(["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", n])));
                for (const [i, n] of picks.entries()) {
                    const name = /<name>([^<]*)<\/name>/.exec(outs[i]!)?.[1];
                    const want = n
                        .replace(/&/g, "&amp;")
                        .replace(/</g, "&lt;")
                        .replace(/>/g, "&gt;")
                        .replace(/'/g, "&apos;")
                        .replace(/"/g, "&quot;");
                    assert.ok(name === n || name === want, `answer ${i}: ${name} for ${n}`);
                }
            });

            it("never runs a command that changes something", async () => {
                const v = new Virsh(conn);
                const before = virshStats.sessionCommands;
                await v.run(["snapshot-create-as", "--domain", dom.name, "--name", `mut-${label}`]);
                await v.run(["snapshot-delete", "--domain", dom.name, "--snapshotname", `mut-${label}`]);
                assert.equal(virshStats.sessionCommands, before);
            });
        });
    }

    it("keeps at most 3 sessions per SSH connection however many libvirt URIs share it, so commands that change something still get channels", async () => {
        // Five spellings of the same libvirtd: five virsh invocations, so five pools on one connection.
        const uris = [
            "qemu:///system?mode=legacy",
            "qemu:///system?mode=auto",
            "qemu:///system?socket=/run/libvirt/libvirt-sock",
            "qemu+unix:///system",
            "qemu+unix:///system?mode=legacy",
        ];
        const shells = () => {
            const lines = execFileSync("ps", ["-eo", "args="], { encoding: "utf8" })
                .split("\n")
                .map((l) => l.trim());
            return lines.filter((l) => uris.some((u) => l === `virsh -c ${u}`)).length;
        };
        const started = virshStats.sessionsStarted,
            answered = virshStats.sessionCommands;
        const last = new Virsh({ ...root, libvirtUri: uris[uris.length - 1]! });
        for (const u of uris) {
            const v = new Virsh({ ...root, libvirtUri: u });
            assert.match(await v.run(["snapshot-info", "--domain", dom.name, "--snapshotname", "plain"]), /^Name: +plain$/m, u);
        }
        assert.equal(virshStats.sessionCommands - answered, uris.length, "every query was answered by a session");
        assert.equal(virshStats.sessionsStarted - started, uris.length, "a URI without a session took an idle one's place");
        await new Promise((r) => setTimeout(r, 200));
        assert.ok(shells() <= 3, `${shells()} virsh shells on one connection`);
        // The transport opens 8 channels; with 3 held by sessions, 5 commands run at once.
        const token = `${4 + Math.random()}`.slice(0, 10);
        const burst = Array.from({ length: 5 }, () => last.transport.exec(["sleep", token], { timeoutMs: 60_000 }));
        let most = 0;
        for (let i = 0; i < 100 && most < 5; i++) {
            const n = execFileSync("ps", ["-eo", "args="], { encoding: "utf8" })
                .split("\n")
                .filter((l) => l.trim() === `sleep ${token}`).length;
            most = Math.max(most, n);
            await new Promise((r) => setTimeout(r, 30));
        }
        await Promise.all(burst);
        assert.equal(most, 5, "all five commands ran at the same time");
        closeAllTransports();
    });

    it("recovers when its virsh is killed: the query still gets the right answer", async () => {
        // Its local sessions are what it kills; on a host of its own they would be the SSH ones.
        const v = new Virsh(lab.local ? {} : root);
        await v.run(["snapshot-info", "--domain", dom.name, "--snapshotname", "plain"]);
        // Local sessions are children of this process; on a host of its own, the virsh processes in its root (the same pid namespace here).
        const kids = lab.local
            ? execFileSync("pgrep", ["-P", String(process.pid), "-x", "virsh"], { encoding: "utf8" })
                  .split("\n")
                  .filter(Boolean)
            : (execFileSync("pgrep", ["-x", "virsh"], { encoding: "utf8" }).split("\n").filter(Boolean) as string[]).filter((k) => {
                  try {
                      return fs.readlinkSync(`/proc/${k}/root`) === lab.rootDir;
                  } catch {
                      return false;
                  }
              });
        assert.ok(kids.length > 0, "a session runs");
        for (const k of kids) process.kill(Number(k), "SIGKILL");
        await new Promise((r) => setTimeout(r, 100));
        assert.match(await v.run(["snapshot-info", "--domain", dom.name, "--snapshotname", "plain"]), /^Name: +plain$/m);
        assert.match(await v.run(["snapshot-info", "--domain", dom.name, "--snapshotname", "a;b"]), /^Name: +a;b$/m);
    });
});
