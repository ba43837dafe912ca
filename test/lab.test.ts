// Proves the lab that scripts/lab.sh brings up: files, sshd, users, domains, the writer guest,
// and the helpers in test/support/lab.ts that other tests build on.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawn } from "node:child_process";
import { Client, ConnectConfig } from "ssh2";
import {
    LabInfo,
    allLabHosts,
    loadLab,
    virshLocal,
    virshOk,
    domState,
    makeDomain,
    disposeAllTestDomains,
    listTestDomains,
    qemuIoWrite,
    qemuIoRead,
    qemuImgInfo,
    qemuImgCheck,
    readGuestCounter,
    waitGuestCounter,
    run,
    sshArgs,
    sleep,
    ExecResult,
} from "./support/lab";
import { findLeaks, labSecrets } from "./support/secrets-hook";

function connect(cfg: ConnectConfig): Promise<Client> {
    return new Promise((resolve, reject) => {
        const c = new Client();
        c.once("ready", () => resolve(c));
        c.once("error", reject);
        c.connect({ readyTimeout: 10_000, ...cfg });
    });
}

function exec(c: Client, command: string): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
        c.exec(command, (err, stream) => {
            if (err) return reject(err);
            let stdout = "";
            let stderr = "";
            stream.on("data", (d: Buffer) => (stdout += d.toString()));
            stream.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
            stream.on("close", (code: number | null) => resolve({ code: code ?? -1, stdout, stderr }));
        });
    });
}

/** ssh2 host key check against lab.json's hostKey ("ssh-ed25519 BASE64"). */
function hostVerifier(lab: LabInfo): (key: Buffer) => boolean {
    const blob = Buffer.from(lab.hostKey.split(" ")[1], "base64");
    return (key: Buffer) => key.equals(blob);
}

describe("lab", function () {
    let lab: LabInfo;

    before(async function () {
        lab = loadLab();
        await disposeAllTestDomains(); // leftovers of crashed earlier runs
    });

    it("lab.json has every field, and an entry per host with what a client needs", function () {
        const strings = [
            "host",
            "user",
            "privateKeyPath",
            "encryptedKeyPath",
            "keyPassphrase",
            "hostKey",
            "hostKeyPath",
            "knownHostsPath",
            "libvirtUri",
            "virtType",
            "libvirtVersion",
            "bootSectorPath",
            "labDir",
            "tmpDiskDir",
        ] as const;
        for (const k of strings) assert.equal(typeof lab[k], "string", k);
        for (const k of strings) assert.ok(lab[k].length > 0, `${k} is empty`);
        assert.equal(lab.user, "root");
        assert.ok(Number.isInteger(lab.port) && lab.port > 0, "port");
        assert.equal(lab.libvirtUri, "qemu:///system");
        assert.ok(lab.virtType === "kvm" || lab.virtType === "qemu", lab.virtType);
        assert.match(lab.libvirtVersion, /^\d+\.\d+\.\d+$/);
        assert.match(lab.qemuVersion, /^\d+\.\d+\.\d+$/);
        assert.match(lab.hostKey, /^ssh-ed25519 [A-Za-z0-9+/=]+$/);
        assert.equal(fs.readFileSync(lab.hostKeyPath, "utf8").split(" ").slice(0, 2).join(" "), lab.hostKey);
        const known = lab.port === 22 ? `${lab.host} ${lab.hostKey}` : `[${lab.host}]:${lab.port} ${lab.hostKey}`;
        assert.ok(fs.readFileSync(lab.knownHostsPath, "utf8").includes(known), known);
        for (const key of [lab.privateKeyPath, lab.encryptedKeyPath]) {
            assert.equal(fs.statSync(key).mode & 0o077, 0, `${key} must be private`);
        }
        assert.equal(fs.statSync(path.join(lab.labDir, "lab.json")).mode & 0o077, 0, "lab.json must be private");
        assert.equal(lab.sudoUser.user, "labuser");
        assert.ok(lab.sudoUser.password.length >= 16);
        const boot = fs.readFileSync(lab.bootSectorPath);
        assert.equal(boot.length, 512);
        assert.equal(boot.readUInt16LE(510), 0xaa55);
        assert.equal(lab.writerLayout.magic, "LABCOUNT");
        assert.deepEqual(
            lab.domains.map((d) => [d.name, d.state, d.format, d.writer, d.guest ?? false]),
            [
                ["lab-writer", "running", "qcow2", true, false],
                ["lab-idle", "running", "qcow2", false, false],
                ["lab-off", "shut off", "qcow2", false, false],
                ["lab-raw", "shut off", "raw", false, false],
                ["lab-guest", "running", "qcow2", false, true],
            ],
        );
        for (const d of lab.domains) assert.ok(fs.existsSync(d.disk), d.disk);

        // Two hosts: Debian 12's here, Debian 13's in its own network namespace, each its own machine to the provider.
        const hosts = allLabHosts();
        assert.deepEqual(
            hosts.map((h) => [h.name, h.local]),
            [
                ["debian12", true],
                ["debian13", false],
            ],
        );
        for (const h of hosts) {
            for (const k of [
                "name",
                "host",
                "port",
                "user",
                "privateKeyPath",
                "hostKey",
                "libvirtUri",
                "libvirtVersion",
                "qemuVersion",
                "domains",
            ] as const) {
                assert.ok(h[k] !== undefined && h[k] !== "", `${h.name}.${k}`);
            }
        }
        const [d12, d13] = hosts;
        assert.equal(d12!.host, "127.0.0.1");
        assert.notEqual(d13!.hostKey, d12!.hostKey, "each host has its own host key");
        assert.notEqual(`${d13!.host}:${d13!.port}`, `${d12!.host}:${d12!.port}`);
        assert.match(d12!.libvirtVersion, /^9\.0\./);
        assert.match(d13!.libvirtVersion, /^11\.3\./);
        assert.match(d13!.qemuVersion, /^10\.0\./);
        // The top-level fields stay the Debian 12 host's, for tools that read them.
        const top = JSON.parse(fs.readFileSync(path.join(lab.labDir, "lab.json"), "utf8")) as LabInfo;
        assert.equal(`${top.host}:${top.port}`, `${d12!.host}:${d12!.port}`);
    });

    it("the lab domains are in their wanted states, with the disks lab.json names", async function () {
        for (const d of lab.domains) {
            assert.equal(await domState(d.name), d.state, d.name);
            const blk = await virshOk(["domblklist", d.name]);
            assert.match(blk, new RegExp(`vda\\s+${d.disk.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`), `${d.name} disk`);
            const info = await qemuImgInfo(d.disk);
            assert.equal(info.format, d.format, d.name);
            assert.equal(info["virtual-size"], (d.guest ? 256 : 64) * 1024 * 1024, d.name);
            const xml = await virshOk(["dumpxml", "--inactive", d.name]);
            // The real guest always runs under TCG: this machine's nested KVM can't boot Linux.
            assert.match(xml, new RegExp(`<domain type='${d.guest ? "qemu" : lab.virtType}'`), `${d.name} virt type`);
        }
    });

    it("lab-guest runs a real Linux whose agent answers and freezes and thaws its ext4", async function () {
        const agent = async (cmd: string) =>
            JSON.parse(await virshOk(["qemu-agent-command", "lab-guest", JSON.stringify({ execute: cmd })])) as { return: unknown };
        assert.deepEqual((await agent("guest-ping")).return, {});
        const fs0 = (await agent("guest-get-fsinfo")).return as Array<{ mountpoint: string; type: string }>;
        assert.ok(
            fs0.some((f) => f.mountpoint === "/data" && f.type === "ext4"),
            JSON.stringify(fs0),
        );
        assert.equal((await agent("guest-fsfreeze-status")).return, "thawed");
        try {
            await virshOk(["domfsfreeze", "lab-guest"]);
            assert.equal((await agent("guest-fsfreeze-status")).return, "frozen");
        } finally {
            await virshOk(["domfsthaw", "lab-guest"]);
        }
        assert.equal((await agent("guest-fsfreeze-status")).return, "thawed");
    });

    it("ssh with the key runs virsh remotely (system ssh, strict host key checking)", async function () {
        const r = await run("/usr/bin/ssh", [...sshArgs(lab), "virsh -c qemu:///system list --name"]);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(r.stdout.split("\n").includes("lab-writer"), r.stdout);
        // The remote shell must not run root's .bashrc (pyenv): sshd_config sets SHLVL=1.
        const env = await run("/usr/bin/ssh", [...sshArgs(lab), 'echo "SHLVL=$SHLVL PYENV=${PYENV_ROOT:-}"']);
        assert.equal(env.stdout.trim(), "SHLVL=2 PYENV=");
    });

    it("ssh refuses a server whose host key does not match known_hosts", async function () {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "lab-kh-"));
        try {
            const wrong = path.join(dir, "known_hosts");
            // Some other valid ed25519 key: the client's own public key.
            const other = fs
                .readFileSync(lab.privateKeyPath + ".pub", "utf8")
                .split(" ")
                .slice(0, 2)
                .join(" ");
            fs.writeFileSync(wrong, `[127.0.0.1]:${lab.port} ${other}\n`);
            const args = sshArgs(lab).map((a) => (a === `UserKnownHostsFile=${lab.knownHostsPath}` ? `UserKnownHostsFile=${wrong}` : a));
            const r = await run("/usr/bin/ssh", [...args, "true"]);
            assert.notEqual(r.code, 0);
            assert.match(r.stderr, /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/);
        } finally {
            fs.rmSync(dir, { recursive: true, force: true });
        }
    });

    it("ssh2 logs in with the encrypted key and can tunnel (direct-tcpip) through the same sshd", async function () {
        const c = await connect({
            host: lab.host,
            port: lab.port,
            username: lab.user,
            privateKey: fs.readFileSync(lab.encryptedKeyPath),
            passphrase: lab.keyPassphrase,
            hostVerifier: hostVerifier(lab),
        });
        try {
            const r = await exec(c, "virsh -c qemu:///system domstate lab-writer");
            assert.equal(r.code, 0, r.stderr);
            assert.equal(r.stdout.trim(), "running");
            const banner = await new Promise<string>((resolve, reject) => {
                c.forwardOut("127.0.0.1", 0, lab.host, lab.port, (err, ch) => {
                    if (err) return reject(err);
                    ch.once("data", (d: Buffer) => {
                        resolve(d.toString());
                        ch.close();
                    });
                });
            });
            assert.match(banner, /^SSH-2\.0-OpenSSH/);
        } finally {
            c.end();
        }
    });

    it("labuser logs in by password only and reaches libvirt only through sudo -n virsh", async function () {
        await assert.rejects(
            connect({
                host: lab.host,
                port: lab.port,
                username: lab.sudoUser.user,
                privateKey: fs.readFileSync(lab.privateKeyPath),
                hostVerifier: hostVerifier(lab),
            }),
            /authentication methods failed/,
        );
        await assert.rejects(
            connect({
                host: lab.host,
                port: lab.port,
                username: lab.sudoUser.user,
                password: "wrong-" + lab.sudoUser.password,
                hostVerifier: hostVerifier(lab),
            }),
            /authentication methods failed/,
        );
        const c = await connect({
            host: lab.host,
            port: lab.port,
            username: lab.sudoUser.user,
            password: lab.sudoUser.password,
            hostVerifier: hostVerifier(lab),
        });
        try {
            assert.equal((await exec(c, "id -un")).stdout.trim(), "labuser");
            const direct = await exec(c, "virsh -c qemu:///system list --name");
            assert.notEqual(direct.code, 0, "virsh without sudo must fail");
            const sudo = await exec(c, "sudo -n virsh -c qemu:///system list --name");
            assert.equal(sudo.code, 0, sudo.stderr);
            assert.ok(sudo.stdout.split("\n").includes("lab-writer"), sudo.stdout);
            const other = await exec(c, "sudo -n true");
            assert.notEqual(other.code, 0, "sudo must allow only virsh");
        } finally {
            c.end();
        }
    });

    it("lab-writer's counter grows over ~1.5 s", async function () {
        const writer = lab.domains.find((d) => d.writer)!;
        const before = await readGuestCounter(writer.disk);
        await sleep(1500);
        const after = await readGuestCounter(writer.disk);
        assert.ok(before > 0, `counter ${before}`);
        // One write per ~0.5 s; allow for scheduling jitter.
        assert.ok(after >= before + 2, `counter went from ${before} to ${after}`);
    });

    it("makeDomain + dispose leaves nothing behind, snapshots and overlays included", async function () {
        const d = await makeDomain({ running: true, writer: true });
        let disposed = false;
        try {
            assert.match(d.name, /^labtmp-[0-9a-f]{8}$/);
            assert.match(d.uuid, /^[0-9a-f-]{36}$/);
            assert.equal(await domState(d.name), "running");
            assert.ok((await listTestDomains()).some((t) => t.name === d.name));
            assert.ok((await waitGuestCounter(d.disk, 0)) > 0, "the throwaway writer writes");
            await virshOk(["snapshot-create-as", d.name, "internal-1"]);
            const overlay = path.join(d.dir, "overlay.qcow2");
            await virshOk([
                "snapshot-create-as",
                d.name,
                "ext-1",
                "--disk-only",
                "--atomic",
                "--diskspec",
                `vda,snapshot=external,file=${overlay}`,
            ]);
            assert.ok(fs.existsSync(overlay));
            await d.dispose();
            disposed = true;
            assert.equal(await domState(d.name), undefined);
            assert.equal(fs.existsSync(d.dir), false);
            assert.equal(fs.existsSync(`/var/lib/libvirt/qemu/snapshot/${d.name}`), false);
            const all = await virshOk(["list", "--all", "--name"]);
            assert.ok(!all.split("\n").includes(d.name));
        } finally {
            if (!disposed) await d.dispose();
        }
    });

    it("qemuIoWrite / qemuIoRead / qemuImgInfo / qemuImgCheck work on offline qcow2 and raw disks", async function () {
        for (const format of ["qcow2", "raw"] as const) {
            const d = await makeDomain({ format, sizeMB: 16 });
            try {
                assert.equal(await domState(d.name), "shut off");
                await qemuIoWrite(d.disk, 0xaa, 0, 1 << 20);
                assert.equal(await qemuIoRead(d.disk, 0xaa, 0, 1 << 20), true);
                assert.equal(await qemuIoRead(d.disk, 0x55, 0, 1 << 20), false);
                assert.equal(await qemuIoRead(d.disk, 0x00, 1 << 20, 4096), true);
                const info = await qemuImgInfo(d.disk);
                assert.equal(info.format, format);
                assert.equal(info["virtual-size"], 16 << 20);
                const chain = await qemuImgInfo(d.disk, { backingChain: true });
                assert.equal(chain.length, 1);
                if (format === "qcow2") {
                    const check = await qemuImgCheck(d.disk);
                    assert.equal(check.ok, true, check.stderr);
                }
            } finally {
                await d.dispose();
            }
        }
    });

    it("disposeAllTestDomains removes what a crashed process left, and keeps a live process's domains", async function () {
        const prefix = "labtmp-owner-";
        const support = JSON.stringify(path.join(__dirname, "support", "lab.js"));
        const make = `require(${support}).makeDomain({ prefix: ${JSON.stringify(prefix)} })`;
        // A child that makes a domain and exits without disposing it, like a crashed run.
        const crashed = await run(process.execPath, ["-e", `${make}.then((d) => { console.log(d.name); process.exit(0); })`]);
        assert.equal(crashed.code, 0, crashed.stderr);
        const leftover = crashed.stdout.trim();
        // A child that keeps its domain until its stdin closes, like a concurrent test run.
        const liveChild = spawn(
            process.execPath,
            [
                "-e",
                `${make}.then((d) => { console.log(d.name); process.stdin.resume(); process.stdin.on("end", () => d.dispose().then(() => process.exit(0))); })`,
            ],
            { stdio: ["pipe", "pipe", "inherit"] },
        );
        const liveExit = new Promise<number | null>((resolve) => liveChild.on("exit", resolve));
        try {
            const live = await new Promise<string>((resolve, reject) => {
                liveChild.stdout.once("data", (b: Buffer) => resolve(b.toString().trim()));
                liveChild.once("exit", (code) => reject(new Error(`live child exited early (${code})`)));
            });
            assert.ok(leftover.startsWith(prefix) && live.startsWith(prefix), `${leftover} ${live}`);
            assert.equal(await domState(leftover), "shut off");
            const removed = await disposeAllTestDomains({ prefix });
            assert.deepEqual(removed, [leftover]);
            assert.equal(await domState(leftover), undefined);
            assert.equal(fs.existsSync(path.join(lab.tmpDiskDir, leftover)), false);
            assert.equal(await domState(live), "shut off", "a live owner's domain stays");
            assert.ok(fs.existsSync(path.join(lab.tmpDiskDir, live)));
            liveChild.stdin.end();
            assert.equal(await liveExit, 0);
            assert.equal(await domState(live), undefined);
        } finally {
            liveChild.kill("SIGKILL");
            await disposeAllTestDomains({ prefix });
        }
    });

    it("virshLocal reports failures with virsh's error text", async function () {
        const r = await virshLocal(["domstate", "no-such-domain-xyz"]);
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /failed to get domain 'no-such-domain-xyz'/);
        await assert.rejects(virshOk(["domstate", "no-such-domain-xyz"]), /failed to get domain/);
    });

    it("the secrets check knows the lab's key, its lines, the passphrase and the password", function () {
        const lab = loadLab();
        const secrets = labSecrets();
        const key = fs.readFileSync(lab.privateKeyPath, "utf8");
        assert.ok(secrets.length >= 4, `secrets known: ${secrets.map(([w]) => w).join(", ")}`);
        assert.deepEqual(findLeaks(`error: ... ${key.split("\n")[1]} ...`), ["line 1 of the lab's private key"]);
        assert.deepEqual(findLeaks(`pass=${lab.sudoUser.password}`), ["labuser's password"]);
        assert.deepEqual(findLeaks("nothing to see"), []);
    });
});
