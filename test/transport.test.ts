// The transports and the virsh runner against the real lab: sshd on 127.0.0.1
// and libvirtd with qemu domains.
import * as assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Connection } from "../provider/connection";
import { LibvirtError } from "../provider/errors";
import { closeAllTransports, transportFor } from "../provider/host/transport";
import { Virsh } from "../provider/host/virsh";
import { commandLog } from "./support/commandLog";
import { re } from "./support/helpers";
import { loadLab, makeDomain, repoRoot, virshOk, type TestDomain } from "./support/lab";

const lab = loadLab();
const key = fs.readFileSync(lab.privateKeyPath, "utf8");
const root: Connection = { host: lab.host, port: lab.port, user: "root", privateKey: key, hostKey: lab.hostKey };
const log = commandLog();
/** SSH handshakes completed (jump hosts' too), counted from the diagnostics channels from here on. */
const handshakeCount = () => log.counts.handshakes;

async function rejects(p: Promise<unknown>, kind: string, re: RegExp): Promise<LibvirtError> {
    try {
        await p;
    } catch (e) {
        assert.ok(e instanceof LibvirtError, `expected a LibvirtError, got ${String(e)}`);
        assert.equal(e.kind, kind, e.message);
        assert.match(e.message, re);
        return e;
    }
    assert.fail(`expected a ${kind} error`);
}

/** Kill every per-connection sshd child of the lab's sshd: drops the pooled connections. */
function dropSshSessions(): number {
    const pid = Number(fs.readFileSync(lab.sshdPidPath, "utf8").trim());
    const kids = execFileSync("pgrep", ["-P", String(pid)], { encoding: "utf8" })
        .split("\n")
        .filter(Boolean);
    for (const k of kids) {
        try {
            process.kill(Number(k), "SIGKILL");
        } catch {
            /* gone */
        }
    }
    return kids.length;
}

describe("SSH transport (real sshd)", function () {
    this.timeout(60_000);
    afterEach(() => closeAllTransports());

    it("runs virsh with a private key and checks the pinned host key", async () => {
        const out = await new Virsh(root).run(["list", "--all", "--name"]);
        assert.match(out, /^lab-writer$/m);
        assert.match(out, /^lab-off$/m);
    });

    it("uses an encrypted key with its passphrase, and says what to check when the passphrase is wrong", async () => {
        const enc = fs.readFileSync(lab.encryptedKeyPath, "utf8");
        const out = await new Virsh({ ...root, privateKey: enc, privateKeyPassword: lab.keyPassphrase }).run(["list", "--name"]);
        assert.match(out, /lab-writer/);
        const e = await rejects(
            new Virsh({ ...root, privateKey: enc, privateKeyPassword: "wrong", dialErrorLimit: 3 }).run(["list"]),
            "connection-failed",
            /cannot use connection\.privateKey .*Check privateKeyPassword/,
        );
        assert.ok(!e.message.includes("wrong"), "the passphrase is not echoed");
    });

    it("logs in with a password as a non-root user and runs virsh through sudo -n", async () => {
        const conn: Connection = {
            host: lab.host,
            port: lab.port,
            user: lab.sudoUser.user,
            password: lab.sudoUser.password,
            hostKey: lab.hostKey,
            sudo: true,
        };
        const out = await new Virsh(conn).run(["list", "--name"]);
        assert.match(out, /lab-writer/);
        // LC_ALL=C survives sudo, so errors are still classified.
        await rejects(
            new Virsh(conn).run(["dumpxml", "--domain", "no-such-domain"]),
            "domain-not-found",
            /failed to get domain 'no-such-domain'/,
        );
        // Without sudo the same user can't reach the system libvirt.
        await rejects(
            new Virsh({ ...conn, sudo: false }).run(["list"]),
            "connection-failed",
            /failed to connect to the hypervisor|authentication/i,
        );
        const bad = await rejects(
            new Virsh({ ...conn, password: "not-the-password", dialErrorLimit: 5 }).run(["list"]),
            "connection-failed",
            new RegExp(`SSH authentication failed for labuser@${re(lab.host)}:\\d+.*Check connection\\.user and the credentials`),
        );
        assert.ok(!bad.message.includes("not-the-password"));
    });

    it("authenticates through an ssh-agent", async () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agent-"));
        const sock = path.join(dir, "agent.sock");
        const agent = spawn("ssh-agent", ["-D", "-a", sock], { stdio: "ignore" });
        try {
            for (let i = 0; i < 50 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
            // An agent without keys fails closed, with a message.
            await rejects(
                new Virsh({ host: lab.host, port: lab.port, agentSocketPath: sock, hostKey: lab.hostKey }).run(["list"]),
                "connection-failed",
                /SSH authentication failed/,
            );
            execFileSync("ssh-add", ["-q", lab.privateKeyPath], { env: { ...process.env, SSH_AUTH_SOCK: sock }, stdio: "ignore" });
            const out = await new Virsh({ host: lab.host, port: lab.port, agentSocketPath: sock, hostKey: lab.hostKey }).run([
                "list",
                "--name",
            ]);
            assert.match(out, /lab-writer/);
        } finally {
            agent.kill();
            fs.rmSync(dir, { recursive: true, force: true });
        }
    });

    it("jumps through a proxy host (the same sshd) with direct-tcpip", async () => {
        const before = handshakeCount();
        const conn: Connection = {
            ...root,
            proxy: { host: lab.host, port: lab.port, user: "root", privateKey: key, hostKey: lab.hostKey },
        };
        const out = await new Virsh(conn).run(["list", "--name"]);
        assert.match(out, /lab-writer/);
        assert.equal(handshakeCount() - before, 2, "one handshake with the jump host, one with the target");
    });

    it("refuses a host key mismatch, an unknown host and a changed known_hosts entry, showing the fingerprint", async () => {
        const presented = execFileSync("ssh-keygen", ["-lf", lab.hostKeyPath], { encoding: "utf8" }).split(" ")[1]!;
        const other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        const before = handshakeCount();
        const e = await rejects(
            new Virsh({ ...root, hostKey: other }).run(["list"]),
            "host-key",
            new RegExp(`host key verification failed for ${re(lab.host)}:\\d+`),
        );
        assert.ok(e.message.includes(presented), `shows ${presented}`);
        assert.doesNotMatch(e.message, /gave up after/, "a key mismatch is not retried");
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kh-"));
        const kh = path.join(dir, "known_hosts");
        fs.writeFileSync(kh, "");
        await rejects(
            new Virsh({ ...root, hostKey: undefined, knownHostsPath: kh }).run(["list"]),
            "host-key",
            /is not in .*known_hosts and connection\.hostKey is not set/,
        );
        fs.writeFileSync(kh, `${lab.port === 22 ? lab.host : `[${lab.host}]:${lab.port}`} ${other}\n`);
        await rejects(new Virsh({ ...root, hostKey: undefined, knownHostsPath: kh }).run(["list"]), "host-key", /host key has changed/);
        assert.equal(handshakeCount(), before, "nothing authenticated");
        // The lab's known_hosts does have the right key.
        assert.match(
            await new Virsh({ ...root, hostKey: undefined, knownHostsPath: lab.knownHostsPath }).run(["list", "--name"]),
            /lab-writer/,
        );
        // Only the explicit opt-out skips the check.
        assert.match(await new Virsh({ ...root, hostKey: other, insecureIgnoreHostKey: true }).run(["list", "--name"]), /lab-writer/);
    });

    it("passes hostile arguments intact, and no canary file appears", async () => {
        const canary = path.join(os.tmpdir(), `canary-${process.pid}`);
        const hostile = [
            "with space",
            "it's",
            `"double"`,
            `$(touch ${canary})`,
            `\`touch ${canary}\``,
            `; touch ${canary}`,
            `| touch ${canary}`,
            `&& touch ${canary}`,
            `> ${canary}`,
            "new\nline",
            "back\\slash",
            "--help",
            "-",
            "",
            "✓ \u202e rtl",
            "*",
            "$HOME",
            "'$(id)'",
        ];
        for (const conn of [root, {}] as Connection[]) {
            const r = await transportFor(conn).exec(["printf", "%s\\0", ...hostile], { timeoutMs: 10_000 });
            assert.equal(r.code, 0, r.stderr);
            assert.deepEqual(r.stdout.split("\0").slice(0, -1), hostile);
        }
        assert.equal(fs.existsSync(canary), false);
    });

    it("reuses one pooled connection for many parallel commands (channels, not handshakes)", async () => {
        const before = handshakeCount();
        const v = new Virsh(root);
        const outs = await Promise.all(Array.from({ length: 25 }, () => v.run(["domstate", "--domain", "lab-writer"])));
        assert.ok(outs.every((o) => o.trim() === "running"));
        // Another Virsh with the same settings (another resource) shares it too.
        await new Virsh({ ...root }).run(["list"]);
        assert.equal(handshakeCount() - before, 1);
    });

    const slowLinkTitle =
        "works across a slow link (the lab's delay proxy, 25 ms round trip): the same answers, each one at least a round trip later";
    it(slowLinkTitle, async () => {
        const { startDelayProxy } = require(path.join(repoRoot(), "scripts", "lab", "delay-proxy.cjs")) as {
            startDelayProxy(o: {
                targetHost: string;
                targetPort: number;
                rttMs: number;
            }): Promise<{ port: number; close(): Promise<void> }>;
        };
        const proxy = await startDelayProxy({ targetHost: lab.host, targetPort: lab.port, rttMs: 25 });
        try {
            // The pinned key is the host's own, whatever address reaches it.
            const far: Connection = { ...root, host: "127.0.0.1", port: proxy.port };
            const v = new Virsh(far);
            assert.match(await v.run(["list", "--name"]), /lab-writer/);
            const t0 = performance.now();
            assert.equal((await v.run(["domstate", "--domain", "lab-writer"])).trim(), "running");
            // A lower bound only: the proxy can't answer sooner than its delay.
            assert.ok(performance.now() - t0 >= 25, "a command over the proxy takes at least one round trip");
        } finally {
            closeAllTransports();
            await proxy.close();
        }
    });

    it("reconnects once when the pooled connection has dropped", async () => {
        const v = new Virsh(root);
        await v.run(["list"]);
        const before = handshakeCount();
        assert.ok(dropSshSessions() > 0);
        await new Promise((r) => setTimeout(r, 200));
        assert.match(await v.run(["list", "--name"]), /lab-writer/);
        assert.equal(handshakeCount() - before, 1);
    });

    it("gives up dialling after dialErrorLimit attempts, saying so", async () => {
        await rejects(
            new Virsh({ ...root, port: 1, dialErrorLimit: 2, perDialTimeout: 2 }).run(["list"]),
            "connection-failed",
            /ECONNREFUSED.*gave up after 2 attempts/,
        );
    });

    it("never hangs: a command past its timeout fails with a timeout error", async () => {
        for (const conn of [root, {}] as Connection[]) {
            const t = Date.now();
            const p = transportFor(conn).exec(["sleep", "30"], { timeoutMs: 500 });
            await rejects(p, "timeout", /timed out after \d+ s on .*the command may still be running/);
            assert.ok(Date.now() - t < 10_000);
        }
    });
});

/** A long-lived `sh`, read as the provider's shells read theirs (a channel whose output nobody reads never reports its close). */
async function shell(t: ReturnType<typeof transportFor>) {
    const p = await t.spawn(["sh"]);
    p.onStdout(() => undefined);
    p.onStderr(() => undefined);
    return p;
}

describe("SSH transport: channels (real sshd)", function () {
    this.timeout(60_000);
    afterEach(() => closeAllTransports());

    // Every long-lived process (a virsh shell, the host shell) holds a channel until it ends. Shells that were
    // started and never closed once held all 8 channels, and every later command waited for ever (issue #26).
    it("long-lived processes hold at most half the channels: with 4 running, a 5th is refused at once and commands still run", async () => {
        const t = transportFor(root);
        const shells = [];
        try {
            for (let i = 0; i < 4; i++) shells.push(await shell(t));
            await assert.rejects(t.spawn(["sh"]), (e: Error) => {
                assert.ok(!(e instanceof LibvirtError), "a plain Error, after which callers run commands as processes");
                assert.match(e.message, /4 long-lived processes already hold channels on root@/);
                return true;
            });
            assert.deepEqual(
                await Promise.all([1, 2, 3, 4, 5, 6].map((n) => t.exec(["echo", String(n)], { timeoutMs: 20_000 }))).then((rs) =>
                    rs.map((r) => r.stdout),
                ),
                ["1\n", "2\n", "3\n", "4\n", "5\n", "6\n"],
            );
            const one = shells.pop()!;
            const t0 = Date.now();
            await new Promise<void>((resolve) => {
                one.onClose(resolve);
                one.close();
            });
            console.log(`      a closed shell's channel closed after ${Date.now() - t0} ms`);
            shells.push(await shell(t)); // a closed one's place is free again
        } finally {
            for (const s of shells) s.close();
        }
    });

    it("a command waits for a free channel no longer than its own timeout, and then says it did not run", async () => {
        const t = transportFor(root);
        const shells = [];
        try {
            for (let i = 0; i < 4; i++) shells.push(await shell(t));
            const busy = [1, 2, 3, 4].map(() => t.exec(["sleep", "4"], { timeoutMs: 30_000 })); // the other 4 channels
            await rejects(
                t.exec(["echo", "never"], { timeoutMs: 1000 }),
                "timeout",
                /no SSH channel to root@.* became free within 1 s \(a connection opens at most 8\); the command did not run/,
            );
            assert.ok((await Promise.all(busy)).every((r) => r.code === 0));
            assert.equal((await t.exec(["echo", "now"], { timeoutMs: 20_000 })).stdout, "now\n", "once they ended, commands run again");
        } finally {
            for (const s of shells) s.close();
        }
    });
});

describe("virsh runner: typed errors produced for real", function () {
    this.timeout(60_000);
    let dom: TestDomain;
    before(async () => {
        dom = await makeDomain({ prefix: "labtmp-errors-" });
    });
    after(async () => {
        await dom?.dispose();
        closeAllTransports();
    });

    // Local virsh reaches only the host this machine is; a host of its own is reached over SSH.
    for (const [label, conn] of [...(lab.local ? [["local", {}]] : []), ["ssh", root]] as Array<[string, Connection]>) {
        it(`${label}: missing domain, missing snapshot, existing name; each carries the command and stderr`, async () => {
            const v = new Virsh(conn);
            const e1 = await rejects(
                v.run(["snapshot-list", "--domain", "no-such-domain"]),
                "domain-not-found",
                /failed to get domain 'no-such-domain'/,
            );
            assert.match(e1.command!, /^env LC_ALL=C virsh -c qemu:\/\/\/system snapshot-list --domain no-such-domain$/);
            assert.equal(e1.exitCode, 1);
            await rejects(
                v.run(["snapshot-info", "--domain", dom.name, "--snapshotname", "nope"]),
                "snapshot-not-found",
                /no domain snapshot with matching name 'nope'/,
            );
            await v.run(["snapshot-create-as", "--domain", dom.name, "--name", `dup-${label}`]);
            await rejects(
                v.run(["snapshot-create-as", "--domain", dom.name, "--name", `dup-${label}`]),
                "already-exists",
                new RegExp(`domain moment dup-${label} already exists`),
            );
            await virshOk(["snapshot-delete", "--domain", dom.name, "--snapshotname", `dup-${label}`]);
        });
    }

    it("reports the host's libvirt version", async () => {
        const v = await new Virsh(root).version();
        assert.equal(v.libvirt, lab.libvirtVersion);
        assert.ok(v.number >= 5_006_000);
        assert.match(v.hypervisor, /^QEMU /);
    });
});
