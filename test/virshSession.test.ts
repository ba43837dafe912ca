// virsh sessions (provider/host/virshSessions.ts): read-only queries, and the
// deletes, run in a long-lived `virsh` shell per host. These tests hold them to
// what the process-per-command path does, byte for byte, with names built to
// break quoting or the framing; a write in a session is answered once, failure
// included, and a cut connection in the middle of one says the outcome is unknown.
import * as assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import type { Connection } from "../provider/connection";
import { LibvirtError } from "../provider/errors";
import { closeAllTransports } from "../provider/host/transport";
import { Virsh } from "../provider/host/virsh";
import { commandLog } from "./support/commandLog";
import { MiB, hostXmlFiles } from "./support/helpers";
import { hostRun, loadLab, makeDomain, qemuIoRead, qemuIoWrite, sleep, virshLocal, virshOk, type TestDomain } from "./support/lab";
import { killSessionsOfClient } from "./support/sshSessions";

const lab = loadLab();
/** What the provider sent, counted from the diagnostics channels from here on: the tests compare before and after. */
const stats = commandLog().counts;
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

/** A unix-socket proxy in front of the lab host's libvirtd that can hold back replies and cut every connection. */
async function libvirtSocketProxy(sockPath: string): Promise<{ path: string; hold: boolean; cut(): void; close(): void }> {
    const upstream = `${lab.rootDir ?? ""}/run/libvirt/libvirt-sock`;
    const open = new Set<net.Socket>();
    const state = {
        path: sockPath,
        hold: false,
        cut: () => {
            for (const c of open) c.destroy();
            open.clear();
        },
        close: () => {
            state.cut();
            server.close();
            fs.rmSync(sockPath, { force: true });
        },
    };
    const server = net.createServer((c) => {
        const up = net.connect(upstream);
        open.add(c).add(up);
        c.on("data", (d) => up.write(d));
        up.on("data", (d) => {
            if (!state.hold) c.write(d);
        });
        for (const s of [c, up]) {
            s.on("error", () => undefined);
            s.on("close", () => {
                c.destroy();
                up.destroy();
            });
        }
    });
    fs.rmSync(sockPath, { force: true });
    await new Promise<void>((resolve) => server.listen(sockPath, resolve));
    return state;
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
                const before = stats.sessionCommands;
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
                assert.ok(stats.sessionCommands - before >= 2 * asciiOnly, "printable-ASCII names were answered by sessions");
                assert.deepEqual(
                    (await v.run(["snapshot-list", "--domain", dom.name, "--name"])).split("\n").filter(Boolean).sort(),
                    [...names, victim].sort(),
                );
                assert.ok(!fs.existsSync("/tmp/pwned"));
            });

            it("fails like a process does, and stays in step after a failure and after a command it can't parse", async () => {
                const v = new Virsh(conn);
                const started = stats.sessionsStarted;
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
                assert.ok(stats.sessionsStarted - started <= 1, "failures don't cost a new session");
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

            it("sends queries asked at once to one shell together (pipelined): one shell started, every answer its own", async () => {
                closeAllTransports();
                const v = new Virsh(conn);
                const started = stats.sessionsStarted,
                    answered = stats.sessionCommands;
                const picks = names.slice(0, 6);
                const outs = await Promise.all(picks.map((n) => v.run(["snapshot-info", "--domain", dom.name, "--snapshotname", n])));
                for (const [i, n] of picks.entries()) assert.equal(/^Name:\s+(.*)$/m.exec(outs[i]!)?.[1], n, `answer ${i} is for ${n}`);
                assert.equal(stats.sessionCommands - answered, picks.length, "the shell answered them all");
                assert.equal(stats.sessionsStarted - started, 1, "one shell for six queries asked at once");
            });

            it("carries a delete: a success is done once, a failure is a typed error with virsh's command and stderr", async () => {
                const v = new Virsh(conn);
                const reads = stats.sessionCommands,
                    writes = stats.sessionWrites;
                // snapshot-create-as takes escaped syntax (--diskspec) and writes its own XML: it stays a process.
                await v.run(["snapshot-create-as", "--domain", dom.name, "--name", `mut-${label}`]);
                assert.equal(stats.sessionWrites, writes, "snapshot-create-as is not carried by a session");
                await v.run(["snapshot-delete", "--domain", dom.name, "--snapshotname", `mut-${label}`]);
                assert.equal(stats.sessionWrites, writes + 1, "the delete ran in a session");
                assert.ok(!(await virshOk(["snapshot-list", "--domain", dom.name, "--name"])).split("\n").includes(`mut-${label}`));
                const e = await errorOf(v.run(["snapshot-delete", "--domain", dom.name, "--snapshotname", `mut-${label}`]));
                assert.equal(stats.sessionWrites, writes + 2, "the failed delete was answered by the session, not run again");
                assert.equal(e.kind, "snapshot-not-found");
                assert.equal(e.exitCode, 1);
                assert.match(e.stderr ?? "", new RegExp(`no domain snapshot with matching name 'mut-${label}'`));
                assert.match(
                    e.command ?? "",
                    new RegExp(`virsh -c \\S+ snapshot-delete --domain ${dom.name} --snapshotname mut-${label}$`),
                );
                const e2 = await errorOf(v.run(["checkpoint-delete", "--domain", "no-such-domain", "--checkpointname", "x"]));
                assert.equal(e2.kind, "domain-not-found");
                assert.equal(stats.sessionWrites, writes + 3);
                // An option virsh doesn't know: nothing ran, so the process gives the error (and the session stays in step).
                const e3 = await errorOf(v.run(["snapshot-delete", "--domain", dom.name, "--no-such-option"]));
                assert.match(e3.message, /doesn't support option --no-such-option/);
                assert.equal(stats.sessionWrites, writes + 3);
                assert.match(await v.run(["snapshot-info", "--domain", dom.name, "--snapshotname", "plain"]), /^Name: +plain$/m);
                assert.ok(stats.sessionCommands > reads);
            });

            const createTitle =
                "carries a create: its XML in a private file on the host, never run; a failure answered once; the file removed";
            it(createTitle, async () => {
                const v = new Virsh(conn);
                const writes = stats.sessionWrites;
                const name = `xml-${label}`;
                // Lines a here-document or a shell would act on, and text outside ASCII: all of it is the description.
                const description = `${marker(name)}\nXML\nEOF\n$(touch /tmp/pwned-xml) \`touch /tmp/pwned-xml\` ünïcode`;
                const esc = (t: string) => t.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
                const xml = `<domainsnapshot><name>${name}</name><description>${esc(description)}</description></domainsnapshot>`;
                const create = ["snapshot-create", "--domain", dom.uuid, "--xmlfile", "/dev/stdin"];
                const filesBefore = new Set(hostXmlFiles().files.map((f) => f.path));
                const foldersBefore = new Set(hostXmlFiles().folders);
                await v.run(create, { stdin: xml });
                assert.equal(stats.sessionWrites, writes + 1, "the create ran in a session");
                const kept = await virshOk(["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", name]);
                const got = /<description>([\s\S]*)<\/description>/.exec(kept)?.[1];
                assert.equal(
                    got?.replace(/&apos;/g, "'").replace(/&quot;/g, '"'),
                    esc(description),
                    "the description arrived byte for byte",
                );
                assert.equal((await hostRun("test", ["-e", "/tmp/pwned-xml"])).code, 1, "nothing in the XML ran");
                const e = await errorOf(v.run(create, { stdin: xml }));
                assert.equal(stats.sessionWrites, writes + 2, "the failed create was answered by the session, not run again");
                assert.equal(e.kind, "already-exists");
                assert.match(e.command ?? "", /snapshot-create --domain \S+ --xmlfile \/dev\/stdin$/);
                // Files of other runs (another provider on this host) are not this one's to judge.
                const left = () => hostXmlFiles().files.filter((f) => !filesBefore.has(f.path));
                for (let i = 0; i < 50 && left().length; i++) await sleep(100);
                assert.deepEqual(left(), [], "the XML files are removed once the command ran");
                await v.run(["snapshot-delete", "--domain", dom.name, "--snapshotname", name]);
                // The private folder goes with the shell that made it.
                closeAllTransports();
                const folders = () => hostXmlFiles().folders.filter((f) => !foldersBefore.has(f));
                for (let i = 0; i < 50 && folders().length; i++) await sleep(100);
                assert.deepEqual(folders(), [], "the folder is removed when the connection closes");
            });

            if (label === "local")
                it("without a sh to write the XML file, a create runs as its own process with the XML on stdin", async () => {
                    closeAllTransports();
                    // A PATH with env and virsh but no sh: the host shell can't start, virsh's shell can.
                    const bin = fs.mkdtempSync(path.join(os.tmpdir(), "no-sh-"));
                    fs.symlinkSync("/usr/bin/env", path.join(bin, "env"));
                    fs.symlinkSync("/usr/bin/virsh", path.join(bin, "virsh"));
                    const saved = process.env.PATH;
                    process.env.PATH = bin;
                    try {
                        const v = new Virsh(conn);
                        const writes = stats.sessionWrites;
                        const name = "xml-no-sh";
                        await v.run(["snapshot-create", "--domain", dom.uuid, "--xmlfile", "/dev/stdin"], {
                            stdin: `<domainsnapshot><name>${name}</name></domainsnapshot>`,
                        });
                        assert.equal(stats.sessionWrites, writes, "no session carried it");
                        assert.ok(
                            (await virshOk(["snapshot-list", "--domain", dom.name, "--name"])).split("\n").includes(name),
                            "it was made",
                        );
                        await v.run(["snapshot-delete", "--domain", dom.name, "--snapshotname", name]);
                        assert.equal(stats.sessionWrites, writes + 1, "virsh's shell itself still works: the delete ran there");
                    } finally {
                        process.env.PATH = saved;
                        closeAllTransports();
                        fs.rmSync(bin, { recursive: true, force: true });
                    }
                });

            const dfTitle =
                "runs the login user's read-only commands (df) in the connection's sh: a " +
                "process's answer, exit code and stderr included, no channel of its own";
            it(dfTitle, async () => {
                const v = new Virsh(conn);
                await v.host(["true"], { asLoginUser: true, readOnly: true }); // the sh is up
                const channels = stats.channels;
                const argv = ["df", "-B1", "--output=avail,target", "--", "/"];
                const inShell = await v.host(argv, { asLoginUser: true, readOnly: true });
                const tricky = await v.host(["printf", "%s\\n", "M0x1 0 5 5", "é'\"$(x)"], { asLoginUser: true, readOnly: true });
                const missing = await v.host(["df", "--", "/no/such/dir"], { asLoginUser: true, readOnly: true });
                if (label === "ssh") assert.equal(stats.channels, channels, "no channel of their own");
                const viaProcess = await v.host(argv, { asLoginUser: true });
                assert.equal(inShell.code, 0);
                assert.equal(inShell.stderr, "");
                assert.equal(inShell.stdout.split("\n")[0], viaProcess.stdout.split("\n")[0], "df's header, as a process prints it");
                const mount = (out: string) => out.split("\n")[1]?.trim().split(/\s+/)[1];
                assert.equal(mount(inShell.stdout), mount(viaProcess.stdout), "df's mount point, as a process prints it");
                assert.equal(tricky.stdout, `M0x1 0 5 5\né'"$(x)\n`, "output that looks like the framing is just output");
                assert.equal(missing.code, 1);
                assert.match(missing.stderr, /No such file or directory/);
                assert.match(missing.command, /^env LC_ALL=C df -- \/no\/such\/dir$/);
            });

            const libvirtdLostTitle =
                "libvirtd's connection lost under the shell: idle, the next delete reconnects " +
                "and is done once; mid-call, connection-failed";
            it(libvirtdLostTitle, async () => {
                // The shell reaches libvirtd through a unix-socket proxy of ours, which cuts its connection (libvirtd itself is shared).
                const proxy = await libvirtSocketProxy(`${dom.dir}/lv-${label}.sock`);
                try {
                    const v = new Virsh({ ...conn, libvirtUri: `qemu+unix:///system?socket=${proxy.path}` });
                    const name = `cut-${label}`;
                    await virshOk(["snapshot-create-as", "--domain", dom.name, "--name", name]);
                    assert.match(await v.run(["snapshot-info", "--domain", dom.name, "--snapshotname", name]), /^Name: +cut-/m);
                    proxy.cut();
                    await sleep(300);
                    const writes = stats.sessionWrites;
                    await v.run(["snapshot-delete", "--domain", dom.name, "--snapshotname", name]);
                    assert.equal(stats.sessionWrites, writes + 1, "the delete ran in the session, and its reconnect notice is no failure");
                    assert.ok(!(await virshOk(["snapshot-list", "--domain", dom.name, "--name"])).split("\n").includes(name));
                    // Replies held back, then the connection cut while virsh waits: what it was doing failed, and that is no 'not found'.
                    await virshOk(["snapshot-create-as", "--domain", dom.name, "--name", name]);
                    assert.match(await v.run(["snapshot-info", "--domain", dom.name, "--snapshotname", name]), /^Name: +cut-/m);
                    proxy.hold = true;
                    const pending = errorOf(v.run(["snapshot-delete", "--domain", dom.name, "--snapshotname", name]));
                    await sleep(500);
                    proxy.cut();
                    proxy.hold = false;
                    const e = await pending;
                    assert.equal(stats.sessionWrites, writes + 2, "answered by the session, not run again");
                    assert.equal(e.kind, "connection-failed", e.message);
                    assert.match(e.stderr ?? "", /Disconnected from \S+ due to/);
                    // Whatever happened, deleting again converges.
                    await v.run(["snapshot-delete", "--domain", dom.name, "--snapshotname", name]).catch((err: unknown) => {
                        if (!(err instanceof LibvirtError) || err.kind !== "snapshot-not-found") throw err;
                    });
                    assert.ok(!(await virshOk(["snapshot-list", "--domain", dom.name, "--name"])).split("\n").includes(name));
                } finally {
                    proxy.close();
                }
            });

            const hostileTitle =
                "deletes hostile names in a session (or, outside printable ASCII, as a process) and never runs what a name contains";
            it(hostileTitle, async () => {
                const v = new Virsh(conn);
                const sample = [
                    "$(touch /tmp/pwned-sw)",
                    "`touch /tmp/pwned-sw`",
                    "a'b",
                    `q "d" \\e`,
                    "semi; snapshot-list",
                    " lead and trail ",
                    "--snapshotname",
                    "#x",
                    "multi\nline",
                    "ünï",
                    `w ; snapshot-delete --domain ${dom.name} --snapshotname ${victim}`,
                    `w' ; snapshot-delete --domain ${dom.name} --snapshotname ${victim} ; echo '`,
                ].map((n) => `${label}-${n}`);
                const made: string[] = [];
                for (const n of sample)
                    if ((await virshLocal(["snapshot-create-as", "--domain", dom.name, "--name", n])).code === 0) made.push(n);
                assert.ok(made.length >= 9, `libvirt took only ${made.length} names`);
                const writes = stats.sessionWrites;
                for (const n of made) await v.run(["snapshot-delete", "--domain", dom.name, "--snapshotname", n]);
                const ascii = made.filter((n) => /^[\x20-\x7e]*$/.test(n)).length;
                assert.equal(stats.sessionWrites - writes, ascii, "every printable-ASCII name was deleted in a session");
                const left = (await virshOk(["snapshot-list", "--domain", dom.name, "--name"])).split("\n");
                for (const n of made) assert.ok(!left.includes(n), `${JSON.stringify(n)} is deleted`);
                assert.ok(left.includes(victim), "a name that holds a second command ran no second command");
                assert.ok(!fs.existsSync("/tmp/pwned-sw"));
            });
        });
    }

    const budgetTitle =
        "keeps at most 3 sessions per SSH connection however many libvirt URIs share it, " +
        "so commands that change something still get channels";
    it(budgetTitle, async () => {
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
        const started = stats.sessionsStarted,
            answered = stats.sessionCommands;
        const last = new Virsh({ ...root, libvirtUri: uris[uris.length - 1]! });
        for (const u of uris) {
            const v = new Virsh({ ...root, libvirtUri: u });
            assert.match(await v.run(["snapshot-info", "--domain", dom.name, "--snapshotname", "plain"]), /^Name: +plain$/m, u);
        }
        assert.equal(stats.sessionCommands - answered, uris.length, "every query was answered by a session");
        assert.equal(stats.sessionsStarted - started, uris.length, "a URI without a session took an idle one's place");
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

    const cutTitle =
        "a delete in a session whose SSH connection is cut midway: connection-failed, " +
        "outcome unknown; the next call reconnects and deleting again converges";
    it(cutTitle, async function () {
        this.timeout(600_000);
        // 300 MiB in an external snapshot's overlay: deleting it is a block commit into the base image that lasts,
        // and the cut comes once the base image grows. Only this process's connections are cut.
        const d = await makeDomain({ prefix: "labtmp-session-cut-", sizeMB: 512 });
        try {
            await qemuIoWrite(d.disk, 0xaa, 0, MiB);
            const overlay = `${d.dir}/overlay.qcow2`;
            await virshOk([
                "snapshot-create-as",
                "--domain",
                d.name,
                "--name",
                "cut",
                "--disk-only",
                "--diskspec",
                `vda,snapshot=external,file=${overlay}`,
            ]);
            await qemuIoWrite(overlay, 0xcd, MiB, 300 * MiB);
            await virshOk(["start", d.name]);
            const v = new Virsh(root);
            await v.run(["snapshot-info", "--domain", d.name, "--snapshotname", "cut"]); // a warm session and connection
            const baseSize = fs.statSync(d.disk).size;
            const writes = stats.sessionWrites,
                channels = stats.channels;
            let settled = false;
            const pending = v.run(["snapshot-delete", "--domain", d.name, "--snapshotname", "cut"]).then(
                () => undefined,
                (e: unknown) => e,
            );
            void pending.then(() => (settled = true));
            let cut = 0;
            for (const until = Date.now() + 120_000; Date.now() < until && !settled;) {
                if (fs.statSync(d.disk).size > baseSize + 20 * MiB) {
                    cut = killSessionsOfClient(process.pid);
                    break;
                }
                await sleep(2);
            }
            const e = await pending;
            assert.ok(cut > 0, "this process's SSH connection was cut while qemu committed the overlay");
            assert.ok(e instanceof LibvirtError, `the delete failed: ${String(e)}`);
            assert.equal(e.kind, "connection-failed");
            assert.match(e.message, /SSH connection to .* was lost while the command ran; whether it took effect is unknown/);
            assert.match(e.command ?? "", /snapshot-delete --domain \S+ --snapshotname cut$/);
            assert.equal(stats.channels, channels, "the delete opened no channel of its own: it ran in the session");
            assert.equal(stats.sessionWrites, writes, "the delete was not answered, and not run again");
            // The next call reconnects; deleting again converges (libvirt may still be committing: the delete waits for the job).
            assert.match(await v.run(["domstate", "--domain", d.name]), /running/);
            await v.run(["snapshot-delete", "--domain", d.name, "--snapshotname", "cut"]).catch((err: unknown) => {
                // The first delete may have finished on the host after its client went away.
                if (!(err instanceof LibvirtError) || err.kind !== "snapshot-not-found") throw err;
            });
            assert.deepEqual((await virshOk(["snapshot-list", "--domain", d.name, "--name"])).trim(), "");
            assert.ok((await virshOk(["domblklist", "--domain", d.name])).includes(d.disk), "back on the base disk");
            assert.equal(await qemuIoRead(d.disk, 0xaa, 0, MiB), true);
            assert.equal(await qemuIoRead(d.disk, 0xcd, MiB, 300 * MiB), true, "the data written after the snapshot is merged");
        } finally {
            closeAllTransports();
            await d.dispose();
        }
    });
});
